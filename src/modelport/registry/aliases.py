"""Aliases: names that point at a model's versions, each move recorded in its history.

Every function runs inside the caller's transaction; the alias names are checked by the caller.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from modelport.errors import Conflict, NotFound
from modelport.registry.database import aliases_table, events_table, versions_table
from modelport.registry.history import now, record
from modelport.registry.manifest import Event
from modelport.registry.versions import checked_version, existing_model, missing_version

_V = versions_table.c
_A = aliases_table.c
_E = events_table.c


def aliases_of(conn: Connection, name: str) -> dict[str, int]:
    """The model's aliases and the version each names (NotFound for an unknown model)."""
    existing_model(conn, name)
    rows = conn.execute(sa.select(_A.alias, _A.version).where(_A.name == name))
    return dict(sorted((alias, version) for alias, version in rows))


def point_alias(
    conn: Connection, name: str, alias: str, version: int, *, actor: str, reason: str | None
) -> Event:
    """Point `alias` at `version` (which must exist) and record the move."""
    found = conn.execute(
        sa.select(_V.version).where(
            _V.name == existing_model(conn, name), _V.version == checked_version(version)
        )
    ).first()
    if found is None:
        raise missing_version(conn, name, version)
    previous = _target(conn, name, alias)
    return _move(conn, name, alias, previous, version, kind="alias", actor=actor, reason=reason)


def roll_back_alias(
    conn: Connection, name: str, alias: str, *, actor: str, reason: str | None
) -> Event:
    """Move `alias` back to the version it named before its last move, and record that.

    Conflict when the alias never moved; NotFound when there is no such alias.
    """
    current = _target(conn, name, alias)
    if current is None:
        existing_model(conn, name)
        raise NotFound(f"model {name!r} has no alias {alias!r}; nothing to roll back")
    last = conn.execute(
        sa.select(_E.from_version)
        .where(_E.name == name, _E.alias == alias, _E.kind.in_(("alias", "rollback")))
        .order_by(_E.id.desc())
        .limit(1)
    ).scalar()
    if last is None:
        raise Conflict(
            f"alias {alias!r} of model {name!r} has only ever named version {current}; "
            "there is no earlier target to roll back to"
        )
    return _move(conn, name, alias, current, last, kind="rollback", actor=actor, reason=reason)


def delete_alias(
    conn: Connection, name: str, alias: str, *, actor: str, reason: str | None
) -> Event:
    """Delete `alias` and record that; NotFound when the model has no such alias."""
    current = _target(conn, name, alias)
    if current is None:
        existing_model(conn, name)
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    conn.execute(aliases_table.delete().where(_A.name == name, _A.alias == alias))
    return record(conn, name, "unalias", actor, alias=alias, from_version=current, reason=reason)


def _move(
    conn: Connection,
    name: str,
    alias: str,
    previous: int | None,
    version: int,
    *,
    kind: str,
    actor: str,
    reason: str | None,
) -> Event:
    """Point `alias` from `previous` (None: a new alias) to `version`; record it as `kind`."""
    values = {"version": version, "updated_at": now(), "updated_by": actor}
    if previous is None:
        conn.execute(aliases_table.insert().values(name=name, alias=alias, **values))
    else:
        conn.execute(
            aliases_table.update().where(_A.name == name, _A.alias == alias).values(**values)
        )
    return record(
        conn,
        name,
        kind,
        actor,
        alias=alias,
        from_version=previous,
        to_version=version,
        reason=reason,
    )


def _target(conn: Connection, name: str, alias: str) -> int | None:
    return conn.execute(sa.select(_A.version).where(_A.name == name, _A.alias == alias)).scalar()
