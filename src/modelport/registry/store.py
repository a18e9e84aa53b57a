"""The model registry: named models, their immutable numbered versions, and where they came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from modelport.errors import InvalidInput, NotFound, UntrustedArtifact
from modelport.protocol.signature import Signature
from modelport.registry.aliases import aliases_of, delete_alias, point_alias, roll_back_alias
from modelport.registry.blobs import BlobStore
from modelport.registry.database import events_table, models_table, versions_table
from modelport.registry.history import event, record
from modelport.registry.location import Connections, open_location
from modelport.registry.manifest import (
    LATEST,
    Event,
    ModelVersion,
    check_alias,
    check_model_name,
    version_number,
)
from modelport.registry.trust import is_pickle_family
from modelport.registry.versions import (
    Stored,
    check_format,
    checked_version,
    compiled_artifact,
    existing_model,
    insert_version,
    json_metadata,
    missing_version,
    model_version,
    unknown_model,
    version_row,
)

_PICKLE_REFUSED: Final = (
    "pickle-family artifacts can run code when loaded; push with --trust-pickle if you trust "
    "this file, or save the model with skops/ONNX/native format"
)

_V = versions_table.c
_E = events_table.c
PRODUCTION: Final = "production"
"""The alias `/v2/models/NAME/...` serves when it is set (else the newest version)."""


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
        check_format("model format", format)
        check_format("compiled format", compiled_format)
        meta = json_metadata(metadata)
        report = None if compile_report is None else json_metadata(compile_report)
        profile = None if reference_profile is None else json_metadata(reference_profile)
        for path in (artifact, compiled):
            if path is not None and not path.is_file():
                raise InvalidInput(f"artifact {path.name!r} is not a readable file")
        pickle = pickle or is_pickle_family(artifact)
        if pickle and not trusted_pickle:
            raise UntrustedArtifact(_PICKLE_REFUSED)
        stored = self._store(artifact, pickle=pickle)
        # Blobs first, like the original: a version row never names a missing blob.
        stored_compiled = None if compiled is None else self._store_compiled(compiled)
        row = version_row(
            artifact,
            stored,
            name=name,
            format=format,
            signature=signature,
            metadata=meta,
            pickle=pickle,
            trusted_pickle=trusted_pickle,
            created_by=created_by,
            source=source,
            compiled=stored_compiled,
            compiled_format=compiled_format,
            compile_report=report,
            reference_profile=profile,
        )
        with self._db.writing() as conn:
            insert_version(conn, row)
        return model_version(row)

    def _store(self, artifact: Path, *, pickle: bool) -> Stored:
        """Put `artifact` in the blob store; UntrustedArtifact if its stored bytes are pickle."""
        digest, size = self._blobs.put(artifact)
        # The source file may have changed since it was sniffed; the stored copy cannot.
        if not pickle and is_pickle_family(self._blobs.path(digest)):
            raise UntrustedArtifact(_PICKLE_REFUSED)
        return Stored(digest, size)

    def _store_compiled(self, compiled: Path) -> Stored:
        """Put a compiled artifact in the blob store; it must never be pickle-family."""
        digest, size = self._blobs.put(compiled)
        if is_pickle_family(self._blobs.path(digest)):
            raise UntrustedArtifact(
                "a compiled artifact must not be pickle-family: it is served without "
                "--trust-pickle; compile to a format that loads without running code"
            )
        return Stored(digest, size)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """One version of a model (None: the newest); NotFound says which versions exist."""
        check_model_name(name)
        query = sa.select(versions_table).where(_V.name == name)
        if version is None:
            query = query.order_by(_V.version.desc()).limit(1)
        else:
            query = query.where(_V.version == checked_version(version))
        with self._db.reading() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                raise missing_version(conn, name, version)
            return model_version(row)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model, oldest first; NotFound for an unknown model."""
        check_model_name(name)
        with self._db.reading() as conn:
            rows = conn.execute(
                sa.select(versions_table).where(_V.name == name).order_by(_V.version)
            ).mappings()
            found = [model_version(row) for row in rows]
        if not found:
            raise NotFound(unknown_model(name))
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
            found = [model_version(row) for row in conn.execute(query).mappings()]
        return sorted(found, key=lambda mv: mv.name)

    def artifact_path(self, mv: ModelVersion) -> Path:
        """Where the (read-only) artifact of `mv` is stored."""
        return self._blobs.path(mv.digest)

    def verify(self, mv: ModelVersion) -> None:
        """Re-hash the artifact of `mv`; UntrustedArtifact if it changed, NotFound if it is gone."""
        self._blobs.verify(mv.digest)

    def compiled_path(self, mv: ModelVersion) -> Path:
        """Where the (read-only) compiled artifact of `mv` is stored; NotFound if it has none."""
        return self._blobs.path(compiled_artifact(mv).digest)

    def verify_compiled(self, mv: ModelVersion) -> None:
        """Re-hash the compiled artifact of `mv`, like `verify`; NotFound if it has none."""
        self._blobs.verify(compiled_artifact(mv).digest)

    # -- aliases and history -------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases and the version each names (NotFound for an unknown model)."""
        with self._db.reading() as conn:
            return aliases_of(conn, name)

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
            return point_alias(conn, name, alias, version, actor=actor, reason=reason)

    def rollback(self, name: str, alias: str, *, actor: str, reason: str | None = None) -> Event:
        """Move `alias` back to the version it named before its last move.

        Rolling back twice returns to where it was. Conflict when the alias never moved.
        """
        check_alias(alias)
        with self._db.writing() as conn:
            return roll_back_alias(conn, name, alias, actor=actor, reason=reason)

    def remove_alias(
        self, name: str, alias: str, *, actor: str, reason: str | None = None
    ) -> Event:
        """Delete `alias`; NotFound when the model has no such alias."""
        check_alias(alias)
        with self._db.writing() as conn:
            return delete_alias(conn, name, alias, actor=actor, reason=reason)

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
        """Append a load, load_failed, unload or batch (job) of `version` to the model's history."""
        if kind not in ("load", "load_failed", "unload", "batch"):
            raise InvalidInput(f"unknown event kind {kind!r}")
        clean = None if detail is None else json_metadata(detail)
        with self._db.writing() as conn:
            return record(conn, name, kind, actor, to_version=version, reason=reason, detail=clean)

    def history(self, name: str) -> list[Event]:
        """The model's events, oldest first; NotFound for an unknown model."""
        with self._db.reading() as conn:
            existing_model(conn, name)
            rows = conn.execute(
                sa.select(events_table).where(_E.name == name).order_by(_E.id)
            ).mappings()
            return [event(row) for row in rows]

    def change_counter(self) -> int:
        """A number that grows with every push, alias move, load and unload (0 when none)."""
        with self._db.reading() as conn:
            return int(conn.execute(sa.select(sa.func.max(_E.id))).scalar() or 0)
