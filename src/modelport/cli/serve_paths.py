"""`modelport serve PATH...`: register what PATH holds, then serve it; SageMaker's `serve`."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelport.config import SageMakerContainer, ServeSettings, current_user


def sagemaker_settings(container: SageMakerContainer) -> dict[str, Any]:
    """The serve settings SageMaker's container contract asks for (flags still override them).

    SageMaker reaches the container from outside on its port (every address, not loopback),
    and authenticates every call to the endpoint before it does (so no credential of the
    server's own, and any Host name); it speaks HTTP only, so gRPC is off.
    """
    return {
        "host": "0.0.0.0",  # noqa: S104  (SageMaker calls the container from outside)
        "http_port": container.port,
        "grpc_port": 0,
        "allow_insecure": True,
        "allowed_hosts": ("*",),
    }


def serve_paths(
    settings: ServeSettings,
    paths: Sequence[Path],
    stack: contextlib.ExitStack,
    *,
    model_name: str | None,
    format: str | None,
    trust_pickle: bool,
    own_registry: bool,
    echo: Callable[[str], None],
) -> ServeSettings:
    """Register the models `paths` hold and return `settings` serving exactly those versions.

    They go to `settings.registry` when `own_registry` (one was named), else to a temporary
    registry under the system's temp directory that `stack` removes. Each model is echoed
    with the version it is served as.
    """
    from modelport.errors import InvalidInput
    from modelport.intake.model_paths import find_models, register_models
    from modelport.registry.store import Registry

    if settings.models.selection:
        raise InvalidInput(
            "--model picks models of a registry; with PATH the server serves what PATH holds "
            "(leave out --model, or PATH)"
        )
    found = find_models(paths, model_name, format)
    location = settings.registry
    if not own_registry:
        location = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="modelport-serve-", ignore_cleanup_errors=True)
        )
    with Registry.open(location) as store:
        versions = register_models(
            store, found, created_by=current_user(), trust_pickle=trust_pickle
        )
    if not own_registry:
        echo(
            f"temporary registry {location}: removed at exit with its inference log "
            "(--registry DIR keeps both)"
        )
    for model, mv in zip(found, versions, strict=True):
        echo(
            f"serving {model.shown} as model {mv.name!r} version {mv.version} "
            f"({mv.format}, sha256 {mv.digest[:12]})"
        )
    selection = tuple(f"{mv.name}:{mv.version}" for mv in versions)
    return dataclasses.replace(
        settings,
        registry=location,
        models=dataclasses.replace(settings.models, selection=selection),
    )
