"""The inference log in a SQLite file: the embedded store, which several processes may write."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import quote

import orjson

from modelport.errors import NotReady
from modelport.inference_log.record import COLUMNS, Row, clean_text, row_values, to_json
from modelport.inference_log.store import DEFAULT_BUSY_TIMEOUT, SCHEMA, LogStore, RowsRejected

_Held = tuple[sqlite3.Connection, tuple[int, int] | None]
# The statement is built from the constant column names and placeholders, never from values.
_MARKS: Final = ", ".join("?" * len(COLUMNS))
_ROWS_PER_INSERT: Final = 999 // len(COLUMNS)
"""Rows one INSERT statement writes: a statement of many rows costs a quarter less a row than
one of each (and lets go of the GIL once, not for each row); SQLite before 3.32 takes at most
999 parameters in a statement."""


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
            values = list(map(row_values, rows))
            self._run(lambda conn: _insert(conn, values))

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def decode(self, value: Any) -> Any:
        return _loads(value)

    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        now = time.time()
        values = [(clean_text(rid), clean_text(model), to_json(label), now) for rid, label in items]
        insert = "INSERT INTO inference_feedback (request_id, model, label, at) VALUES (?,?,?,?)"
        self._run(lambda conn: _transaction(conn, insert, values))

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
                conn.executescript(SCHEMA.format(serial="INTEGER", autoincrement="", json="TEXT"))
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


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction; IMMEDIATE takes the write lock at BEGIN, so waiting for another
    writer obeys busy_timeout."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _transaction(conn: sqlite3.Connection, sql: str, values: list[tuple[Any, ...]]) -> None:
    with _immediate(conn):
        conn.executemany(sql, values)


def _insert(conn: sqlite3.Connection, values: list[tuple[Any, ...]]) -> None:
    """`values` as inference-log rows, up to _ROWS_PER_INSERT in each statement."""
    with _immediate(conn):
        for start in range(0, len(values), _ROWS_PER_INSERT):
            part = values[start : start + _ROWS_PER_INSERT]
            conn.execute(_insert_rows(len(part)), list(itertools.chain.from_iterable(part)))


@functools.lru_cache(maxsize=8)
def _insert_rows(count: int) -> str:
    marks = ", ".join([f"({_MARKS})"] * count)
    return f"INSERT INTO inference_log ({', '.join(COLUMNS)}) VALUES {marks}"  # noqa: S608


def _loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)
