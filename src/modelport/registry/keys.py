"""API keys: created once, stored as hashes in the registry database, listed, revoked, verified.

A key's secret is `mp_` plus 43 URL-safe characters (32 random bytes). It is returned once, by
`create`; the database keeps only its sha256 and its first 11 characters, which serve as the
key's public id (`mp_AbCdEfGh`) so that `keys list` can name it without revealing it.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from modelport.errors import Conflict, InvalidInput, NotFound
from modelport.registry.database import api_keys_table
from modelport.registry.history import now, utc
from modelport.registry.location import Connections, open_location

SCOPES: Final = ("infer", "read", "admin")
"""What a key may do: `infer` (inference, metadata), `read` (metadata, metrics, logs), `admin`."""
KEY_PREFIX: Final = "mp_"
_SECRET_BYTES: Final = 32
_SECRET: Final = re.compile(r"mp_[A-Za-z0-9_-]{43}")
_ID_LENGTH: Final = len(KEY_PREFIX) + 8
# A name never starts like an id, so `keys revoke ID|NAME` is never ambiguous.
_NAME: Final = re.compile(r"(?!mp_)[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_K = api_keys_table.c


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the registry records about an API key: everything except its secret."""

    id: str
    """Public id: the secret's first 11 characters (`mp_` and 8 more)."""
    name: str
    """Optional label given at creation ("" without one); unique among unrevoked keys."""
    scope: str
    """One of SCOPES."""
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def label(self) -> str:
        """How logs and messages name the key: its name, else its id."""
        return self.name or self.id

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as `keys list --json` prints it."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "revoked_by": self.revoked_by,
        }


def secret_digest(secret: str) -> str:
    """The sha256 of `secret`, lowercase hex: what the database stores and looks up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(secret: str) -> bool:
    """Whether `secret` has the shape of a modelport API key (says nothing about its validity)."""
    return _SECRET.fullmatch(secret) is not None


class KeyStore:
    """The API keys of one registry database; writes take the registry's write lock.

    Build it on a registry's engine, or open one by location with `KeyStore.open`.
    """

    __slots__ = ("_db", "_owns_engine")

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self._db = Connections(engine)
        self._owns_engine = owns_engine

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, create: bool = False) -> Self:
        """The keys of the registry at `location` (a directory or URL), as Registry.open finds it.

        NotFound for a missing registry unless `create`; the other errors are Registry.open's.
        """
        engine, _blobs = open_location(os.fspath(location), create=create)
        return cls(engine, owns_engine=True)

    def close(self) -> None:
        """Release the database connections if this store opened them."""
        if self._owns_engine:
            self._db.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def create(self, scope: str, *, name: str = "", created_by: str) -> tuple[str, ApiKey]:
        """A new key with `scope`: its secret, which is never stored or shown again, and record.

        InvalidInput for an unknown scope or a bad name; Conflict when an unrevoked key
        already has the name.
        """
        if scope not in SCOPES:
            raise InvalidInput(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        if name and not _NAME.fullmatch(name):
            raise InvalidInput(
                f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
                f"starting with a letter or digit and not with {KEY_PREFIX!r}"
            )
        with self._db.writing() as conn:
            if name and _active_named(conn, name) is not None:
                raise Conflict(
                    f"an unrevoked key is already named {name!r}; revoke it first "
                    f"(`modelport keys revoke {name}`) or pick another name"
                )
            while True:
                secret = KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
                key_id = secret[:_ID_LENGTH]
                # 48 random bits in the id: a clash is rare, but the id is the primary key.
                taken = conn.execute(sa.select(_K.id).where(_K.id == key_id)).first()
                if taken is None:
                    break
            key = ApiKey(id=key_id, name=name, scope=scope, created_at=now(), created_by=created_by)
            conn.execute(
                api_keys_table.insert().values(
                    id=key.id,
                    secret_sha256=secret_digest(secret),
                    name=key.name,
                    scope=key.scope,
                    created_at=key.created_at,
                    created_by=key.created_by,
                )
            )
        return secret, key

    def get(self, id_or_name: str) -> ApiKey:
        """The key with this id or secret, else by name: the unrevoked one, else the last revoked.

        NotFound when no key has that id or name.
        """
        with self._db.reading() as conn:
            return _find(conn, id_or_name)

    def revoke(self, id_or_name: str, *, revoked_by: str) -> tuple[ApiKey, bool]:
        """Revoke a key by id or name: the key, and False if it was revoked already (unchanged).

        NotFound when no key has that id or name. Servers stop accepting the key within their
        lookup cache's lifetime (security.policy.Policy, 5 s by default).
        """
        with self._db.writing() as conn:
            key = _find(conn, id_or_name)
            if key.revoked_at is not None:
                return key, False
            revoked = replace(key, revoked_at=now(), revoked_by=revoked_by)
            conn.execute(
                api_keys_table.update()
                .where(_K.id == key.id)
                .values(revoked_at=revoked.revoked_at, revoked_by=revoked_by)
            )
        return revoked, True

    def verify(self, secret: str) -> ApiKey | None:
        """The unrevoked key whose secret this is, else None.

        One indexed lookup by the secret's hash; strings that are not shaped like a key are
        refused without touching the database. NotReady when the database cannot be reached.
        """
        if not looks_like_key(secret):
            return None
        digest = secret_digest(secret)
        with self._db.reading() as conn:
            row = (
                conn.execute(sa.select(api_keys_table).where(_K.secret_sha256 == digest))
                .mappings()
                .first()
            )
        # Looked up by hash, never by secret: the early exit of the database's comparison can
        # at most reveal a prefix of a hash, which tells nothing about any key's secret.
        if row is None:
            return None
        key = _api_key(row)
        return None if key.revoked_at is not None else key

    def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first; never a secret or its hash."""
        with self._db.reading() as conn:
            rows = conn.execute(sa.select(api_keys_table).order_by(_K.created_at, _K.id)).mappings()
            return [_api_key(row) for row in rows]


def _find(conn: Connection, id_or_name: str) -> ApiKey:
    if id_or_name.startswith(KEY_PREFIX):
        # A whole secret is accepted too: revoking a leaked key should need no lookup first.
        match = (
            _K.secret_sha256 == secret_digest(id_or_name)
            if looks_like_key(id_or_name)
            else _K.id == id_or_name
        )
        row = conn.execute(sa.select(api_keys_table).where(match)).mappings().first()
        if row is not None:
            return _api_key(row)
        hint = "ids are the 11 characters `modelport keys list` shows, not the secret"
        raise NotFound(f"no API key has the id {id_or_name[:_ID_LENGTH]!r}...; {hint}")
    active = _active_named(conn, id_or_name)
    if active is not None:
        return active
    newest = (
        conn.execute(
            sa.select(api_keys_table)
            .where(_K.name == id_or_name)
            .order_by(_K.revoked_at.desc(), _K.id)
            .limit(1)
        )
        .mappings()
        .first()
    )
    if newest is None:
        raise NotFound(
            f"no API key has the id or name {id_or_name!r}; `modelport keys list` shows them"
        )
    return _api_key(newest)


def _active_named(conn: Connection, name: str) -> ApiKey | None:
    row = (
        conn.execute(
            sa.select(api_keys_table).where(_K.name == name, _K.revoked_at.is_(None)).limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else _api_key(row)


def _api_key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=row["scope"],
        created_at=utc(row["created_at"]),
        created_by=row["created_by"],
        revoked_at=None if row["revoked_at"] is None else utc(row["revoked_at"]),
        revoked_by=row["revoked_by"],
    )
