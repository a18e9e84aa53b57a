"""Version rows: what a push writes, how a row reads back as a ModelVersion, and what is missing."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from modelport.errors import Conflict, InvalidInput, NotFound
from modelport.protocol.signature import Signature
from modelport.registry.database import models_table, versions_table
from modelport.registry.history import now, record, utc
from modelport.registry.manifest import CompiledArtifact, ModelVersion, check_model_name

# Entry-point names, or `package.module:Class` for a custom runtime.
_FORMAT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]{0,63}")  # the column holds 64

_V = versions_table.c


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a pushed file went in the blob store: its sha256 and size."""

    digest: str
    size: int


def check_format(what: str, fmt: str) -> None:
    """InvalidInput unless `fmt` can name a runtime (and fits its column)."""
    if not _FORMAT.fullmatch(fmt):
        raise InvalidInput(
            f"invalid {what} {fmt!r}: use 1-64 letters, digits, '.', '_', '+' or '-'"
        )


def json_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
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


def version_row(
    artifact: Path,
    stored: Stored,
    *,
    name: str,
    format: str,
    signature: Signature,
    metadata: dict[str, Any],
    pickle: bool,
    trusted_pickle: bool,
    created_by: str,
    source: str,
    compiled: Stored | None,
    compiled_format: str,
    compile_report: dict[str, Any] | None,
    reference_profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """The versions row of a push, all but its version number (see `insert_version`)."""
    return {
        "name": name,
        "digest": stored.digest,
        "size": stored.size,
        "format": format,
        "signature": signature.to_dict(),
        "created_at": now(),
        "created_by": created_by,
        "source": _base_name(source) or artifact.name,
        "pickle": pickle,
        # Trust is only meaningful, and only recorded, for artifacts that need it.
        "trusted_pickle": pickle and trusted_pickle,
        "metadata": metadata,
        "compiled_format": None if compiled is None else compiled_format,
        "compiled_digest": None if compiled is None else compiled.digest,
        "compiled_size": None if compiled is None else compiled.size,
        "compile_report": compile_report,
        "created_host": socket.gethostname(),
        "reference_profile": reference_profile,
    }


def insert_version(conn: Connection, row: dict[str, Any]) -> None:
    """Give `row` the model's next version number and write it, with its push event.

    Conflict when the model already holds the same bytes. Runs in the caller's transaction.
    """
    name = row["name"]
    same = conn.execute(
        sa.select(_V.version).where(_V.name == name, _V.digest == row["digest"])
    ).scalar()
    if same is not None:
        raise Conflict(
            f"model {name!r} already has this artifact as version {same}; "
            "versions are immutable, so push a changed file or use that version"
        )
    known = conn.execute(sa.select(models_table.c.name).where(models_table.c.name == name)).first()
    if known is None:
        conn.execute(models_table.insert().values(name=name, created_at=row["created_at"]))
    newest = conn.execute(sa.select(sa.func.max(_V.version)).where(_V.name == name)).scalar()
    row["version"] = (newest or 0) + 1
    conn.execute(versions_table.insert().values(**row))
    record(conn, name, "push", row["created_by"], to_version=row["version"])


def model_version(row: Mapping[str, Any] | RowMapping) -> ModelVersion:
    """The ModelVersion a versions row holds."""
    created_at = utc(row["created_at"])
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


def existing_model(conn: Connection, name: str) -> str:
    """`name`, once checked to be a valid name of a registered model (else NotFound)."""
    check_model_name(name)
    found = conn.execute(sa.select(models_table.c.name).where(models_table.c.name == name))
    if found.first() is None:
        raise NotFound(unknown_model(name))
    return name


def checked_version(version: int) -> int:
    """`version` if it can number a version (an int from 1), else InvalidInput."""
    if isinstance(version, bool) or version < 1:
        raise InvalidInput(f"invalid version {version!r}: versions are numbered from 1")
    return version


def missing_version(conn: Connection, name: str, version: int | None) -> NotFound:
    """The error for a version `name` does not have, listing the versions it has."""
    existing = list(
        conn.execute(sa.select(_V.version).where(_V.name == name).order_by(_V.version)).scalars()
    )
    if not existing:
        return NotFound(unknown_model(name))
    return NotFound(f"model {name!r} has no version {version}; its versions are {_spans(existing)}")


def compiled_artifact(mv: ModelVersion) -> CompiledArtifact:
    """The compiled artifact of `mv`; NotFound when it was pushed without one."""
    if mv.compiled is None:
        raise NotFound(
            f"model {mv.name!r} version {mv.version} has no compiled artifact; "
            "push it with --compile to make one"
        )
    return mv.compiled


def unknown_model(name: str) -> str:
    """The message for a model the registry does not hold."""
    return f"model {name!r} is unknown; run `modelport models list` to see the registered models"


def _base_name(source: str) -> str:
    """The file name at the end of `source`, whichever separator it uses."""
    return re.split(r"[\\/]", source)[-1]


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
