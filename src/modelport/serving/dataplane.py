"""Health, metadata, inference and repository actions: the one path REST and gRPC share."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from modelport import __version__
from modelport.config import ServeSettings
from modelport.errors import (
    DeadlineExceeded,
    InternalError,
    ModelportError,
    NotFound,
    NotReady,
    Unsupported,
)
from modelport.protocol.types import InferRequest, InferResponse, Tensor
from modelport.registry.manifest import ModelVersion, version_number
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_artifact
from modelport.serving.batching import Batcher, policy_for
from modelport.serving.catalog import Catalog, LoadedModel
from modelport.serving.compilation import verification_sample
from modelport.serving.executor import Executor
from modelport.serving.limits import check_queue, check_size, time_limit
from modelport.serving.telemetry import Call, NoTelemetry, Telemetry, Timing

log = logging.getLogger("modelport.dataplane")
audit = logging.getLogger("modelport.audit")
"""One record per admin action over the API (load, unload): who, what, from where, outcome."""

FOLLOW_SECONDS = 1.0
"""How often each server process checks the registry for new versions and alias moves."""
RETIRE_POLL_SECONDS = 0.01
_SECRET_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)

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
        telemetry: Telemetry | None = None,
    ) -> None:
        self._registry = registry
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._catalog = catalog
        self._executor = executor
        self._settings = settings if settings is not None else ServeSettings()
        self._ready = False
        self._failures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._selection: dict[str, str] = {}
        """Start-up selection: model name -> pinned version ("" follows the registry)."""
        self._counter = 0
        self._given_up: set[tuple[str, int]] = set()
        """Versions that failed to load or warm up: not retried (push a new version)."""
        self._retiring: set[asyncio.Future[None]] = set()

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
        failure = self._failures.get(name)
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
                "modelport.source": mv.source,
                "modelport.trusted_pickle": mv.trusted_pickle,
                "modelport.aliases": ",".join(self._catalog.aliases_of(model)),
                **({} if failure is None else {"modelport.load_error": failure}),
                **public_metadata(mv.metadata),
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

    def shed(self, name: str, version: str | None) -> None:
        """Overloaded when the model that would answer cannot take another request now.

        Transports ask before they read and decode a request, so that shedding under overload
        costs next to nothing; `infer` checks again.
        """
        model = self._catalog.get(name, version)
        if model is not None:
            check_queue(model)
            self._telemetry.admit(model.name)

    async def infer(
        self,
        name: str,
        version: str | None,
        request: InferRequest,
        request_id: str,
        call: Call | None = None,
    ) -> InferResponse:
        """Validate `request` against the model's signature, predict, and stamp provenance.

        `call`, when given, receives the version that answered and the validated inputs and
        the outputs, for the telemetry.
        """
        model = await self.resolve(name, version)
        if call is not None:
            call.model = model.name
            call.version = model.number
            call.digest = model.version.digest
        self._telemetry.admit(model.name)
        check_size(request, self._settings)
        inputs = model.validator.inputs(request)
        wanted = model.validator.outputs(request) or model.output_names
        timing = None
        if call is not None and self._telemetry.traces:
            timing = call.timing = Timing()
        seconds = time_limit(request, call, self._settings)
        check_queue(model)
        model.in_flight += 1
        try:
            if seconds is None:
                arrays = await model.batcher.predict(inputs, wanted, timing)
            else:
                async with asyncio.timeout(seconds):
                    arrays = await model.batcher.predict(inputs, wanted, timing)
        except TimeoutError:
            raise DeadlineExceeded(
                f"model {model.name!r} version {model.number} did not answer within "
                f"{seconds:.3g} s; retry later, or allow more time (the `timeout` parameter, "
                "in microseconds)"
            ) from None
        finally:
            model.in_flight -= 1
        outputs = []
        for out in wanted:
            datatype, dtype = model.output_types[out]
            array = arrays[out]
            if array.dtype != dtype:
                array = array.astype(dtype)
            outputs.append(Tensor(out, datatype, array.shape, array))
        if call is not None:
            call.inputs = inputs
            call.outputs = {t.name: t.data for t in outputs}
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

        `selection` holds NAME or NAME:VERSION items; empty means every model. Each model
        loads its newest version and every version an alias names (NAME:VERSION pins one
        version). A version that fails to load or warm up is logged, recorded in the model's
        history and left out; the rest still load.
        """
        try:
            self._selection = {name: version for name, _, version in map(_split, selection)}
            self._counter = self._registry.change_counter()
            for name, (versions, aliases) in self._plan().items():
                for number in sorted(versions):
                    model = self._load_version(name, number, warm_up=False)
                    if model is not None:
                        self._catalog.add(model)
                self._catalog.set_aliases(name, aliases)
        finally:
            self._ready = True

    async def follow(self, interval: float = FOLLOW_SECONDS) -> None:
        """Follow the registry until cancelled: new versions load, alias moves switch traffic.

        Polls the registry's change counter every `interval` seconds; on a change, `sync`.
        A registry that cannot be reached is logged and retried; loaded models keep serving.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                counter = await self._executor.run(self._registry.change_counter)
                if counter != self._counter:
                    await self.sync()
                    # Only once synced: a sync that failed is tried again next time.
                    self._counter = counter
            except Exception:
                log.warning("cannot read the registry; serving what is loaded", exc_info=True)

    async def sync(self) -> None:
        """Bring what is served in line with the registry, one model at a time.

        For each model: load (and warm up) the versions it should serve that are not loaded,
        then switch its routes to the registry's aliases, then retire the versions no longer
        wanted once their in-flight requests are done. Never unload before load: a version
        that fails to load never takes traffic, and what served before keeps serving.
        """
        plan = await self._executor.run(self._plan)
        for name, (versions, aliases) in plan.items():
            loaded = {m.number for m in self._catalog.versions(name)}
            before = self._catalog.get(name)
            for number in sorted(versions - loaded):
                if (name, number) in self._given_up:
                    continue
                model = await self._executor.run(self._load_version, name, number, True)
                if model is not None:
                    self._catalog.add(model)
            # Routes switch here, between two requests: each is served by one version.
            self._catalog.set_aliases(name, aliases)
            serving = self._catalog.get(name)
            if serving is not None and serving is not before:
                log.info("%s: requests now go to version %d", name, serving.number)
            for number in sorted(loaded - versions):
                # Kept while it serves the default route (its replacement failed to load).
                if serving is not None and number != serving.number:
                    retired = self._catalog.remove(name, number)
                    task = asyncio.ensure_future(self._retire(retired))
                    self._retiring.add(task)  # held until done, so it is not collected
                    task.add_done_callback(self._retiring.discard)

    def _plan(self) -> dict[str, tuple[set[int], dict[str, int]]]:
        """Model name -> (versions to serve, aliases), as the registry says now."""
        newest = {mv.name: mv.version for mv in self._registry.latest()}
        names = list(self._selection) if self._selection else sorted(newest)
        plan: dict[str, tuple[set[int], dict[str, int]]] = {}
        for name in names:
            try:
                if name not in newest:
                    self._registry.get(name)  # NotFound, with the advice it carries
                aliases = self._registry.aliases(name)
                pinned = self._selection.get(name)
                if pinned:
                    number = _number(name, pinned)
                    plan[name] = ({number}, {a: v for a, v in aliases.items() if v == number})
                else:
                    plan[name] = ({newest[name], *aliases.values()}, aliases)
            except ModelportError as exc:
                self._failures[name] = exc.message
                log.error("cannot serve %s: %s", name, exc.message)
        return plan

    async def _retire(self, model: LoadedModel) -> None:
        """Close a version taken out of the routes once its last request has left."""
        while model.in_flight:
            await asyncio.sleep(RETIRE_POLL_SECONDS)
        await model.batcher.close()
        await self._executor.run(model.runtime.close)
        await self._executor.run(self._event, model.name, "unload", model.number)
        log.info("unloaded %s version %d", model.name, model.number)

    def _load_version(self, name: str, number: int, warm_up: bool) -> LoadedModel | None:
        """Load one version and record the load in its history (blocking).

        None when it failed to load or warm up: that is logged, recorded as load_failed and
        not tried again.
        """
        try:
            started = time.perf_counter()
            mv = self._registry.get(name, number)
            model = self._build(mv, warm_up)
            self._telemetry.loaded(mv, time.perf_counter() - started)
        except ModelportError as exc:
            log.error("could not load %s:%d: %s", name, number, exc.message)
            self._given_up.add((name, number))
            self._event(name, "load_failed", number, detail={"error": exc.message})
            return None
        self._event(name, "load", number)
        return model

    def _event(
        self,
        name: str,
        kind: str,
        number: int,
        actor: str = "server",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record what this server did in the model's history; a failure only logs."""
        try:
            self._registry.record_event(
                name,
                kind,
                actor=actor,
                version=number,
                detail={**(detail or {}), "pid": os.getpid()},
            )
        except Exception:
            log.warning("could not record %s of %s:%d in the registry", kind, name, number)

    async def load(
        self, name: str, version: str | None = None, *, actor: str = "server"
    ) -> LoadedModel:
        """Load a version (default: newest registered) unless it is already loaded.

        `actor` (who asked, and from where) is written to the audit log and the model's history.
        """
        try:
            self._one_process("loading")
            mv = await self._registered(name, version)
            lock = self._locks.setdefault(name, asyncio.Lock())
            async with lock:
                existing = self._catalog.get(name, str(mv.version))
                if existing is not None:
                    model = existing
                else:
                    started = time.perf_counter()
                    model = await self._executor.run(self._build, mv)
                    self._telemetry.loaded(mv, time.perf_counter() - started)
                    self._catalog.add(model)
                    await self._executor.run(self._event, name, "load", mv.version, actor)
        except ModelportError as exc:
            _audited("load", name, version, actor, exc.message)
            raise
        _audited("load", name, str(model.number), actor, "done")
        return model

    def _build(self, mv: ModelVersion, warm_up: bool = False) -> LoadedModel:
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
        model.max_queue = overrides.max_queue or self._settings.max_queue
        model.batcher = Batcher(
            model.predict,
            model.output_names,
            self._executor,
            policy,
            on_call=partial(self._telemetry.batch, name, mv.version),
            inline=runtime.steady,
        )
        try:
            if warm_up:
                _warm_up(model)
        except ModelportError as exc:
            self._failures[name] = exc.message
            raise
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

    async def unload(
        self, name: str, version: str | None = None, *, actor: str = "server"
    ) -> list[int]:
        """Unload one version, or every loaded version of `name`; returns the numbers unloaded.

        `actor` (who asked, and from where) is written to the audit log and the model's history.
        """
        try:
            numbers = await self._unload(name, version, actor)
        except ModelportError as exc:
            _audited("unload", name, version, actor, exc.message)
            raise
        _audited("unload", name, ",".join(map(str, numbers)) or version, actor, "done")
        return numbers

    async def _unload(self, name: str, version: str | None, actor: str) -> list[int]:
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
            await self._executor.run(self._event, name, "unload", model.number, actor)
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
        return await self._executor.run(self._registry.resolve, name, version)


