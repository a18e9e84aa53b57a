"""Open Inference Protocol over gRPC (grpc.aio): parse, call the dataplane, encode.

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
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

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
    Context,
    admit,
    failed,
    lenient,
    model_name,
    parsed,
    peer,
    request_id,
    unary,
    version_parameter,
)
from modelport.transports.grpc_gen import inference_pb2 as pb

log = logging.getLogger("modelport.grpc")

SERVICE: Final = "inference.GRPCInferenceService"

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

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """Method name -> handler, with the protobuf (de)serializers of each message."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for rpc, endpoint, action, method in _RPCS:
            handlers[rpc] = grpc.unary_unary_rpc_method_handler(
                unary(getattr(self, method), endpoint, action, self._telemetry, self._guard),
                request_deserializer=lenient(getattr(pb, f"{rpc}Request")),
                response_serializer=getattr(pb, f"{rpc}Response").SerializeToString,
            )
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            request_deserializer=lenient(pb.ModelInferRequest),
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return handlers

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
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answer each request of the stream in order; a failed one gets an error_message.

        Up to STREAM_WINDOW requests run at once (so they can share batches); the answers
        still come back in the order the requests arrived.
        """
        base = request_id(context)
        caller = peer(context)
        stream_call = Call("grpc", base, caller=caller, endpoint=Endpoint.INFER)
        try:
            admit(self._guard, Action.INFER, context, stream_call)
        except ModelportError as exc:
            failed(stream_call, exc)
            self._telemetry.finished(stream_call, STATUS[exc.kind].name)
            await context.abort(STATUS[exc.kind], exc.message, ((REQUEST_ID, base),))
        window: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue(
            STREAM_WINDOW
        )

        async def read() -> None:
            count = 0
            try:
                async for request in requests:
                    count += 1
                    rid = f"{base}-{count}"
                    call = Call("grpc", rid, caller=caller, endpoint=Endpoint.INFER)
                    answer = self._stream_one(request, call, context)
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

    async def _stream_one(
        self, request: pb.ModelInferRequest, call: Call, context: Context
    ) -> pb.ModelStreamInferResponse:
        try:
            parsed(request)
            # Each message is an inference of its own: rate limits apply per message.
            admit(self._guard, Action.INFER, context, call)
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
    """A started grpc.aio server: the inference service, health and reflection."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer):
        self._server = server
        self._health = health_servicer
        self._going: asyncio.Future[None] | None = None

    @classmethod
    async def start(
        cls,
        dataplane: DataPlane,
        address: str,
        *,
        max_message_bytes: int,
        telemetry: Telemetry | None = None,
        guard: Guard | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> GrpcServer:
        """Serve on `address` (host:port) in the running event loop.

        RuntimeError when the address cannot be bound.
        """
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        handlers = InferenceService(dataplane, telemetry, guard).method_handlers()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        server.add_registered_method_handlers(SERVICE, handlers)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
        await server.start()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if dataplane.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            await health_servicer.set(name, status)
        return cls(server, health_servicer)

    def stopping(self) -> None:
        """Report NOT_SERVING from now on (gRPC health checks see the stop while REST drains);
        calls are still served until `stop`. Call on the server's event loop."""
        self._going = asyncio.ensure_future(self._health.enter_graceful_shutdown())

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, let running calls finish within `grace` seconds, then stop."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
