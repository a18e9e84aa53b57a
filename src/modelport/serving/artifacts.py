"""Artifacts between registry and runtimes: push with an inferred signature, load safely."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.protocol.signature import Signature
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.registry.trust import is_pickle_family
from modelport.runtimes.base import Runtime
from modelport.runtimes.discovery import detect_format, runtime_class

PICKLE_REFUSAL = (
    "{what} is a pickle-family artifact, and loading it can run arbitrary code; "
    "push it with --trust-pickle only if you trust its origin, or save the model "
    "with skops, ONNX or the library's native format"
)


def push_artifact(
    registry: Registry,
    path: Path,
    *,
    name: str,
    created_by: str,
    format: str | None = None,
    signature: Signature | None = None,
    metadata: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
) -> ModelVersion:
    """Register `path` as the next version of `name` and return it.

    The artifact is loaded once with its runtime to infer (or check) the signature; a
    pickle-family file is refused before anything loads it unless `trust_pickle` is set.
    """
    if not path.is_file():
        raise InvalidInput(f"artifact {path.name!r} is not a readable file")
    fmt = format or detect_format(path)
    runtime_cls = runtime_class(fmt)
    pickle = is_pickle_family(path) or runtime_cls.runs_code(path)
    if pickle and not trust_pickle:
        raise UntrustedArtifact(PICKLE_REFUSAL.format(what=repr(path.name)))
    runtime = runtime_cls.load(path, signature, trusted=pickle)
    try:
        inferred = runtime.signature
    finally:
        runtime.close()
    return registry.push(
        path,
        name=name,
        format=fmt,
        signature=inferred,
        metadata=dict(metadata or {}),
        pickle=pickle,
        trusted_pickle=pickle and trust_pickle,
        created_by=created_by,
        source=path.name,
    )


def load_runtime(registry: Registry, version: ModelVersion) -> Runtime:
    """Load a registered version, refusing untrusted pickles and artifacts whose digest changed."""
    if version.pickle and not version.trusted_pickle:
        raise UntrustedArtifact(
            PICKLE_REFUSAL.format(what=f"{version.name} version {version.version}")
        )
    # Re-hash before anything parses the file: a swapped artifact must never load.
    registry.verify(version)
    runtime_cls = runtime_class(version.format)
    return runtime_cls.load(
        registry.artifact_path(version), version.signature, trusted=version.trusted_pickle
    )
