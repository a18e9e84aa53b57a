"""Open Inference Protocol over gRPC: parse, call the dataplane, encode.

The calls run on the worker's event loop, beside REST (so gRPC requests join the same batches),
over modelport's own HTTP/2 front end (`http2`, `grpc_wire`, `grpc_endpoint`): a call costs a
few protobuf operations and one task, with no thread or poller in between.

The service is `inference.GRPCInferenceService` in Triton's layout (proto/inference.proto),
its unary RPCs built from one table and wrapped alike (`grpc_call.unary`: ErrorKind to status
code, once). The request id (`x-request-id` metadata when the client sends a valid one, else
generated) comes back in trailing metadata and, for inferences, in the response parameter
`modelport.request_id`. The standard health service (grpc.health.v1) reports readiness;
server reflection is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, cast

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from modelport.errors import ErrorKind, ModelportError
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action, Guard, OpenGuard
from modelport.serving.requests import internal_error, refuse_load_options
from modelport.serving.telemetry import Call, NoTelemetry, Telemetry
from modelport.transports import grpc_codec
from modelport.transports.grpc_call import (
    REQUEST_ID,
    STATUS,
    Credentials,
    admit,
    credentials_of,
    failed,
    lenient,
    model_name,
    parsed,
    refusal,
    request_id,
    unary,
    version_parameter,
)
from modelport.transports.grpc_endpoint import GrpcEndpoint
from modelport.transports.grpc_gen import inference_pb2 as pb
from modelport.transports.grpc_health import NOT_SERVING, SERVING, HealthService
from modelport.transports.grpc_health import SERVICE as HEALTH_SERVICE
from modelport.transports.grpc_wire import CallContext, Method, StreamHandler

log = logging.getLogger("modelport.grpc")

SERVICE: Final = "inference.GRPCInferenceService"
REFLECTION: Final = "grpc.reflection.v1alpha.ServerReflection"

STREAM_WINDOW: Final = 64
"""Requests of one stream in flight at once; reading the stream waits beyond that."""
GRACE_SECONDS: Final = 5.0
"""On stop, how long running calls may finish before they are cancelled."""

_RPCS: Final = (
    ("ServerLive", Endpoint.HEALTH, Action.HEALTH, "server_live"),
    ("ServerReady", Endpoint.HEALTH, Action.HEALTH, "server_ready"),
    ("ModelReady", Endpoint.READY, Action.METADATA, "model_ready"),
    ("ServerMetadata", Endpoint.SERVER_METADATA, Action.METADATA, "server_metadata"),
    ("ModelMetadata", Endpoint.METADATA, Action.METADATA, "model_metadata"),
    ("ModelInfer", Endpoint.INFER, Action.INFER, "model_infer"),
    ("RepositoryIndex", Endpoint.REPOSITORY, Action.METADATA, "repository_index"),
    ("RepositoryModelLoad", Endpoint.REPOSITORY, Action.ADMIN, "repository_model_load"),
    ("RepositoryModelUnload", Endpoint.REPOSITORY, Action.ADMIN, "repository_model_unload"),
)
"""Each unary RPC: the endpoint it is counted under (the same names as over REST), what it
does as far as permissions go (the same policy as over REST), and the method that answers it.
Its request and response messages are `pb.<Rpc>Request` and `pb.<Rpc>Response`."""


class InferenceService:
    """The RPCs of `inference.GRPCInferenceService`, each a thin call into the dataplane."""

    def __init__(
        self,
        dataplane: DataPlane,
        telemetry: Telemetry | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._dp = dataplane
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._guard: Guard = guard if guard is not None else OpenGuard()

    def methods(self) -> dict[str, Method]:
        """Path -> method, with the protobuf parsing and serializing of each message."""
        methods: dict[str, Method] = {}
        for rpc, endpoint, action, method in _RPCS:
            methods[f"/{SERVICE}/{rpc}"] = Method(
                lenient(getattr(pb, f"{rpc}Request")),
                getattr(pb, f"{rpc}Response").SerializeToString,
                unary=unary(getattr(self, method), endpoint, action, self._telemetry, self._guard),
            )
        methods[f"/{SERVICE}/ModelStreamInfer"] = Method(
            lenient(pb.ModelInferRequest),
            pb.ModelStreamInferResponse.SerializeToString,
            stream=self.model_stream_infer,
        )
        return methods

    # -- health and metadata -------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, call: Call) -> pb.ServerLiveResponse:
        """The process answers."""
        return pb.ServerLiveResponse(live=self._dp.live())

    async def server_ready(
        self, request: pb.ServerReadyRequest, call: Call
    ) -> pb.ServerReadyResponse:
        """Start-up loading has finished."""
        return pb.ServerReadyResponse(ready=self._dp.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, call: Call) -> pb.ModelReadyResponse:
        """ready=false, not an error, for an unknown model: tritonclient raises on any error."""
        try:
            ready = await self._dp.model_ready(model_name(request.name), request.version or None)
        except ModelportError as exc:
            if exc.kind is not ErrorKind.NOT_FOUND:
                raise
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, call: Call
    ) -> pb.ServerMetadataResponse:
        """Server name, version and extensions."""
        meta = self._dp.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta.name, version=meta.version, extensions=meta.extensions
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        """Inputs, outputs, versions, and provenance in `parameters`."""
        meta = await self._dp.model_metadata(model_name(request.name), request.version or None)
        return grpc_codec.encode_model_metadata(meta)

    # -- inference -----------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        """One inference through the dataplane (validation, batching, provenance)."""
        self._dp.shed(model_name(request.model_name), request.model_version or None)
        decoded = grpc_codec.decode_request(request)
        response = await self._dp.infer(
            model_name(request.model_name),
            request.model_version or None,
            decoded,
            call.request_id,
            call,
        )
        return grpc_codec.encode_response(response, typed=not request.raw_input_contents)

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: CallContext
    ) -> AsyncGenerator[pb.ModelStreamInferResponse, None]:
        """Answer each request of the stream in order; a failed one gets an error_message.

        Up to STREAM_WINDOW requests run at once (so they can share batches); the answers
        still come back in the order the requests arrived.
        """
        base = request_id(context)
        credentials = credentials_of(context)
        stream_call = Call("grpc", base, caller=context.peer, endpoint=Endpoint.INFER)
        try:
            admit(self._guard, Action.INFER, credentials, stream_call)
        except ModelportError as exc:
            raise refusal(stream_call, exc, self._telemetry, ((REQUEST_ID, base),)) from None
        window: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue(
            STREAM_WINDOW
        )

        async def read() -> None:
            count = 0
            try:
                async for request in requests:
                    count += 1
                    call = Call(
                        "grpc", f"{base}-{count}", caller=context.peer, endpoint=Endpoint.INFER
                    )
                    answer = self._stream_one(request, call, credentials)
                    await window.put(asyncio.ensure_future(answer))
            except Exception:
                # The client broke the stream off; what it already sent is still answered.
                log.debug("stream %s ended while reading", base, exc_info=True)
            # Not in a `finally`: once cancelled, nobody reads the queue to make room.
            await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (future := await window.get()) is not None:
                yield await future
        finally:
            reader.cancel()
            while not window.empty():
                pending = window.get_nowait()
                if pending is not None:
                    pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        context.trailers = ((REQUEST_ID, base),)

    async def _stream_one(
        self, request: pb.ModelInferRequest, call: Call, credentials: Credentials
    ) -> pb.ModelStreamInferResponse:
        try:
            parsed(request)
            # Each message is an inference of its own: rate limits apply per message.
            admit(self._guard, Action.INFER, credentials, call)
            response = await self.model_infer(request, call)
        except ModelportError as exc:
            failed(call, exc)
            self._telemetry.finished(call, STATUS[exc.kind].name)
            return pb.ModelStreamInferResponse(error_message=exc.message)
        except Exception:
            log.exception("internal error handling stream request %s", call.request_id)
            error = internal_error(call.request_id)
            failed(call, error)
            self._telemetry.finished(call, grpc.StatusCode.INTERNAL.name)
            return pb.ModelStreamInferResponse(error_message=error.message)
        self._telemetry.finished(call, grpc.StatusCode.OK.name)
        return pb.ModelStreamInferResponse(infer_response=response)

    # -- repository ----------------------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, call: Call
    ) -> pb.RepositoryIndexResponse:
        """Every loaded version, plus registered models with nothing loaded (unless ready)."""
        entries = await self._dp.repository_index(ready_only=request.ready)
        return grpc_codec.encode_repository_index(entries)

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, call: Call
    ) -> pb.RepositoryModelLoadResponse:
        """Load the newest version, or the one in parameters["version"]."""
        params = request.parameters
        refuse_load_options(params)
        await self._dp.load(
            model_name(request.model_name), version_parameter(params), actor=call.caller
        )
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, call: Call
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload every loaded version, or the one in parameters["version"]."""
        await self._dp.unload(
            model_name(request.model_name), version_parameter(request.parameters), actor=call.caller
        )
        return pb.RepositoryModelUnloadResponse()


