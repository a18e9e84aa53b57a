"""A model's history: the events (push, alias moves, loads) appended as the registry changes."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.engine import Connection, RowMapping

from modelport.errors import InvalidInput
from modelport.registry.database import events_table
from modelport.registry.manifest import Event

MAX_REASON: Final = 1000
"""Longest reason, in characters, an event may record."""


def now() -> datetime:
    """The current time in UTC, as every registry timestamp is written."""
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """A timestamp read back from the database, in UTC."""
    # SQLite keeps no time zone; every timestamp is written in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record(
    conn: Connection,
    name: str,
    kind: str,
    actor: str,
    *,
    alias: str | None = None,
    from_version: int | None = None,
    to_version: int | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Event:
    """Append one event to the history inside the caller's transaction, and return it."""
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidInput(f"the reason is {len(reason)} characters; keep it under {MAX_REASON}")
    row: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "reason": reason,
        "actor": actor,
        "host": socket.gethostname(),
        "at": now(),
        "detail": detail,
    }
    inserted = conn.execute(events_table.insert().values(**row)).inserted_primary_key
    assert inserted is not None  # an INSERT always reports its key
    row["id"] = inserted[0]
    return event(row)


def event(row: Mapping[str, Any] | RowMapping) -> Event:
    """The Event an events row holds."""
    return Event(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        at=utc(row["at"]),
        actor=row["actor"],
        host=row["host"],
        alias=row["alias"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        reason=row["reason"],
        detail=None if row["detail"] is None else dict(row["detail"]),
    )