def _audited(action: str, name: str, version: str | None, actor: str, outcome: str) -> None:
    audit.info(
        "%s %s version %s by %s: %s", action, name, version or "newest", actor or "-", outcome
    )


def _split(item: str) -> tuple[str, str, str]:
    return item.partition(":")


def _number(name: str, version: str) -> int:
    """The version number a selection names; NotFound if it is not one."""
    number = version_number(version)
    if number is None:
        raise NotFound(f"model {name!r} has no version {version!r}; versions are numbers from 1")
    return number


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The pusher's metadata as `meta.KEY` parameters, leaving out keys that look secret."""
    return {
        f"meta.{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
        if not _SECRET_KEY.search(key)
    }


def _warm_up(model: LoadedModel) -> None:
    """One predict on a sample built from the signature; InternalError if the model fails it."""
    signature = model.version.signature
    first = signature.inputs[0].shape[:1] if signature.inputs else ()
    rows = first[0] if first and first[0] > 0 else 1
    try:
        sample, _ = verification_sample(signature, rows=rows)
    except ModelportError as exc:
        log.info("no warm-up for %s:%d: %s", model.name, model.number, exc.message)
        return
    try:
        model.predict(sample, model.output_names)
    except Exception as exc:
        model.runtime.close()
        detail = exc.message if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"
        raise InternalError(
            f"version {model.number} failed its warm-up predict on a sample built from its "
            f"signature, so it takes no traffic: {detail[:300]}"
        ) from exc
