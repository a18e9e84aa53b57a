"""The models a batch-job process has loaded, one per registry, name, version and digest."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.errors import UntrustedArtifact
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact
from modelport.serving.catalog import DIRECT, LoadedModel


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which registered version a job scores with; picklable, so workers can load it too."""

    registry: str
    name: str
    version: int
    digest: str
    """The version's artifact digest the job was planned with; a mismatch is refused."""
    compiled: bool = True
    """Load the compiled form when the version has one (as `serve`; `--no-compiled` off)."""


# Per process, by design: each worker of a scale-out scheduler loads a model once, and a job
# scored in-process reuses the model its driver loaded while planning.
_LOADED: dict[ModelRef, LoadedModel] = {}


def cached_model(ref: ModelRef) -> LoadedModel:
    """The loaded model `ref` names, loaded once per process with its digest verified.

    UntrustedArtifact when the registry's version no longer has the planned digest or its
    artifact changed on disk; NotFound when the version is gone.
    """
    loaded = _LOADED.get(ref)
    if loaded is not None:
        return loaded
    with Registry.open(ref.registry, create=False) as store:
        mv = store.get(ref.name, ref.version)
        if mv.digest != ref.digest:
            raise UntrustedArtifact(
                f"{ref.name} version {ref.version} has digest {mv.digest[:12]}, not the "
                f"{ref.digest[:12]} this job was started with; start a new job"
            )
        artifact = load_artifact(store, mv, prefer_compiled=ref.compiled)
    compiled = mv.compiled if artifact.compiled else None
    loaded = LoadedModel(mv, artifact.runtime, compiled, DIRECT)
    _LOADED[ref] = loaded
    return loaded


def forget(ref: ModelRef) -> None:
    """Release a cached model (its runtime closed), e.g. when a job in this process ends."""
    loaded = _LOADED.pop(ref, None)
    if loaded is not None:
        loaded.runtime.close()
