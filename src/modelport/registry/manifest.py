"""What the registry records about a model version, and the rules for model names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALIAS: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
LATEST: Final = "latest"
"""The implicit alias of every model's newest version; it cannot be set."""


def check_model_name(name: str) -> str:
    """Return `name` if it is safe in URLs and file paths; else InvalidInput says the rule."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and without '..'"
        )
    return name


MAX_VERSION = 2**31 - 1
"""Largest version number a path may name; larger ones cannot exist in the registry."""


def version_number(version: str) -> int | None:
    """The version number that `version` names (ASCII digits, 1..MAX_VERSION), else None."""
    # str.isdigit alone accepts other scripts' digits and superscripts, which int() rejects
    # or reads as another number.
    if not (version.isascii() and version.isdigit()):
        return None
    # Bounded before int(): a path of thousands of digits would make int() itself refuse.
    digits = version.lstrip("0")
    if len(digits) > len(str(MAX_VERSION)):
        return None
    number = int(digits or "0")
    return number if 1 <= number <= MAX_VERSION else None


def check_alias(alias: str) -> str:
    """Return `alias` if it can name a version; else InvalidInput says the rule."""
    if not _ALIAS.fullmatch(alias) or ".." in alias:
        raise InvalidInput(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '.', '_' or '-', starting "
            "with a letter (so it can never be mistaken for a version number)"
        )
    if alias == LATEST:
        raise InvalidInput(
            f"{LATEST!r} always names the newest version and cannot be moved; pick another alias"
        )
    return alias


@dataclass(frozen=True, slots=True)
class CompiledArtifact:
    """A second, faster form of a version's artifact (e.g. ONNX), kept because it checked out.

    The original artifact stays the source of truth: the compiled one was converted from it
    at push and kept only when its outputs matched the original's on a verification sample.
    """

    format: str
    """Runtime that loads it (e.g. "onnx")."""
    digest: str
    """sha256 of the compiled artifact, lowercase hex."""
    size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"format", "digest", "size"}."""
        return {"format": self.format, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One immutable registered version of a model and its provenance."""

    name: str
    version: int
    digest: str
    """sha256 of the artifact, lowercase hex."""
    size: int
    format: str
    signature: Signature
    created_at: datetime
    created_by: str
    source: str
    """File name the artifact was pushed from (no directories)."""
    pickle: bool
    """True when loading the artifact can run code (pickle, joblib, cloudpickle)."""
    trusted_pickle: bool
    """True when the pusher vouched for a pickle-family artifact (`--trust-pickle`)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    compiled: CompiledArtifact | None = None
    """The compiled form of the artifact, when one was made at push and passed its check."""
    compile_report: dict[str, Any] | None = None
    """The conversion and verification report, whenever compilation was asked for at push
    (also when the compiled form was not kept: the report says why)."""
    created_host: str = ""
    """Host the version was pushed from (empty for versions pushed before it was recorded)."""
    reference_profile: dict[str, Any] | None = None
    """JSON form of the reference data's profile (monitoring.reference_profile), which
    drift is measured against; None when the version was pushed without reference data."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as `models show --json` prints it."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "size": self.size,
            "format": self.format,
            "signature": self.signature.to_dict(),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "source": self.source,
            "pickle": self.pickle,
            "trusted_pickle": self.trusted_pickle,
            "metadata": dict(self.metadata),
            "compiled": None if self.compiled is None else self.compiled.to_dict(),
            "compile_report": self.compile_report,
            "created_host": self.created_host,
            "reference_profile": self.reference_profile,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a model's history: a push, an alias move, a load, an unload, a batch job."""

    id: int
    name: str
    kind: str
    """push, alias, rollback, unalias, load, load_failed, unload or batch (a batch job)."""
    at: datetime
    actor: str
    """Who did it: the user for CLI actions, `server` for what a server did."""
    host: str
    alias: str | None = None
    from_version: int | None = None
    to_version: int | None = None
    reason: str | None = None
    detail: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as `models history --json` prints it."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "host": self.host,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "reason": self.reason,
            "detail": self.detail,
        }
