"""Where the inference log is kept: one row per answered inference, in SQLite or PostgreSQL.

A SQLite file (WAL, several server processes may write it) is the embedded store; a PostgreSQL
database is the shared one. Both hold the same two tables, created when missing:
`inference_log` and `inference_feedback`. Tensors are stored as JSON text (PostgreSQL type JSON,
which COPY writes about 1.4x faster than JSONB; cast to JSONB to query them).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import orjson
import psycopg
from psycopg.types.json import set_json_loads

from modelport.errors import InvalidInput, NotReady

Arrays = dict[str, np.ndarray[Any, Any] | None]
Row = dict[str, Any]
_Held = tuple[sqlite3.Connection, tuple[int, int] | None]

COLUMNS: Final = (
    "request_id", "at", "model", "version", "digest", "protocol", "caller",
    "inputs", "outputs", "latency_ms", "status", "error",
)  # fmt: skip
"""The keys of an encoded row, in the order of the table's columns."""
REDACTED: Final = "[redacted]"
"""What a redacted tensor is stored as."""
POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
DEFAULT_BUSY_TIMEOUT: Final = 2.0
"""Seconds a SQLite writer waits for another process's write to finish before failing."""

_CONNECT_TIMEOUT_S: Final = 2
# Advisory lock that serialises table creation by concurrent server processes ("mp-ilog").
_SCHEMA_LOCK: Final = int.from_bytes(b"mp-ilog")
_DSN: Final = re.compile(r"\s*(host|dbname|user|port|password|service)\s*=")
_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY
# The statements are built from the constant column names and placeholders, never from values.
_NAMES: Final = ", ".join(COLUMNS)
_MARKS: Final = ", ".join("?" * len(COLUMNS))
_INSERT: Final = f"INSERT INTO inference_log ({_NAMES}) VALUES ({_MARKS})"  # noqa: S608
_COPY: Final = f"COPY inference_log ({_NAMES}) FROM STDIN"
_SELECT: Final = f"SELECT id, {_NAMES} FROM inference_log"  # noqa: S608
_PAIRS: Final = (
    "SELECT f.request_id, l.version, l.outputs, f.label FROM inference_feedback f "
    "JOIN inference_log l ON l.request_id = f.request_id AND l.model = f.model "
    "WHERE f.model = {p} AND l.outputs IS NOT NULL ORDER BY f.id, l.id"
)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS inference_log (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
    version INTEGER, digest TEXT NOT NULL, protocol TEXT NOT NULL, caller TEXT NOT NULL,
    inputs {json}, outputs {json}, latency_ms DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_log_model_at ON inference_log (model, at);
CREATE INDEX IF NOT EXISTS ix_inference_log_request_id ON inference_log (request_id);
CREATE TABLE IF NOT EXISTS inference_feedback (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, model TEXT NOT NULL, label {json} NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_feedback_model ON inference_feedback (model, request_id);
"""


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

    @abstractmethod
    def read(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[StoredRecord]:
        """Rows with id > after_id (of `model`, at >= since), in id order, at most `limit`."""

    @abstractmethod
    def count(self, model: str | None = None) -> int:
        """How many rows there are (of `model`)."""

    @abstractmethod
    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        """Store (request id, label) pairs for `model`, dated now; labels are JSON-able."""

    @abstractmethod
    def feedback_pairs(self, model: str) -> list[tuple[str, int | None, dict[str, Any], Any]]:
        """(request id, version, outputs, label) for every feedback of `model` whose request is
        logged with outputs, in the order the feedback arrived."""

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
        "request_id": _text(record.request_id),
        "at": float(record.at),
        "model": _text(record.model),
        "version": None if record.version is None else int(record.version),
        "digest": _text(record.digest),
        "protocol": _text(record.protocol),
        "caller": _text(record.caller),
        "inputs": _tensors(record.inputs),
        "outputs": _tensors(record.outputs),
        "latency_ms": float(record.latency_ms),
        "status": _text(record.status),
        "error": _text(record.error),
    }


def open_store(
    target: str, *, lazy: bool = False, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> LogStore:
    """The store at `target`: a postgresql:// URL, else the path of a SQLite file (created).

    The tables are created when missing. Raises NotReady when the store cannot be opened,
    unless `lazy`, which defers connecting (and any error) to the first call.
    """
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


class SQLiteStore(LogStore):
    """The log in a SQLite file (WAL), one connection per thread.

    Moving the file of a WAL database while it is open strands its last transactions in the
    -wal file beside the old name, and a new database created there would discard them. So when
    the path stops naming the file a connection opened, calls fail (NotReady) until it names a
    database again; a new file is created only where no -wal file is left (e.g. after the file
    was removed together with its -wal and -shm files).
    """

    def __init__(self, path: Path, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self._path = path
        self._timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[sqlite3.Connection] = set()
        self._closed = False
        self._created = False

    def connect(self) -> SQLiteStore:
        """Open this thread's connection now (creating the file and tables); raise NotReady."""
        self._run(lambda conn: None)
        return self

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            values = [tuple(row[c] for c in COLUMNS) for row in rows]
            self._run(lambda conn: _transaction(conn, _INSERT, values))

    def read(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[StoredRecord]:
        sql, params = _query(model, since, after_id, limit, "?")
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_stored(row, _loads) for row in rows]

    def count(self, model: str | None = None) -> int:
        sql, params = _count(model, "?")
        return int(self._run(lambda conn: conn.execute(sql, params).fetchone())[0])

    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        now = time.time()
        values = [(_text(rid), _text(model), _json(label), now) for rid, label in items]
        insert = "INSERT INTO inference_feedback (request_id, model, label, at) VALUES (?,?,?,?)"
        self._run(lambda conn: _transaction(conn, insert, values))

    def feedback_pairs(self, model: str) -> list[tuple[str, int | None, dict[str, Any], Any]]:
        sql = _PAIRS.format(p="?")
        rows = self._run(lambda conn: conn.execute(sql, (model,)).fetchall())
        return [
            (rid, version, _loads(outputs), _loads(label)) for rid, version, outputs, label in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._open = self._open, set()
        for conn in connections:
            conn.close()

    def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work` on this thread's connection; a failure drops it (the next call reopens)."""
        try:
            conn = self._connection()
            return work(conn)
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise RowsRejected(str(exc)) from exc
        except (sqlite3.Error, OSError) as exc:
            self._drop()
            raise NotReady(
                f"the inference log {self._path} is unavailable ({exc}); check that the file "
                "and its directory exist and are writable (a log file moved away without its "
                "-wal file is not replaced: move it back)"
            ) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("the inference log store is closed")
        held = cast(_Held | None, getattr(self._local, "held", None))
        if held is not None:
            if held[1] == _identity(self._path):
                return held[0]
            # The file was moved, removed or replaced: use what the path names now, if anything.
            self._drop()
        wal = self._path.with_name(self._path.name + "-wal")
        if not self._created:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            where, uri = str(self._path), False
        elif self._path.exists() or wal.exists():
            where, uri = f"file:{quote(str(self._path))}?mode=rw", True
        else:
            where, uri = str(self._path), False
        conn = sqlite3.connect(
            where, timeout=self._timeout, isolation_level=None, check_same_thread=False, uri=uri
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # Only create when missing: CREATE ... IF NOT EXISTS would wait for the write lock.
            found = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                "name IN ('inference_log', 'inference_feedback')"
            ).fetchone()[0]
            if found < 2:
                conn.executescript(
                    _SCHEMA.format(serial="INTEGER", autoincrement=" AUTOINCREMENT", json="TEXT")
                )
            identity = _identity(self._path)
            if identity is None:
                raise sqlite3.OperationalError("the database file vanished while opening it")
        except BaseException:
            conn.close()
            raise
        with self._lock:
            self._open.add(conn)
        self._created = True
        self._local.held = (conn, identity)
        return conn

    def _drop(self) -> None:
        held = cast(_Held | None, getattr(self._local, "held", None))
        self._local.held = None
        if held is not None:
            with self._lock:
                self._open.discard(held[0])
            # Closing a connection whose file went away may fail; it is gone either way.
            with contextlib.suppress(sqlite3.Error):
                held[0].close()


class PostgresStore(LogStore):
    """The log in a PostgreSQL database: one connection, rows appended with COPY; a failed call
    drops the connection and the next one reconnects."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        self._url = f"postgresql://{rest}" if scheme.lower() == "postgresql+psycopg" else url
        self._display = display_target(url)
        self._conn: psycopg.Connection[Any] | None = None
        # One connection serves one call at a time, whichever thread makes it.
        self._lock = threading.RLock()
        self._closed = False

    def connect(self) -> PostgresStore:
        """Connect now (creating the tables); raise NotReady when the database is unreachable."""
        self._run(lambda conn: None)
        return self

    def write(self, rows: Sequence[Row]) -> None:
        if rows:
            self._run(lambda conn: self._copy(conn, rows))

    def read(
        self,
        *,
        model: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[StoredRecord]:
        sql, params = _query(model, since, after_id, limit, "%s")
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_stored(row, _same) for row in rows]

    def count(self, model: str | None = None) -> int:
        sql, params = _count(model, "%s")
        return int(self._run(lambda conn: conn.execute(sql, params).fetchone())[0])

    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        now = time.time()
        values = [(_text(rid), _text(model), _json(label), now) for rid, label in items]

        def insert(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO inference_feedback (request_id, model, label, at) "
                    "VALUES (%s, %s, %s::json, %s)",
                    values,
                )

        self._run(insert)

    def feedback_pairs(self, model: str) -> list[tuple[str, int | None, dict[str, Any], Any]]:
        sql = _PAIRS.format(p="%s")
        rows = self._run(lambda conn: conn.execute(sql, (model,)).fetchall())
        return [(rid, version, outputs, label) for rid, version, outputs, label in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    @staticmethod
    def _copy(conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row([row[c] for c in COLUMNS])

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._lock:
            try:
                return work(self._connection())
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                if isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or state[:2] == "54":
                    raise RowsRejected(str(exc)) from exc
                self._drop()
                raise NotReady(
                    f"the inference log database {self._display} is unavailable "
                    f"({str(exc).strip()}); check that it is running and reachable"
                ) from exc

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise psycopg.InterfaceError("the inference log store is closed")
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        conn = psycopg.connect(
            self._url,
            connect_timeout=_CONNECT_TIMEOUT_S,
            autocommit=True,
            # Notice a peer that vanished without closing, instead of waiting on it forever.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            # A statement that hangs (a locked table) fails, so its rows go to the journal.
            conn.execute("SET statement_timeout = '10s'")
            set_json_loads(orjson.loads, conn)
            found = conn.execute(
                "SELECT to_regclass('inference_log') IS NOT NULL "
                "AND to_regclass('inference_feedback') IS NOT NULL"
            ).fetchone()
            if not (found and found[0]):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(
                        _SCHEMA.format(serial="BIGSERIAL", autoincrement="", json="JSON").encode()
                    )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _query(
    model: str | None, since: float | None, after_id: int, limit: int | None, mark: str
) -> tuple[str, list[Any]]:
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


def _count(model: str | None, mark: str) -> tuple[str, list[Any]]:
    if model is None:
        return "SELECT count(*) FROM inference_log", []
    return f"SELECT count(*) FROM inference_log WHERE model = {mark}", [model]  # noqa: S608


def _transaction(conn: sqlite3.Connection, sql: str, values: list[tuple[Any, ...]]) -> None:
    # IMMEDIATE takes the write lock at BEGIN, so waiting for another writer obeys busy_timeout.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql, values)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _stored(row: Sequence[Any], decode: Callable[[Any], Any]) -> StoredRecord:
    (id_, request_id, at, model, version, digest, protocol, caller, inputs, outputs,
     latency_ms, status, error) = row  # fmt: skip
    return StoredRecord(
        id_, request_id, at, model, version, digest, protocol, caller,
        decode(inputs), decode(outputs), latency_ms, status, error,
    )  # fmt: skip


def _loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


def _same(value: Any) -> Any:
    return value


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _text(value: str) -> str:
    # PostgreSQL refuses NUL in text (and \u0000 in JSONB casts); UTF-8 has no lone surrogates.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS).decode()


def _tensors(arrays: Arrays | None) -> str | None:
    if arrays is None:
        return None
    return _json({_text(name): REDACTED if a is None else a for name, a in arrays.items()})


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: text tensors, non-contiguous arrays, bytes, scalars."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return _text_tensor(value)
        if not value.flags.c_contiguous:
            return np.ascontiguousarray(value)
        return value.tolist()
    if isinstance(value, bytes | bytearray | memoryview):
        return _text(bytes(value).decode("utf-8", "replace"))
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
        return _text(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return _text(value)
    return value
