"""Health, metadata, inference and repository actions: the one path REST and gRPC share."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from modelport import __version__
from modelport.config import LimitSettings
from modelport.errors import DeadlineExceeded, ModelportError, NotFound, NotReady, Unsupported
from modelport.protocol.metadata import IndexEntry, ModelMetadata, ServerMetadata, TensorMetadata
from modelport.protocol.types import InferRequest, InferResponse, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.serving.catalog import LoadedModel
from modelport.serving.lifecycle import Lifecycle
from modelport.serving.limits import check_queue, check_size, time_limit
from modelport.serving.reports import NoReports, Reports
from modelport.serving.telemetry import Call, Timing

audit = logging.getLogger("modelport.audit")
"""One record per admin action over the API (load, unload): who, what, from where, outcome."""

_SECRET_KEY = re.compile(r"pass|secret|token|credential|key", re.IGNORECASE)

EXTENSIONS = ("binary_tensor_data", "model_repository")
SERVER_NAME = "modelport"


class DataPlane:
    """Everything the server can be asked, independent of transport.

    It answers from the catalog its `lifecycle` fills, and asks the lifecycle to load and
    unload; `limits` bound each request, and with several `workers` the repository actions,
    which would change one worker only, are refused. `reports` answers what the telemetry
    recorded (metrics, drift, feedback).
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        limits: LimitSettings | None = None,
        *,
        workers: int = 1,
        reports: Reports | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self.stopping = False
        """Set by `stop_accepting` once the server has begun to stop."""
        self._registry = lifecycle.registry
        self._catalog = lifecycle.catalog
        self._executor = lifecycle.executor
        self._telemetry = lifecycle.telemetry
        self._limits = limits if limits is not None else LimitSettings()
        self._workers = workers
        self._reports: Reports = reports if reports is not None else NoReports()
        self._failures = lifecycle.failures
        """Model name -> why it failed to load, as the lifecycle keeps it (read only here)."""

    @property
    def lifecycle(self) -> Lifecycle:
        """What loads, follows and retires the versions this dataplane serves."""
        return self._lifecycle

    # -- health and metadata -------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and answering."""
        return True

    def ready(self) -> bool:
        """Start-up loading has finished and the server is not stopping."""
        return self._lifecycle.ready and not self.stopping

    def stop_accepting(self) -> None:
        """The server is stopping: from now on it is not ready, so that probes take it out
        of a load balancer while it finishes what it has."""
        self.stopping = True

    def server_metadata(self) -> ServerMetadata:
        """OIP server metadata: name, version and the extensions offered."""
        return ServerMetadata(SERVER_NAME, __version__, list(EXTENSIONS))

    async def model_metadata(self, name: str, version: str | None) -> ModelMetadata:
        """OIP model metadata for a loaded version, with provenance in `parameters`."""
        model = await self.resolve(name, version)
        mv = model.version
        failure = self._failures.get(name)
        return ModelMetadata(
            name=mv.name,
            versions=[str(m.number) for m in self._catalog.versions(mv.name)],
            platform=f"modelport_{mv.format}",
            inputs=[TensorMetadata(s.name, s.datatype, list(s.shape)) for s in mv.signature.inputs],
            outputs=[
                TensorMetadata(s.name, s.datatype, list(s.shape)) for s in mv.signature.outputs
            ],
            parameters={
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
        )

    async def model_ready(self, name: str, version: str | None) -> bool:
        """True when the version is loaded; NotFound when the registry has no such model."""
        if self._catalog.get(name, version) is not None:
            return True
        await self._registered(name, version)
        return False

    # -- inference -----------------------------------------------------------------------

    async def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The loaded model that answers `name[/versions/version]`, or why none does.

        NotFound for an unknown model, version or alias, and for a version an operator
        unloaded (a client error: nothing will serve it until someone loads it); NotReady
        while it is loading, and when its load failed (this process cannot serve it; another
        replica may). Both messages say what to do.
        """
        model = self._catalog.get(name, version)
        if model is not None:
            return model
        mv = await self._registered(name, version)
        raise self._not_served(mv)

    def _not_served(self, mv: ModelVersion) -> ModelportError:
        """Why the registered version `mv` is not loaded, as the error a request gets."""
        name, number = mv.name, mv.version
        what = f"model {name!r} version {number}"
        load = f"POST /v2/repository/models/{name}/load"
        if self._lifecycle.loading(name, number):
            return NotReady(f"{what} is loading; retry shortly")
        if self._lifecycle.unloaded(name, number):
            return NotFound(f"{what} was unloaded; load it with {load}")
        failure = self._lifecycle.failure(name, number)
        if failure is not None:
            return NotReady(
                f"{what} failed to load on this server ({failure}); push a fixed version, "
                f"or load it again with {load}"
            )
        return NotReady(f"{what} is registered but not loaded; load it with {load}")

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
        check_size(request, self._limits)
        inputs = model.validator.inputs(request)
        wanted = model.validator.outputs(request) or model.output_names
        timing = None
        if call is not None and self._telemetry.traces:
            timing = call.timing = Timing()
        seconds = time_limit(request, call, self._limits)
        check_queue(model)
        model.enter()
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
            model.leave()
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

    # -- what the telemetry recorded --------------------------------------------------------

    def metrics_page(self) -> bytes:
        """The Prometheus text exposition of every server process; NotFound when metrics are off."""
        # Read at the scrape from the server's shared counts, so every process's scrape shows
        # the whole server's requests in flight as they are now.
        in_flight = {(m.name, m.number): m.waiting() for m in self._catalog}
        page = self._reports.metrics_page(in_flight)
        if page is None:
            raise NotFound("metrics are off on this server (it was started with --no-metrics)")
        return page

    async def drift(self, name: str, version: str | None) -> dict[str, Any]:
        """Drift of recent inputs to the loaded version from its reference profile."""
        model = await self.resolve(name, version)
        return self._reports.drift(model.version)

    async def feedback(self, model: LoadedModel, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record true labels for `model`'s logged predictions; the live scores they give.

        The caller resolves the model first, so that an unknown one is refused before its
        body is read.
        """
        return await self._reports.feedback(model.name, body)

    # -- repository ----------------------------------------------------------------------

    async def load(
        self, name: str, version: str | None = None, *, actor: str = "server"
    ) -> LoadedModel:
        """Load a version (default: newest registered) unless it is already loaded.

        `actor` (who asked, and from where) is written to the audit log and the model's history.
        """
        try:
            self._one_process("loading")
            mv = await self._registered(name, version)
            model = await self._lifecycle.load(mv, actor)
        except ModelportError as exc:
            _audited("load", name, version, actor, exc.message)
            raise
        _audited("load", name, str(model.number), actor, "done")
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
        await self._lifecycle.unload(loaded, actor)
        return [m.number for m in loaded]

    async def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        """One entry per loaded version, plus registered models with nothing loaded."""
        entries: list[IndexEntry] = []
        for mv in await self._executor.run(self._registry.latest):
            loaded = self._catalog.versions(mv.name)
            for model in loaded:
                entries.append(IndexEntry(mv.name, str(model.number), "READY", ""))
            if not loaded and not ready_only:
                if self._lifecycle.unloaded(mv.name, mv.version):
                    reason = self._not_served(mv).message
                else:
                    reason = self._failures.get(mv.name, "not loaded")
                entries.append(IndexEntry(mv.name, str(mv.version), "UNAVAILABLE", reason))
        return entries

    def _one_process(self, action: str) -> None:
        # A request reaches one worker; changing what one worker serves would split the fleet.
        if self._workers > 1:
            raise Unsupported(
                f"{action} models on a running server with {self._workers} workers is "
                "not offered; choose the models at start (--model) or serve with one worker"
            )

    async def _registered(self, name: str, version: str | None) -> ModelVersion:
        return await self._executor.run(self._registry.resolve, name, version)


def _audited(action: str, name: str, version: str | None, actor: str, outcome: str) -> None:
    audit.info(
        "%s %s version %s by %s: %s", action, name, version or "newest", actor or "-", outcome
    )


def public_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The pusher's metadata as `meta.KEY` parameters, leaving out keys that look secret."""
    return {
        f"meta.{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
        if not _SECRET_KEY.search(key)
    }
