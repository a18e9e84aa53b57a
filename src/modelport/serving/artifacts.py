"""Loading a registered version: its runtime from the compiled or original artifact, verified."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.errors import InvalidInput, Unsupported, UntrustedArtifact
from modelport.intake.nonfinite import guarded
from modelport.intake.push import PICKLE_REFUSAL
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.runtimes.base import Runtime
from modelport.runtimes.discovery import runtime_class


@dataclass(frozen=True, slots=True)
class LoadedArtifact:
    """A registered version's runtime, and which of its artifacts that runtime was loaded from."""

    runtime: Runtime
    format: str
    """Format of the loaded artifact: the version's own, or its compiled form's (e.g. "onnx")."""
    digest: str
    """sha256 of the loaded artifact (the version's digest unless `compiled`)."""
    compiled: bool
    """True when the compiled artifact was loaded instead of the original."""


def load_artifact(
    registry: Registry, version: ModelVersion, *, prefer_compiled: bool = True
) -> LoadedArtifact:
    """Load a registered version, refusing untrusted pickles and artifacts whose digest changed.

    When the version has a compiled artifact and `prefer_compiled` is set, that one is
    loaded (its digest re-checked the same way; a changed file is refused), unless it cannot
    load here (its runtime is not installed, or too old for the graph): then the original,
    which gives the same answers, is loaded instead.
    """
    if version.pickle and not version.trusted_pickle:
        raise UntrustedArtifact(
            PICKLE_REFUSAL.format(what=f"{version.name} version {version.version}")
        )
    compiled = version.compiled
    if prefer_compiled and compiled is not None:
        registry.verify_compiled(version)
        try:
            compiled_cls = runtime_class(compiled.format)
            runtime = compiled_cls.load(registry.compiled_path(version), version.signature)
        except (Unsupported, InvalidInput):
            pass  # the bytes are the verified ones; the original stays the source of truth
        else:
            runtime = guarded(runtime, version.compile_report)
            return LoadedArtifact(runtime, compiled.format, compiled.digest, compiled=True)
    # Re-hash before anything parses the file: a swapped artifact must never load.
    registry.verify(version)
    runtime_cls = runtime_class(version.format)
    runtime = runtime_cls.load(
        registry.artifact_path(version), version.signature, trusted=version.trusted_pickle
    )
    return LoadedArtifact(runtime, version.format, version.digest, compiled=False)


def load_runtime(
    registry: Registry, version: ModelVersion, *, prefer_compiled: bool = True
) -> Runtime:
    """The runtime of `load_artifact(registry, version, prefer_compiled=...)`."""
    return load_artifact(registry, version, prefer_compiled=prefer_compiled).runtime
