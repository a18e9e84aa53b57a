"""The inference log in a PostgreSQL database: the store several servers share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from modelport.errors import NotReady
from modelport.inference_log.record import COLUMNS, Row, clean_text, row_values, to_json
from modelport.inference_log.store import SCHEMA, LogStore, RowsRejected
from modelport.registry.database import POSTGRES_DRIVER, display_location

_CONNECT_TIMEOUT_S: Final = 2
# Advisory lock that serialises table creation by concurrent server processes ("mp-ilog").
_SCHEMA_LOCK: Final = int.from_bytes(b"mp-ilog")
_COPY: Final = f"COPY inference_log ({', '.join(COLUMNS)}) FROM STDIN"


class PostgresStore(LogStore):
    """The log in a PostgreSQL database: one connection, rows appended with COPY; a failed call
    drops the connection and the next one reconnects."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        self._url = f"postgresql://{rest}" if scheme.lower() == POSTGRES_DRIVER else url
        self._display = display_location(url)
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

    mark = "%s"

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    def decode(self, value: Any) -> Any:
        return value  # psycopg parses JSON columns itself (with orjson)

    def add_feedback(self, model: str, items: Sequence[tuple[str, Any]]) -> None:
        now = time.time()
        values = [(clean_text(rid), clean_text(model), to_json(label), now) for rid, label in items]

        def insert(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO inference_feedback (request_id, model, label, at) "
                    "VALUES (%s, %s, %s::json, %s)",
                    values,
                )

        self._run(insert)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    @staticmethod
    def _copy(conn: psycopg.Connection[Any], rows: Sequence[Row]) -> None:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row_values(row))

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
                        SCHEMA.format(serial="BIGSERIAL", autoincrement="", json="JSON").encode()
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
