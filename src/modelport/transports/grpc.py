"""Open Inference Protocol over gRPC (grpc.aio): parse, call the dataplane, encode.

The service is `inference.GRPCInferenceService` in Triton's layout (proto/inference.proto).
ErrorKind is mapped to a gRPC status code here, once; the request id (`x-request-id`
metadata when the client sends a valid one, else generated) comes back in trailing metadata
and, for inferences, in the response parameter `modelport.request_id`. The standard health
service (grpc.health.v1) reports readiness; server reflection is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelport.errors import (
    ErrorKind,
    InternalError,
    InvalidInput,
    ModelportError,
    Overloaded,
    Unsupported,
)
from modelport.serving.dataplane import DataPlane
from modelport.serving.guard import Action, Guard, OpenGuard
from modelport.serving.telemetry import Call, NoTelemetry, Telemetry, new_request_id
from modelport.transports import grpc_codec
from modelport.transports.grpc_gen import inference_pb2 as pb

log = logging.getLogger("modelport.grpc")

SERVICE: Final = "inference.GRPCInferenceService"

STATUS: Final[dict[ErrorKind, grpc.StatusCode]] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNTRUSTED_ARTIFACT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    # What gRPC itself answers for a message over the size limit.
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}

STREAM_WINDOW: Final = 64
"""Requests of one stream in flight at once; reading the stream waits beyond that."""
GRACE_SECONDS: Final = 5.0
"""On stop, how long running calls may finish before they are cancelled."""

_ENDPOINTS: Final = {
    "ServerLive": ("health", Action.HEALTH),
    "ServerReady": ("health", Action.HEALTH),
    "ModelReady": ("ready", Action.METADATA),
    "ServerMetadata": ("server_metadata", Action.METADATA),
    "ModelMetadata": ("metadata", Action.METADATA),
    "ModelInfer": ("infer", Action.INFER),
    "RepositoryIndex": ("repository", Action.METADATA),
    "RepositoryModelLoad": ("repository", Action.ADMIN),
    "RepositoryModelUnload": ("repository", Action.ADMIN),
}
"""The endpoint label each RPC is counted under (the same names as over REST), and what it
does as far as permissions go (the same policy as over REST)."""
_REQUEST_ID: Final = "x-request-id"
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]


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
        unary = grpc.unary_unary_rpc_method_handler
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for name, body, request_type, response_type in (
            ("ServerLive", self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            ("ServerReady", self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            ("ModelReady", self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            (
                "ServerMetadata",
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            (
                "ModelMetadata",
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            ("ModelInfer", self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            (
                "RepositoryIndex",
                self.repository_index,
                pb.RepositoryIndexRequest,
                pb.RepositoryIndexResponse,
            ),
            (
                "RepositoryModelLoad",
                self.repository_model_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            (
                "RepositoryModelUnload",
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        ):
            handlers[name] = unary(
                _unary(body, _ENDPOINTS[name], self._telemetry, self._guard),
                request_deserializer=_lenient(request_type),
                response_serializer=response_type.SerializeToString,
            )
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            request_deserializer=_lenient(pb.ModelInferRequest),
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
            ready = await self._dp.model_ready(_name(request.name), request.version or None)
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
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, call: Call
    ) -> pb.ModelMetadataResponse:
        """Inputs, outputs, versions, and provenance in `parameters`."""
        meta = await self._dp.model_metadata(_name(request.name), request.version or None)
        return grpc_codec.encode_model_metadata(meta)

    # -- inference -----------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, call: Call) -> pb.ModelInferResponse:
        """One inference through the dataplane (validation, batching, provenance)."""
        self._dp.shed(_name(request.model_name), request.model_version or None)
        decoded = grpc_codec.decode_request(request)
        response = await self._dp.infer(
            _name(request.model_name), request.model_version or None, decoded, call.request_id, call
        )
        return grpc_codec.encode_response(response, typed=not request.raw_input_contents)

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answer each request of the stream in order; a failed one gets an error_message.

        Up to STREAM_WINDOW requests run at once (so they can share batches); the answers
        still come back in the order the requests arrived.
        """
        base = _request_id(context)
        peer = _peer(context)
        stream_call = Call("grpc", base, caller=peer, endpoint="infer")
        try:
            _admit(self._guard, Action.INFER, context, stream_call)
        except ModelportError as exc:
            _failed(stream_call, exc)
            self._telemetry.finished(stream_call, STATUS[exc.kind].name)
            await context.abort(STATUS[exc.kind], exc.message, ((_REQUEST_ID, base),))
        window: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue(
            STREAM_WINDOW
        )

        async def read() -> None:
            count = 0
            try:
                async for request in requests:
                    count += 1
                    rid = f"{base}-{count}"
                    call = Call("grpc", rid, caller=peer, endpoint="infer")
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
            _parsed(request)
            # Each message is an inference of its own: rate limits apply per message.
            _admit(self._guard, Action.INFER, context, call)
            response = await self.model_infer(request, call)
        except ModelportError as exc:
            _failed(call, exc)
            self._telemetry.finished(call, STATUS[exc.kind].name)
            return pb.ModelStreamInferResponse(error_message=exc.message)
        except Exception:
            log.exception("internal error handling stream request %s", call.request_id)
            _failed(call, InternalError(_internal(call.request_id)))
            self._telemetry.finished(call, grpc.StatusCode.INTERNAL.name)
            return pb.ModelStreamInferResponse(error_message=_internal(call.request_id))
        self._telemetry.finished(call, grpc.StatusCode.OK.name)
        return pb.ModelStreamInferResponse(infer_response=response)

    # -- repository ----------------------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, call: Call
    ) -> pb.RepositoryIndexResponse:
        """Every loaded version, plus registered models with nothing loaded (unless ready)."""
        entries = await self._dp.repository_index(ready_only=request.ready)
        response = pb.RepositoryIndexResponse()
        for entry in entries:
            response.models.add(**entry)
        return response

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, call: Call
    ) -> pb.RepositoryModelLoadResponse:
        """Load the newest version, or the one in parameters["version"]."""
        params = request.parameters
        if "config" in params or any(key.startswith("file:") for key in params):
            raise Unsupported(
                "loading with a config or files is not offered; register the artifact with "
                "`modelport models push` and load it by name"
            )
        await self._dp.load(_name(request.model_name), _version(params), actor=call.caller)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, call: Call
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload every loaded version, or the one in parameters["version"]."""
        await self._dp.unload(
            _name(request.model_name), _version(request.parameters), actor=call.caller
        )
        return pb.RepositoryModelUnloadResponse()


class GrpcServer:
    """A started grpc.aio server: the inference service, health and reflection."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer):
        self._server = server
        self._health = health_servicer

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

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, let running calls finish within `grace` seconds, then stop."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)


