"""What a store of the inference log does, and the tables and queries every store shares.

A SQLite file (`inference_log.sqlite`: WAL, several server processes may write it) is the embedded
store; a PostgreSQL database (`inference_log.postgres`) is the shared one. Both hold the same two
tables, created when missing: `inference_log` and `inference_feedback`. Tensors are stored as JSON
text (PostgreSQL type JSON, which COPY writes about 1.4x faster than JSONB; cast to JSONB to query
them). The stores build on this module; `inference_log.location` picks one for a location.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final

from modelport.inference_log.record import COLUMN_KINDS, COLUMNS, Row, StoredRecord

DEFAULT_BUSY_TIMEOUT: Final = 2.0
"""Seconds a SQLite writer waits for another process's write to finish before failing."""
# Columns per line of the table's statement as it was first written: SQLite keeps the text of
# CREATE TABLE in its schema, so a new file stays byte-for-byte like those already in use.
_DDL_LINES: Final = (3, 4, 3, 2)


def _table_columns() -> str:
    definitions = [f"{name} {kind.sql}" for name, kind in COLUMN_KINDS]
    # A column added to the record must be placed on a line here too, never silently dropped.
    if sum(_DDL_LINES) != len(definitions):
        raise AssertionError("_DDL_LINES must place every inference-log column on a line")
    lines, start = [], 0
    for count in _DDL_LINES:
        lines.append("    " + ", ".join(definitions[start : start + count]))
        start += count
    return ",\n".join(lines)


SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS inference_log (
    id {{serial}} PRIMARY KEY{{autoincrement}},
{_table_columns()}
);
CREATE INDEX IF NOT EXISTS ix_inference_log_request_id ON inference_log (request_id);
CREATE TABLE IF NOT EXISTS inference_feedback (
    id {{serial}} PRIMARY KEY{{autoincrement}},
    request_id TEXT NOT NULL, model TEXT NOT NULL, label {{json}} NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_feedback_model ON inference_feedback (model, request_id);
"""
"""Both tables and their indexes; a store fills in {serial}, {autoincrement} and {json}.

Only request ids are indexed (feedback looks predictions up by them): each index costs every
write, and reads by model and time (export, tail, replay) run offline, in id order. SQLite
gets no AUTOINCREMENT: rows are never deleted, so plain rowids already only grow.
"""


# The statements are built from the constant column names and placeholders, never from values.
_SELECT: Final = f"SELECT id, {', '.join(COLUMNS)} FROM inference_log"  # noqa: S608
_PAIRS: Final = (
    "SELECT f.request_id, l.version, l.outputs, f.label FROM inference_feedback f "
    "JOIN inference_log l ON l.request_id = f.request_id AND l.model = f.model "
    "WHERE f.model = {p} AND l.outputs IS NOT NULL ORDER BY f.id, l.id"
)


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
        request_id, at, model, version, digest, protocol, caller,
        decode(inputs), decode(outputs), latency_ms, status, error, id=id_,
    )  # fmt: skip
