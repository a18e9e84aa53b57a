"""Health, metadata, inference and repository actions: the one path REST and gRPC share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelport import __version__
from modelport.errors import InternalError, InvalidInput, ModelportError, NotFound, NotReady
from modelport.protocol.types import InferRequest, InferResponse, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_runtime
from modelport.serving.catalog import Catalog, LoadedModel, version_number
from modelport.serving.executor import Executor

log = logging.getLogger("modelport.dataplane")

EXTENSIONS = ("binary_tensor_data", "model_repository")
SERVER_NAME = "modelport"
_MAX_MODEL_MESSAGE = 400


class DataPlane:
    """Everything the server can be asked, independent of transport."""

    def __init__(self, registry: Registry, catalog: Catalog, executor: Executor) -> None:
        self._registry = registry
        self._catalog = catalog
        self._executor = executor
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
                "modelport.version": str(mv.version),
                "modelport.sha256": mv.digest,
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
        arrays = await self._executor.run(_predict, model, inputs, wanted)
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

    async def load_all(self, selection: Sequence[str] = ()) -> None:
        """Load the start-up models (NAME or NAME:VERSION; none = newest of each); then ready."""
        try:
            if selection:
                for item in selection:
                    name, _, ver = item.partition(":")
                    await self._load_logged(name, ver or None)
            else:
                latest = await self._executor.run(self._registry.latest)
                for mv in latest:
                    await self._load_logged(mv.name, str(mv.version))
        finally:
            self._ready = True

    async def load(self, name: str, version: str | None = None) -> LoadedModel:
        """Load a version (default: newest registered) unless it is already loaded."""
        mv = await self._registered(name, version)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            existing = self._catalog.get(name, str(mv.version))
            if existing is not None:
                return existing
            try:
                runtime = await self._executor.run(load_runtime, self._registry, mv)
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
            model = LoadedModel(mv, runtime)
            self._catalog.add(model)
            self._failures.pop(name, None)
            log.info("loaded %s version %d (sha256 %s)", name, mv.version, mv.digest[:12])
            return model

    async def unload(self, name: str, version: str | None = None) -> list[int]:
        """Unload one version, or every loaded version of `name`; returns the numbers unloaded."""
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

    async def _registered(self, name: str, version: str | None) -> ModelVersion:
        number: int | None = None
        if version is not None:
            number = version_number(version)
            if number is None:
                raise NotFound(
                    f"model {name!r} has no version {version!r}; versions are numbers from 1"
                )
        return await self._executor.run(self._registry.get, name, number)

    async def _load_logged(self, name: str, version: str | None) -> None:
        try:
            await self.load(name, version)
        except ModelportError as exc:
            log.error("could not load %s%s: %s", name, f":{version}" if version else "", exc)


def _predict(
    model: LoadedModel, inputs: dict[str, np.ndarray[Any, Any]], wanted: Sequence[str]
) -> dict[str, np.ndarray[Any, Any]]:
    try:
        return model.runtime.predict(inputs, wanted)
    except ModelportError:
        raise
    except (ValueError, TypeError) as exc:
        # Inputs already match the signature, so what remains is the model refusing the values
        # themselves (NaN, unseen category, ...): the client's to fix, not a server fault.
        message = str(exc)[:_MAX_MODEL_MESSAGE]
        raise InvalidInput(f"model {model.name!r} rejected the input: {message}") from exc