def _unary(
    body: Callable[[Req, Call], Awaitable[Resp]],
    kind: tuple[str, Action],
    telemetry: Telemetry,
    guard: Guard,
) -> Callable[[Req, Context], Awaitable[Resp]]:
    """Wrap an RPC body: request id in, permission checked, ModelportError -> status code out,
    faults logged."""
    endpoint, action = kind

    async def handle(request: Req, context: Context) -> Resp:
        rid = _request_id(context)
        call = Call("grpc", rid, caller=_peer(context), endpoint=endpoint)
        call.time_left = context.time_remaining()
        try:
            _parsed(request)
            if action is not Action.HEALTH:
                _admit(guard, action, context, call)
            response = await body(request, call)
        except ModelportError as exc:
            _failed(call, exc)
            telemetry.finished(call, STATUS[exc.kind].name)
            await context.abort(STATUS[exc.kind], exc.message, _trailers(rid, exc))
        except Exception:
            log.exception("internal error handling request %s", rid)
            _failed(call, InternalError(_internal(rid)))
            telemetry.finished(call, grpc.StatusCode.INTERNAL.name)
            await context.abort(grpc.StatusCode.INTERNAL, _internal(rid), ((_REQUEST_ID, rid),))
        context.set_trailing_metadata(((_REQUEST_ID, rid),))
        telemetry.finished(call, grpc.StatusCode.OK.name)
        return response

    return handle


class Malformed:
    """Bytes that did not parse as the RPC's request message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: what does not parse becomes `Malformed`.

    gRPC answers a deserializer's exception with UNKNOWN; a client's bad bytes are its own
    mistake, which `_parsed` turns into INVALID_ARGUMENT like every other.
    """
    name = message_type.DESCRIPTOR.name

    def parse(raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError:
            return Malformed(name)

    return parse


def _parsed(request: Any) -> None:
    if isinstance(request, Malformed):
        raise InvalidInput(
            f"the request is not a valid {request.message} protobuf message; send the "
            "message from proto/inference.proto"
        )


def _trailers(rid: str, exc: ModelportError) -> tuple[tuple[str, str], ...]:
    """The request id, and for shed or rate-limited calls the seconds to wait (`retry-after`)."""
    if isinstance(exc, Overloaded):
        return ((_REQUEST_ID, rid), ("retry-after", str(max(1, math.ceil(exc.retry_after)))))
    return ((_REQUEST_ID, rid),)


def _admit(guard: Guard, action: Action, context: Context, call: Call) -> None:
    """Let the call do `action` or raise; who asked joins the caller's address."""
    authorization = api_key = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            authorization = value
        elif key == "x-api-key" and isinstance(value, str):
            api_key = value
    who = guard.check(action, authorization, api_key, call.caller)
    if who:
        call.caller = f"{who}@{call.caller}"


def _failed(call: Call, exc: ModelportError) -> None:
    call.kind = exc.kind.value
    call.error = exc.message


def _peer(context: Context) -> str:
    """The client's address from gRPC's peer string (ipv4:1.2.3.4:5678, ipv6:[::1]:5678)."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0] if kind in ("ipv4", "ipv6") else rest
    return host.strip("[]")


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == _REQUEST_ID and isinstance(value, str) and _SAFE_ID.fullmatch(value):
            return value
    return new_request_id()


def _internal(rid: str) -> str:
    return f"internal error; the server log has details under {rid}"


def _name(name: str) -> str:
    if not name:
        raise InvalidInput("the model name is empty; name the model to use")
    return name


def _version(params: Any) -> str | None:
    """parameters["version"] of a repository request, as a string (None when absent)."""
    if "version" not in params:
        return None
    slot = params["version"]
    choice = slot.WhichOneof("parameter_choice")
    if choice == "string_param":
        return str(slot.string_param)
    if choice == "int64_param":
        return str(slot.int64_param)
    raise InvalidInput('parameters["version"] must be a version number such as "2"')
