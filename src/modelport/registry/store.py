"""The model registry: named models, their immutable numbered versions, and where they came from."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from modelport.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    UntrustedArtifact,
)
from modelport.protocol.signature import Signature
from modelport.registry.blobs import BlobStore
from modelport.registry.database import (
    aliases_table,
    events_table,
    models_table,
    versions_table,
)
from modelport.registry.location import Connections, open_location
from modelport.registry.manifest import (
    LATEST,
    CompiledArtifact,
    Event,
    ModelVersion,
    check_alias,
    check_model_name,
    version_number,
)
from modelport.registry.trust import is_pickle_family

# Entry-point names, or `package.module:Class` for a custom runtime.
_FORMAT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]{0,63}")  # the column holds 64
_PICKLE_REFUSED: Final = (
    "pickle-family artifacts can run code when loaded; push with --trust-pickle if you trust "
    "this file, or save the model with skops/ONNX/native format"
)

_V = versions_table.c
_A = aliases_table.c
_E = events_table.c
PRODUCTION: Final = "production"
"""The alias `/v2/models/NAME/...` serves when it is set (else the newest version)."""
_MAX_REASON: Final = 1000


class Registry:
    """Models and their versions: metadata in a database, artifacts in a content-addressed store.

    Versions are immutable and numbered 1, 2, 3... per model. Writes return only after they
    commit; several processes may push to one registry at once. Build it with `Registry.open`.
    """

    __slots__ = ("_blobs", "_db")

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self._db = Connections(engine)
        self._blobs = blobs

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, create: bool = True) -> Self:
        """Open a registry, creating it and updating its schema as needed.

        `location` is a directory (an embedded SQLite database plus the artifacts) or, for a
        registry that several replicas share, `postgresql://USER@HOST:PORT/DB?artifacts=PATH`:
        the metadata in that existing PostgreSQL database, the artifacts under PATH, which
        every replica must reach. PATH is recorded when the registry is created; later opens
        may leave it out, or give it to reach the same files at another mount point.

        With `create=False` a missing registry is NotFound instead (for commands that only
        read). InvalidInput when the path cannot be a directory or the URL is incomplete,
        NotReady when the database cannot be used, Unsupported for other URL schemes. No
        message repeats a password from the URL.
        """
        engine, blobs = open_location(os.fspath(location), create=create)
        return cls(engine, blobs)

    def close(self) -> None:
        """Release the database connections; the registry is unusable afterwards."""
        self._db.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def push(
        self,
        artifact: Path,
        *,
        name: str,
        format: str,
        signature: Signature,
        metadata: Mapping[str, Any],
        pickle: bool,
        trusted_pickle: bool,
        created_by: str,
        source: str,
        compiled: Path | None = None,
        compiled_format: str = "onnx",
        compile_report: Mapping[str, Any] | None = None,
        reference_profile: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store `artifact` as the next version of model `name` and return that version.

        The artifact counts as pickle-family when `pickle` says so or its name or bytes do
        (trust.is_pickle_family); such artifacts need `trusted_pickle`, else UntrustedArtifact.
        Conflict when the model already holds the same bytes; InvalidInput for a bad name,
        format or non-JSON metadata. `source` is recorded by its base name only.

        `compiled` is an optional second artifact of `compiled_format` converted from the
        first (it must not be pickle-family), and `compile_report` the JSON report of the
        check behind it; both are stored with the version, in the same transaction.

        `reference_profile` is the JSON profile of the version's reference data, which drift
        is measured against (see monitoring.reference_profile); stored as given.
        """
        check_model_name(name)
        for what, fmt in (("model format", format), ("compiled format", compiled_format)):
            if not _FORMAT.fullmatch(fmt):
                raise InvalidInput(
                    f"invalid {what} {fmt!r}: use 1-64 letters, digits, '.', '_', '+' or '-'"
                )
        meta = _json_metadata(metadata)
        report = None if compile_report is None else _json_metadata(compile_report)
        profile = None if reference_profile is None else _json_metadata(reference_profile)
        for path in (artifact, compiled):
            if path is not None and not path.is_file():
                raise InvalidInput(f"artifact {path.name!r} is not a readable file")
        pickle = pickle or is_pickle_family(artifact)
        if pickle and not trusted_pickle:
            raise UntrustedArtifact(_PICKLE_REFUSED)
        digest, size = self._blobs.put(artifact)
        # The source file may have changed since it was sniffed; the stored copy cannot.
        if not pickle and is_pickle_family(self._blobs.path(digest)):
            raise UntrustedArtifact(_PICKLE_REFUSED)
        compiled_digest = compiled_size = None
        if compiled is not None:
            # Blobs first, like the original: a version row never names a missing blob.
            compiled_digest, compiled_size = self._blobs.put(compiled)
            if is_pickle_family(self._blobs.path(compiled_digest)):
                raise UntrustedArtifact(
                    "a compiled artifact must not be pickle-family: it is served without "
                    "--trust-pickle; compile to a format that loads without running code"
                )
        row: dict[str, Any] = {
            "name": name,
            "digest": digest,
            "size": size,
            "format": format,
            "signature": signature.to_dict(),
            "created_at": datetime.now(UTC),
            "created_by": created_by,
            "source": _base_name(source) or artifact.name,
            "pickle": pickle,
            # Trust is only meaningful, and only recorded, for artifacts that need it.
            "trusted_pickle": pickle and trusted_pickle,
            "metadata": meta,
            "compiled_format": None if compiled is None else compiled_format,
            "compiled_digest": compiled_digest,
            "compiled_size": compiled_size,
            "compile_report": report,
            "created_host": socket.gethostname(),
            "reference_profile": profile,
        }
        with self._db.writing() as conn:
            same = conn.execute(
                sa.select(_V.version).where(_V.name == name, _V.digest == digest)
            ).scalar()
            if same is not None:
                raise Conflict(
                    f"model {name!r} already has this artifact as version {same}; "
                    "versions are immutable, so push a changed file or use that version"
                )
            known = conn.execute(
                sa.select(models_table.c.name).where(models_table.c.name == name)
            ).first()
            if known is None:
                conn.execute(models_table.insert().values(name=name, created_at=row["created_at"]))
            newest = conn.execute(
                sa.select(sa.func.max(_V.version)).where(_V.name == name)
            ).scalar()
            row["version"] = (newest or 0) + 1
            conn.execute(versions_table.insert().values(**row))
            _record(conn, name, "push", created_by, to_version=row["version"])
        return _model_version(row)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """One version of a model (None: the newest); NotFound says which versions exist."""
        check_model_name(name)
        query = sa.select(versions_table).where(_V.name == name)
        if version is None:
            query = query.order_by(_V.version.desc()).limit(1)
        else:
            query = query.where(_V.version == _checked_version(version))
        with self._db.reading() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                raise _missing_version(conn, name, version)
            return _model_version(row)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first; NotFound for an unknown model."""
        check_model_name(name)
        with self._db.reading() as conn:
            rows = conn.execute(
                sa.select(versions_table).where(_V.name == name).order_by(_V.version)
            ).mappings()
            found = [_model_version(row) for row in rows]
        if not found:
            raise NotFound(_unknown_model(name))
        return found

    def models(self) -> list[str]:
        """Names of all registered models, sorted."""
        with self._db.reading() as conn:
            names = list(conn.execute(sa.select(models_table.c.name)).scalars())
        # Sort here so the order does not depend on the database's collation.
        return sorted(names)

    def latest(self) -> list[ModelVersion]:
        """The newest version of every model, sorted by model name."""
        newest = (
            sa.select(_V.name, sa.func.max(_V.version).label("version"))
            .group_by(_V.name)
            .subquery()
        )
        query = sa.select(versions_table).join(
            newest, sa.and_(_V.name == newest.c.name, _V.version == newest.c.version)
        )
        with self._db.reading() as conn:
            found = [_model_version(row) for row in conn.execute(query).mappings()]
        return sorted(found, key=lambda mv: mv.name)

    def artifact_path(self, mv: ModelVersion) -> Path:
        """Where the (read-only) artifact of `mv` is stored."""
        return self._blobs.path(mv.digest)

    def verify(self, mv: ModelVersion) -> None:
        """Re-hash the artifact of `mv`; UntrustedArtifact if it changed, NotFound if it is gone."""
        self._blobs.verify(mv.digest)

    def compiled_path(self, mv: ModelVersion) -> Path:
        """Where the (read-only) compiled artifact of `mv` is stored; NotFound if it has none."""
        return self._blobs.path(_compiled(mv).digest)

    def verify_compiled(self, mv: ModelVersion) -> None:
        """Re-hash the compiled artifact of `mv`, like `verify`; NotFound if it has none."""
        self._blobs.verify(_compiled(mv).digest)

    # -- aliases and history -------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases and the version each names (NotFound for an unknown model)."""
        with self._db.reading() as conn:
            _existing_model(conn, name)
            rows = conn.execute(sa.select(_A.alias, _A.version).where(_A.name == name))
            return dict(sorted((alias, version) for alias, version in rows))

    def resolve(self, name: str, ref: str | None = None) -> ModelVersion:
        """The version `ref` names: a number, an alias, `latest`, or None.

        None means what `/v2/models/NAME/...` serves: the `production` alias when it is set,
        else the newest version. NotFound lists the model's versions or aliases.
        """
        if ref is None or ref == LATEST:
            if ref is None:
                target = self.aliases(name).get(PRODUCTION)
                if target is not None:
                    return self.get(name, target)
            return self.get(name)
        number = version_number(ref)
        if number is not None:
            return self.get(name, number)
        if ref.isascii() and ref.isdigit():
            raise NotFound(f"model {name!r} has no version {ref!r}; versions are numbers from 1")
        aliases = self.aliases(name)
        if ref not in aliases:
            known = ", ".join(aliases) or "none yet; set one with `modelport models alias`"
            raise NotFound(f"model {name!r} has no version or alias {ref!r}; its aliases: {known}")
        return self.get(name, aliases[ref])

    def set_alias(
        self, name: str, alias: str, version: int, *, actor: str, reason: str | None = None
    ) -> Event:
        """Point `alias` at `version` (which must exist) and record the move in the history."""
        check_alias(alias)
        with self._db.writing() as conn:
            found = conn.execute(
                sa.select(_V.version).where(
                    _V.name == _existing_model(conn, name), _V.version == _checked_version(version)
                )
            ).first()
            if found is None:
                raise _missing_version(conn, name, version)
            previous = _alias_target(conn, name, alias)
            values = {"version": version, "updated_at": _now(), "updated_by": actor}
            if previous is None:
                conn.execute(aliases_table.insert().values(name=name, alias=alias, **values))
            else:
                conn.execute(
                    aliases_table.update()
                    .where(_A.name == name, _A.alias == alias)
                    .values(**values)
                )
            return _record(
                conn,
                name,
                "alias",
                actor,
                alias=alias,
                from_version=previous,
                to_version=version,
                reason=reason,
            )

    def rollback(self, name: str, alias: str, *, actor: str, reason: str | None = None) -> Event:
        """Move `alias` back to the version it named before its last move.

        Rolling back twice returns to where it was. Conflict when the alias never moved.
        """
        check_alias(alias)
        with self._db.writing() as conn:
            current = _alias_target(conn, name, alias)
            if current is None:
                _existing_model(conn, name)
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
            conn.execute(
                aliases_table.update()
                .where(_A.name == name, _A.alias == alias)
                .values(version=last, updated_at=_now(), updated_by=actor)
            )
            return _record(
                conn,
                name,
                "rollback",
                actor,
                alias=alias,
                from_version=current,
                to_version=last,
                reason=reason,
            )

    def remove_alias(
        self, name: str, alias: str, *, actor: str, reason: str | None = None
    ) -> Event:
        """Delete `alias`; NotFound when the model has no such alias."""
        check_alias(alias)
        with self._db.writing() as conn:
            current = _alias_target(conn, name, alias)
            if current is None:
                _existing_model(conn, name)
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            conn.execute(aliases_table.delete().where(_A.name == name, _A.alias == alias))
            return _record(
                conn, name, "unalias", actor, alias=alias, from_version=current, reason=reason
            )

    def record_event(
        self,
        name: str,
        kind: str,
        *,
        actor: str,
        version: int | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append a load, load_failed or unload of `version` to the model's history."""
        if kind not in ("load", "load_failed", "unload"):
            raise InvalidInput(f"unknown event kind {kind!r}")
        clean = None if detail is None else _json_metadata(detail)
        with self._db.writing() as conn:
            return _record(conn, name, kind, actor, to_version=version, reason=reason, detail=clean)

    def history(self, name: str) -> list[Event]:
        """The model's events, oldest first; NotFound for an unknown model."""
        with self._db.reading() as conn:
            _existing_model(conn, name)
            rows = conn.execute(
                sa.select(events_table).where(_E.name == name).order_by(_E.id)
            ).mappings()
            return [_event(row) for row in rows]

    def change_counter(self) -> int:
        """A number that grows with every push, alias move, load and unload (0 when none)."""
        with self._db.reading() as conn:
            return int(conn.execute(sa.select(sa.func.max(_E.id))).scalar() or 0)


def _now() -> datetime:
    return datetime.now(UTC)


def _existing_model(conn: Connection, name: str) -> str:
    """`name`, once checked to be a valid name of a registered model (else NotFound)."""
    check_model_name(name)
    found = conn.execute(sa.select(models_table.c.name).where(models_table.c.name == name))
    if found.first() is None:
        raise NotFound(_unknown_model(name))
    return name


def _checked_version(version: int) -> int:
    if isinstance(version, bool) or version < 1:
        raise InvalidInput(f"invalid version {version!r}: versions are numbered from 1")
    return version


def _missing_version(conn: Connection, name: str, version: int | None) -> NotFound:
    """The error for a version `name` does not have, listing the versions it has."""
    existing = list(
        conn.execute(sa.select(_V.version).where(_V.name == name).order_by(_V.version)).scalars()
    )
    if not existing:
        return NotFound(_unknown_model(name))
    return NotFound(f"model {name!r} has no version {version}; its versions are {_spans(existing)}")


def _alias_target(conn: Connection, name: str, alias: str) -> int | None:
    return conn.execute(sa.select(_A.version).where(_A.name == name, _A.alias == alias)).scalar()


def _record(
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
    if reason is not None and len(reason) > _MAX_REASON:
        raise InvalidInput(f"the reason is {len(reason)} characters; keep it under {_MAX_REASON}")
    row: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "reason": reason,
        "actor": actor,
        "host": socket.gethostname(),
        "at": _now(),
        "detail": detail,
    }
    inserted = conn.execute(events_table.insert().values(**row)).inserted_primary_key
    assert inserted is not None  # an INSERT always reports its key
    row["id"] = inserted[0]
    return _event(row)


def _event(row: Mapping[str, Any] | RowMapping) -> Event:
    return Event(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        at=_utc(row["at"]),
        actor=row["actor"],
        host=row["host"],
        alias=row["alias"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        reason=row["reason"],
        detail=None if row["detail"] is None else dict(row["detail"]),
    )


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no time zone; every timestamp is written in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` as plain JSON values (tuples become lists); InvalidInput names a bad entry."""
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInput(f"metadata keys must be strings, got {type(key).__name__}")
        try:
            clean[key] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            raise InvalidInput(
                f"metadata {key!r} is not JSON ({type(value).__name__}); use strings, finite "
                "numbers, booleans, null, lists or objects"
            ) from None
    return clean


def _base_name(source: str) -> str:
    """The file name at the end of `source`, whichever separator it uses."""
    return re.split(r"[\\/]", source)[-1]


def _model_version(row: Mapping[str, Any] | RowMapping) -> ModelVersion:
    created_at = _utc(row["created_at"])
    return ModelVersion(
        name=row["name"],
        version=row["version"],
        digest=row["digest"],
        size=row["size"],
        format=row["format"],
        signature=Signature.from_dict(row["signature"]),
        created_at=created_at,
        created_by=row["created_by"],
        source=row["source"],
        pickle=bool(row["pickle"]),
        trusted_pickle=bool(row["trusted_pickle"]),
        metadata=dict(row["metadata"]),
        compiled=(
            None
            if row["compiled_digest"] is None
            else CompiledArtifact(
                format=row["compiled_format"],
                digest=row["compiled_digest"],
                size=row["compiled_size"],
            )
        ),
        compile_report=None if row["compile_report"] is None else dict(row["compile_report"]),
        created_host=row["created_host"] or "",
        reference_profile=(
            None if row["reference_profile"] is None else dict(row["reference_profile"])
        ),
    )


def _compiled(mv: ModelVersion) -> CompiledArtifact:
    if mv.compiled is None:
        raise NotFound(
            f"model {mv.name!r} version {mv.version} has no compiled artifact; "
            "push it with --compile to make one"
        )
    return mv.compiled


def _unknown_model(name: str) -> str:
    return f"model {name!r} is unknown; run `modelport models list` to see the registered models"


def _spans(numbers: list[int]) -> str:
    """Sorted integers as compact ranges: [1, 2, 3, 5] -> '1-3, 5'."""
    spans: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(spans)