class GrpcServer:
    """A started gRPC server: the inference service, health and reflection."""

    def __init__(self, endpoint: GrpcEndpoint, health: HealthService):
        self._endpoint = endpoint
        self._health = health

    @classmethod
    async def start(
        cls,
        dataplane: DataPlane,
        address: str,
        *,
        max_message_bytes: int,
        telemetry: Telemetry | None = None,
        guard: Guard | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> GrpcServer:
        """Serve on `address` (host:port) on the running event loop.

        RuntimeError when the address cannot be bound.
        """
        health = HealthService()
        methods = InferenceService(dataplane, telemetry, guard).methods()
        methods.update(health.methods())
        methods.update(reflection_methods((SERVICE, HEALTH_SERVICE, REFLECTION)))
        endpoint = GrpcEndpoint(methods, max_message_bytes=max_message_bytes)
        host, _, port = address.rpartition(":")
        try:
            await endpoint.start(host.strip("[]"), int(port), tls)
        except OSError as exc:
            raise RuntimeError(str(exc)) from None
        status = SERVING if dataplane.ready() else NOT_SERVING
        for name in ("", SERVICE):
            health.set(name, status)
        return cls(endpoint, health)

    def stopping(self) -> None:
        """Report NOT_SERVING from now on (gRPC health checks see the stop while REST drains);
        calls are still served until `stop`."""
        self._health.enter_graceful_shutdown()

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, take no new calls, let running ones finish within `grace`
        seconds, then cancel the rest."""
        self._health.enter_graceful_shutdown()
        await self._endpoint.stop(grace)


def reflection_methods(services: tuple[str, ...]) -> dict[str, Method]:
    """Server reflection (grpc.reflection.v1alpha), listing `services`: how grpcurl and other
    generic clients learn the messages without the .proto files."""
    servicer = reflection.aio.ReflectionServicer(services)
    return {
        f"/{REFLECTION}/ServerReflectionInfo": Method(
            reflection_pb2.ServerReflectionRequest.FromString,
            reflection_pb2.ServerReflectionResponse.SerializeToString,
            # An async generator function, whatever its stub says.
            stream=cast(StreamHandler, servicer.ServerReflectionInfo),
        )
    }
