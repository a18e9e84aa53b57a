"""Health, metadata, inference and repository actions: the one path REST and gRPC share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from modelport import __version__
from modelport.config import ServeSettings
from modelport.errors import InternalError, ModelportError, NotFound, NotReady, Unsupported
from modelport.protocol.types import InferRequest, InferResponse, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact
from modelport.serving.batching import Batcher, policy_for
from modelport.serving.catalog import Catalog, LoadedModel, version_number
from modelport.serving.executor import Executor

log = logging.getLogger("modelport.dataplane")

EXTENSIONS = ("binary_tensor_data", "model_repository")
SERVER_NAME = "modelport"


class DataPlane:
    """Everything the server can be asked, independent of transport."""

    def __init__(
        self,
        registry: Registry,
        catalog: Catalog,
        executor: Executor,
        settings: ServeSettings | None = None,
    ) -> None:
        self._registry = registry
        self._catalog = catalog
        self._executor = executor
        self._settings = settings if settings is not None else ServeSettings()
        self._ready = False
        self._failures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- health and metadata -------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and answering."""
        return True

    def ready(self) -> bool:
        """Start-up loading has finished."""
        return self._ready

    def server_metadata(self) -> dict[str, Any]:
        """OIP server metadata: name, version and the extensions offered."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    async def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """OIP model metadata for a loaded version, with provenance in `parameters`."""
        model = await self.resolve(name, version)
        mv = model.version
        return {
            "name": mv.name,
            "versions": [str(m.number) for m in self._catalog.versions(mv.name)],
            "platform": f"modelport_{mv.format}",
            "inputs": [s.to_dict() for s in mv.signature.inputs],
            "outputs": [s.to_dict() for s in mv.signature.outputs],
            "parameters": {
                **model.provenance,
                "modelport.version": str(mv.version),
                "modelport.format": mv.format,
                "modelport.created_at": mv.created_at.isoformat(),
            },
        }

    async def model_ready(self, name: str, version: str | None) -> bool:
        """True when the version is loaded; NotFound when the registry has no such model."""
        if self._catalog.get(name, version) is not None:
            return True
        await self._registered(name, version)
        return False

    # -- inference -----------------------------------------------------------------------

    async def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The loaded model that answers `name[/versions/version]`, or a NotFound/NotReady."""
        model = self._catalog.get(name, version)
        if model is not None:
            return model
        mv = await self._registered(name, version)
        reason = self._failures.get(name)
        detail = f" (loading failed: {reason})" if reason else ""
        raise NotReady(
            f"model {name!r} version {mv.version} is registered but not loaded{detail}; "
            f"load it with POST /v2/repository/models/{name}/load"
        )

    async def infer(
        self, name: str, version: str | None, request: InferRequest, request_id: str
    ) -> InferResponse:
        """Validate `request` against the model's signature, predict, and stamp provenance."""
        model = await self.resolve(name, version)
        inputs = model.validator.inputs(request)
        wanted = model.validator.outputs(request) or model.output_names
        arrays = await model.batcher.predict(inputs, wanted)
        outputs = []
        for out in wanted:
            datatype, dtype = model.output_types[out]
            array = arrays[out]
            if array.dtype != dtype:
                array = array.astype(dtype)
            outputs.append(Tensor(out, datatype, array.shape, array))
        parameters = dict(model.provenance)
        parameters["modelport.request_id"] = request_id
        return InferResponse(
            model_name=model.name,
            model_version=str(model.number),
            id=request.id if request.id is not None else request_id,
            outputs=outputs,
            parameters=parameters,
        )

    # -- repository ----------------------------------------------------------------------

    def preload(self, selection: Sequence[str] = ()) -> None:
        """Load the start-up models synchronously (before any event loop or fork), then be ready.

        `selection` holds NAME or NAME:VERSION items; empty means the newest version of each
        model. A model that fails is logged and listed as unavailable; the rest still load.
        """
        try:
            if selection:
                wanted = [item.partition(":")[::2] for item in selection]
            else:
                wanted = [(mv.name, str(mv.version)) for mv in self._registry.latest()]
            for name, version in wanted:
                try:
                    model = self._build(self._registry.get(name, _number(name, version or None)))
                except ModelportError as exc:
                    shown = f"{name}:{version}" if version else name
                    log.error("could not load %s: %s", shown, exc)
                    continue
                self._catalog.add(model)
        finally:
            self._ready = True

    async def load(self, name: str, version: str | None = None) -> LoadedModel:
        """Load a version (default: newest registered) unless it is already loaded."""
        self._one_process("loading")
        mv = await self._registered(name, version)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            existing = self._catalog.get(name, str(mv.version))
            if existing is not None:
                return existing
            model = await self._executor.run(self._build, mv)
            self._catalog.add(model)
            return model

    def _build(self, mv: ModelVersion) -> LoadedModel:
        """Load a version's runtime and wrap it for serving; failures are remembered by name."""
        name = mv.name
        try:
            overrides = self._settings.for_model(name)
            compiled = self._settings.compiled if overrides.compiled is None else overrides.compiled
            loaded = load_artifact(self._registry, mv, prefer_compiled=compiled)
            runtime = loaded.runtime
            policy = policy_for(
                mv.signature,
                runtime.row_independent,
                mv.metadata,
                overrides,
                enabled=self._settings.batching,
            )
        except ModelportError as exc:
            self._failures[name] = exc.message
            raise
        except Exception as exc:
            # A third-party runtime may raise anything; the server must stay up.
            log.exception("runtime %r failed to load %s:%d", mv.format, name, mv.version)
            message = (
                f"the {mv.format} runtime failed to load version {mv.version} "
                f"({type(exc).__name__}); the server log has details"
            )
            self._failures[name] = message
            raise InternalError(message) from exc
        model = LoadedModel(mv, runtime, mv.compiled if loaded.compiled else None)
        model.batcher = Batcher(model.predict, model.output_names, self._executor, policy)
        self._failures.pop(name, None)
        batching = f"up to {policy.max_batch_size} rows" if policy.enabled else "off"
        log.info(
            "loaded %s version %d (sha256 %s; batching %s)",
            name,
            mv.version,
            mv.digest[:12],
            batching,
        )
        return model

    async def unload(self, name: str, version: str | None = None) -> list[int]:
        """Unload one version, or every loaded version of `name`; returns the numbers unloaded."""
        self._one_process("unloading")
        loaded = self._catalog.versions(name)
        if not loaded:
            await self._registered(name, version)
            return []
        if version is not None:
            loaded = [m for m in loaded if str(m.number) == version]
            if not loaded:
                raise NotFound(f"version {version!r} of model {name!r} is not loaded")
        for model in loaded:
            self._catalog.remove(name, model.number)
            await self._executor.run(model.runtime.close)
        return [m.number for m in loaded]

    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """One entry per loaded version, plus registered models with nothing loaded."""
        entries: list[dict[str, Any]] = []
        for mv in await self._executor.run(self._registry.latest):
            loaded = self._catalog.versions(mv.name)
            for model in loaded:
                entries.append(
                    {"name": mv.name, "version": str(model.number), "state": "READY", "reason": ""}
                )
            if not loaded and not ready_only:
                reason = self._failures.get(mv.name, "not loaded")
                entries.append(
                    {
                        "name": mv.name,
                        "version": str(mv.version),
                        "state": "UNAVAILABLE",
                        "reason": reason,
                    }
                )
        return entries

    async def close(self) -> None:
        """Unload every model."""
        for model in list(self._catalog):
            self._catalog.remove(model.name, model.number)
            model.runtime.close()

    def _one_process(self, action: str) -> None:
        # A request reaches one worker; changing what one worker serves would split the fleet.
        if self._settings.workers > 1:
            raise Unsupported(
                f"{action} models on a running server with {self._settings.workers} workers is "
                "not offered; choose the models at start (--model) or serve with one worker"
            )

    async def _registered(self, name: str, version: str | None) -> ModelVersion:
        return await self._executor.run(self._registry.get, name, _number(name, version))


def _number(name: str, version: str | None) -> int | None:
    """The version number a path or selection names (None: the newest); NotFound if invalid."""
    if version is None:
        return None
    number = version_number(version)
    if number is None:
        raise NotFound(f"model {name!r} has no version {version!r}; versions are numbers from 1")
    return number
