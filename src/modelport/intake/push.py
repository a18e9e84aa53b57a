"""Pushing an artifact: load it once to infer its signature, optionally compile it, register it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.intake.compilation import Compilation, Reference, compile_model
from modelport.protocol.signature import Signature
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.registry.trust import is_pickle_family
from modelport.runtimes.discovery import detect_format, runtime_class

PICKLE_REFUSAL = (
    "{what} can run arbitrary code when loaded (a pickle, joblib or cloudpickle file, or a "
    "skops file holding types skops does not trust by default); push it with --trust-pickle "
    "only if you trust its origin, or save the model with ONNX or the library's native format"
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
    compile: str | None = None,
    reference: Reference | None = None,
    profile: Callable[[Signature], Mapping[str, Any]] | None = None,
) -> ModelVersion:
    """Register `path` as the next version of `name` and return it.

    `profile`, when given, makes the version's reference profile (for drift monitoring) from
    the signature the push records.

    The artifact is loaded once with its runtime to infer (or check) the signature; a
    pickle-family file is refused before anything loads it unless `trust_pickle` is set.

    With `compile` (e.g. "onnx") the model is also converted and checked against itself on
    `reference` rows (else rows generated from the signature; see intake.compilation). The
    version records the report either way, and the compiled artifact only when every output
    agreed; a model that cannot be compiled is still registered. InvalidInput for an unknown
    target, reference rows that do not fit the signature, or `reference` without `compile`.
    """
    if not path.is_file():
        raise InvalidInput(f"artifact {path.name!r} is not a readable file")
    if reference is not None and compile is None:
        raise InvalidInput("reference rows are only used to check a compiled model; add compile")
    fmt = format or detect_format(path)
    runtime_cls = runtime_class(fmt)
    pickle = is_pickle_family(path) or runtime_cls.runs_code(path)
    if pickle and not trust_pickle:
        raise UntrustedArtifact(PICKLE_REFUSAL.format(what=repr(path.name)))
    runtime = runtime_cls.load(path, signature, trusted=pickle)
    compilation: Compilation | None = None
    try:
        inferred = runtime.signature
        if compile is not None:
            compilation = compile_model(runtime, target=compile, reference=reference)
    finally:
        runtime.close()
    with tempfile.TemporaryDirectory(prefix="modelport-push-") as tmp:
        compiled = None
        if compilation is not None and compilation.artifact is not None:
            compiled = Path(tmp) / f"compiled.{compilation.target}"
            compiled.write_bytes(compilation.artifact)
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
            compiled=compiled,
            compiled_format=compile or "onnx",
            compile_report=None if compilation is None else compilation.report,
            reference_profile=None if profile is None else profile(inferred),
        )
