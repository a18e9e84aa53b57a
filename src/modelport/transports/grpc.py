"""Open Inference Protocol over gRPC: parse, call the dataplane, encode.

grpcio's synchronous server takes the calls in a pool of threads (THREADS), which costs far less
per call than grpc.aio's poller and loop hops; each call's body runs on the worker's event loop
(`grpc_bridge`), beside REST, so gRPC requests join the same batches.

The service is `inference.GRPCInferenceService` in Triton's layout (proto/inference.proto),
its unary RPCs built from one table and wrapped alike (`grpc_call.unary`: ErrorKind to status
code, once). The request id (`x-request-id` metadata when the client sends a valid one, else
generated) comes back in trailing metadata and, for inferences, in the response parameter
`modelport.request_id`. The standard health service (grpc.health.v1) reports readiness;
server reflection is on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from modelport.transports.grpc_bridge import Handoff, LoopBridge
from modelport.transports.grpc_call import (
    REQUEST_ID,
    STATUS,
    Context,
    Credentials,
    Refusal,
    admit,
    credentials_of,
    failed,
    lenient,
    model_name,
    parsed,
    peer,
    refusal,
    refuse,
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
THREADS: Final = 64
"""grpcio's handler threads for unary calls; each holds one only while it is answered. With
fewer, fewer calls reach the batcher at once (measured: 16 threads answer a sixth less, 4
threads two thirds less, iris b1 at 64 streams)."""
STREAMS: Final = 1024
"""Open ModelStreamInfer streams a worker serves at once; each holds a thread of a pool of its
own for its whole life (and one more reads it), so open streams never keep unary calls
waiting for a thread. Further streams wait until one closes."""

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
        bridge: LoopBridge,
        telemetry: Telemetry | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._dp = dataplane
        self._bridge = bridge
        self._stream_threads = ThreadPoolExecutor(STREAMS, thread_name_prefix="grpc-stream")
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._guard: Guard = guard if guard is not None else OpenGuard()

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
        """Method name -> handler, with the protobuf (de)serializers of each message."""
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for rpc, endpoint, action, method in _RPCS:
            handlers[rpc] = grpc.unary_unary_rpc_method_handler(
                unary(
                    getattr(self, method),
                    endpoint,
                    action,
                    self._telemetry,
                    self._guard,
                    self._bridge,
                ),
                request_deserializer=lenient(getattr(pb, f"{rpc}Request")),
                response_serializer=getattr(pb, f"{rpc}Response").SerializeToString,
            )

        def stream(
            requests: Iterator[pb.ModelInferRequest], context: Context
        ) -> Iterator[pb.ModelStreamInferResponse]:
            return self.model_stream_infer(requests, context)

        # grpcio runs a handler that carries `experimental_thread_pool` in that pool instead
        # of the server's.
        stream.experimental_thread_pool = self._stream_threads  # type: ignore[attr-defined]
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            stream,
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

    def model_stream_infer(
        self, requests: Iterator[pb.ModelInferRequest], context: Context
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Answer each request of the stream in order; a failed one gets an error_message.

        A reader thread hands each request to the loop as it arrives, up to STREAM_WINDOW at
        once (so they can share batches); the answers still come back in the order the
        requests arrived.
        """
        base = request_id(context)
        caller = peer(context)
        credentials = credentials_of(context)
        stream_call = Call("grpc", base, caller=caller, endpoint=Endpoint.INFER)
        refusal = self._bridge.run(self._admit_stream(stream_call, credentials))
        if refusal is not None:
            refuse(context, refusal)
        window: queue.Queue[Handoff[pb.ModelStreamInferResponse] | None] = queue.Queue(
            STREAM_WINDOW
        )
        stop = threading.Event()

        def read() -> None:
            count = 0
            try:
                for request in requests:
                    if stop.is_set():
                        break
                    count += 1
                    call = Call("grpc", f"{base}-{count}", caller=caller, endpoint=Endpoint.INFER)
                    window.put(self._bridge.submit(self._stream_one(request, call, credentials)))
            except Exception:
                # The client broke the stream off; what it already sent is still answered.
                log.debug("stream %s ended while reading", base, exc_info=True)
            window.put(None)

        reader = threading.Thread(target=read, name=f"grpc-stream-{base[:8]}", daemon=True)
        reader.start()
        try:
            while (handoff := window.get()) is not None:
                yield handoff.result()
        finally:
            # The client went away (or the server stops): nothing left is answered.
            stop.set()
            while True:
                try:
                    pending = window.get_nowait()
                except queue.Empty:
                    break
                if pending is not None:
                    pending.cancel()

    async def _admit_stream(self, call: Call, credentials: Credentials) -> Refusal | None:
        try:
            admit(self._guard, Action.INFER, credentials, call)
        except ModelportError as exc:
            return refusal(call, exc, self._telemetry, ((REQUEST_ID, call.request_id),))
        return None

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

    def __init__(self, server: grpc.Server, health_servicer: health.HealthServicer):
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
        """Serve on `address` (host:port); the calls' bodies run on the running event loop.

        RuntimeError when the address cannot be bound.
        """
        server = grpc.server(
            ThreadPoolExecutor(THREADS, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", -1),
            ],
        )
        bridge = LoopBridge(asyncio.get_running_loop())
        handlers = InferenceService(dataplane, bridge, telemetry, guard).method_handlers()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        server.add_registered_method_handlers(SERVICE, handlers)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
        server.start()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if dataplane.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            health_servicer.set(name, status)
        return cls(server, health_servicer)

    def stopping(self) -> None:
        """Report NOT_SERVING from now on (gRPC health checks see the stop while REST drains);
        calls are still served until `stop`."""
        self._health.enter_graceful_shutdown()

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, let running calls finish within `grace` seconds, then stop.

        The loop keeps running meanwhile: the calls still running need it to finish.
        """
        self._health.enter_graceful_shutdown()
        stopped = self._server.stop(grace)
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
