"""The inference log's records, and what a store of them does: one row per answered inference.

A SQLite file (`log_sqlite`: WAL, several server processes may write it) is the embedded store; a
PostgreSQL database (`log_postgres`) is the shared one. Both hold the same two tables, created when
missing: `inference_log` and `inference_feedback`. Tensors are stored as JSON text (PostgreSQL type
JSON, which COPY writes about 1.4x faster than JSONB; cast to JSONB to query them). This module
holds the records and their encoding, the tables and queries both stores share, the `LogStore`
contract, and `open_store`, which picks the store for a location.
"""

from __future__ import annotations

import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson

from modelport.errors import InvalidInput

Arrays = dict[str, np.ndarray[Any, Any] | None]
Row = dict[str, Any]

COLUMNS: Final = (
    "request_id", "at", "model", "version", "digest", "protocol", "caller",
    "inputs", "outputs", "latency_ms", "status", "error",
)  # fmt: skip
"""The keys of an encoded row, in the order of the table's columns."""
row_values: Final = operator.itemgetter(*COLUMNS)
"""An encoded row's values in column order, as a tuple (in C: this runs once per record)."""
REDACTED: Final = "[redacted]"
"""What a redacted tensor is stored as."""
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
DEFAULT_BUSY_TIMEOUT: Final = 2.0
"""Seconds a SQLite writer waits for another process's write to finish before failing."""
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS inference_log (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
    version INTEGER, digest TEXT NOT NULL, protocol TEXT NOT NULL, caller TEXT NOT NULL,
    inputs {json}, outputs {json}, latency_ms DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_log_request_id ON inference_log (request_id);
CREATE TABLE IF NOT EXISTS inference_feedback (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, model TEXT NOT NULL, label {json} NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_feedback_model ON inference_feedback (model, request_id);
"""
"""Both tables and their indexes; a store fills in {serial}, {autoincrement} and {json}.

Only request ids are indexed (feedback looks predictions up by them): each index costs every
write, and reads by model and time (export, tail, replay) run offline, in id order. SQLite
gets no AUTOINCREMENT: rows are never deleted, so plain rowids already only grow.
"""

_DSN: Final = re.compile(r"\s*(host|dbname|user|port|password|service)\s*=")
_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
# The statements are built from the constant column names and placeholders, never from values.
_SELECT: Final = f"SELECT id, {', '.join(COLUMNS)} FROM inference_log"  # noqa: S608
_PAIRS: Final = (
    "SELECT f.request_id, l.version, l.outputs, f.label FROM inference_feedback f "
    "JOIN inference_log l ON l.request_id = f.request_id AND l.model = f.model "
    "WHERE f.model = {p} AND l.outputs IS NOT NULL ORDER BY f.id, l.id"
)


@dataclass(slots=True)
class LogRecord:
    """One answered inference as the server hands it to the log (arrays stay numpy)."""

    request_id: str
    at: float
    """Arrival, as Unix time."""
    model: str
    version: int | None
    digest: str
    protocol: str
    caller: str
    inputs: Arrays | None
    """Already redacted: a redacted tensor's name maps to None."""
    outputs: Arrays | None
    latency_ms: float
    status: str
    """The transport's code, e.g. "200", "400", "OK", "INVALID_ARGUMENT"."""
    error: str
    """"" when the inference succeeded."""


@dataclass(slots=True)
class StoredRecord:
    """One row of the inference log as read back: tensors decoded from JSON to nested lists."""

    id: int
    """Store order: increases with every row written."""
    request_id: str
    at: float
    model: str
    version: int | None
    digest: str
    protocol: str
    caller: str
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    latency_ms: float
    status: str
    error: str


class RowsRejected(Exception):
    """The store is reachable but refuses these rows (a data or constraint error): retrying
    them cannot help, unlike every other failure of `LogStore.write`."""


class LogStore(ABC):
    """The inference log's tables in one database; usable from any thread."""

    @abstractmethod
    def write(self, rows: Sequence[Row]) -> None:
        """Append `encode_record` rows in one transaction; raise on failure (RowsRejected when
        retrying cannot help), and then nothing was written."""

    mark: str = "?"
    """How the store's SQL marks a parameter."""

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows `sql` returns (on the store's connection, with its error handling)."""

    @abstractmethod
    def decode(self, value: Any) -> Any:
        """A JSON column's value as Python (text to parse, or already parsed by the driver)."""

    def read(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[StoredRecord]:
        """Rows with id > after_id (of `model`, at >= since), in id order, at most `limit`."""
        sql, params = read_query(model, since, after_id, limit, self.mark)
        return [to_stored(row, self.decode) for row in self.fetch(sql, params)]

    def count(self, model: str | None = None) -> int:
        """How many rows there are (of `model`)."""
        sql, params = count_query(model, self.mark)
        return int(self.fetch(sql, params)[0][0])

    def feedback_pairs(self, model: str) -> list[tuple[str, int | None, dict[str, Any], Any]]:
        """(request id, version, outputs, label) for every feedback of `model` whose request is
        logged with outputs, in the order the feedback arrived."""
        rows = self.fetch(pairs_query(self.mark), (model,))
        return [
            (rid, version, self.decode(out), self.decode(label))
            for rid, version, out, label in rows
        ]

    @abstractmethod
    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        """Store (request id, label) pairs for `model`, dated now; labels are JSON-able."""

    @abstractmethod
    def close(self) -> None:
        """Close the connections; the store is unusable afterwards."""

    def __enter__(self) -> LogStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def encode_record(record: LogRecord) -> Row:
    """The record as a row of plain values, its tensors as JSON text; ready for a store or the
    journal. Text is made storable everywhere: NUL and unpaired surrogates are replaced."""
    return {
        "request_id": clean_text(record.request_id),
        "at": float(record.at),
        "model": clean_text(record.model),
        "version": None if record.version is None else int(record.version),
        "digest": clean_text(record.digest),
        "protocol": clean_text(record.protocol),
        "caller": clean_text(record.caller),
        "inputs": _tensors(record.inputs),
        "outputs": _tensors(record.outputs),
        "latency_ms": float(record.latency_ms),
        "status": clean_text(record.status),
        "error": clean_text(record.error),
    }


def open_store(
    target: str, *, lazy: bool = False, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> LogStore:
    """The store at `target`: a postgresql:// URL, else the path of a SQLite file (created).

    The tables are created when missing. Raises NotReady when the store cannot be opened,
    unless `lazy`, which defers connecting (and any error) to the first call.
    """
    # Imported here: the stores build on this module, and psycopg loads only when it is used.
    from modelport.observability.log_postgres import PostgresStore
    from modelport.observability.log_sqlite import SQLiteStore

    scheme = urlsplit(target).scheme.lower() if "://" in target else ""
    if scheme in POSTGRES_SCHEMES:
        pg = PostgresStore(target)
        return pg if lazy else pg.connect()
    if scheme:
        raise InvalidInput(
            f"the inference log location {display_target(target)!r} has an unknown scheme; "
            "give a SQLite file path or a postgresql:// URL"
        )
    if _DSN.match(target):
        # A libpq "key=value" string would otherwise become a SQLite file of that name.
        raise InvalidInput(
            "the inference log location looks like a PostgreSQL key=value string; give it as a "
            "postgresql://USER@HOST:PORT/DATABASE URL, or a SQLite file path"
        )
    lite = SQLiteStore(Path(target).expanduser().absolute(), busy_timeout=busy_timeout)
    return lite if lazy else lite.connect()


def display_target(target: str) -> str:
    """`target` as it is safe to print: a URL without password or query, a path as given."""
    if "://" not in target:
        return target
    parts = urlsplit(target)
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{parts.scheme}://***"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def read_query(
    model: str | None, since: float | None, after_id: int, limit: int | None, mark: str
) -> tuple[str, list[Any]]:
    """The SELECT behind `LogStore.read` and its parameters, with `mark` as the placeholder."""
    where, params = [f"id > {mark}"], list[Any]([after_id])
    if model is not None:
        where.append(f"model = {mark}")
        params.append(model)
    if since is not None:
        where.append(f"at >= {mark}")
        params.append(since)
    sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id"
    if limit is not None:
        sql += f" LIMIT {mark}"
        params.append(max(limit, 0))
    return sql, params


def count_query(model: str | None, mark: str) -> tuple[str, list[Any]]:
    """The SELECT behind `LogStore.count` and its parameters, with `mark` as the placeholder."""
    if model is None:
        return "SELECT count(*) FROM inference_log", []
    return f"SELECT count(*) FROM inference_log WHERE model = {mark}", [model]  # noqa: S608


def pairs_query(mark: str) -> str:
    """The SELECT behind `LogStore.feedback_pairs`, with `mark` as the model's placeholder."""
    return _PAIRS.format(p=mark)


def to_stored(row: Sequence[Any], decode: Callable[[Any], Any]) -> StoredRecord:
    """A row of `read_query` as a record, its tensor columns passed through `decode`."""
    (id_, request_id, at, model, version, digest, protocol, caller, inputs, outputs,
     latency_ms, status, error) = row  # fmt: skip
    return StoredRecord(
        id_, request_id, at, model, version, digest, protocol, caller,
        decode(inputs), decode(outputs), latency_ms, status, error,
    )  # fmt: skip


def clean_text(value: str) -> str:
    """`value` storable everywhere: NUL and unpaired surrogates replaced."""
    # PostgreSQL refuses NUL in text (and \u0000 in JSONB casts); UTF-8 has no lone surrogates.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def to_json(value: Any) -> str:
    """`value` as JSON text; numpy arrays and scalars, bytes and text tensors included."""
    return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS).decode()


def _tensors(arrays: Arrays | None) -> str | None:
    if arrays is None:
        return None
    if all(name.isascii() and "\x00" not in name and a is not None for name, a in arrays.items()):
        # The usual case, as is: half the cost of copying the mapping first.
        return to_json(arrays)
    return to_json({clean_text(name): REDACTED if a is None else a for name, a in arrays.items()})


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: text tensors, non-contiguous arrays, bytes, scalars."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return _text_tensor(value)
        if not value.flags.c_contiguous:
            return np.ascontiguousarray(value)
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        return clean_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record a value of type {type(value).__name__}")


def _text_tensor(array: np.ndarray[Any, Any]) -> Any:
    """A BYTES (object, S or U) tensor as nested lists of clean UTF-8 strings."""
    if array.size == 0:
        return array.tolist()
    flat: list[Any] = [_element(v) for v in array.reshape(-1).tolist()]
    if array.ndim == 0:
        return flat[0]
    for size in reversed(array.shape[1:]):
        flat = [flat[i : i + size] for i in range(0, len(flat), size)]
    return flat


def _element(value: Any) -> Any:
    if isinstance(value, bytes):
        return clean_text(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return clean_text(value)
    return value
