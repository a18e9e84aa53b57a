"""The standard gRPC health service (grpc.health.v1.Health): Check, and Watch as a stream.

Load balancers and Kubernetes' gRPC probes ask it whether a server, or one of its services,
should get calls. `enter_graceful_shutdown` turns every service NOT_SERVING for good, so the
callers move away while the calls already running finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, TypeAlias

import grpc
from grpc_health.v1 import health_pb2

from modelport.transports.grpc_wire import CallContext, GrpcError, Method

SERVICE: Final = "grpc.health.v1.Health"
SERVING: Final = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
Status: TypeAlias = int
"""A HealthCheckResponse.ServingStatus value."""


class HealthService:
    """Each service's status ("" is the whole server); watchers hear of every change."""

    def __init__(self) -> None:
        self._status: dict[str, Status] = {}
        self._changed = asyncio.Event()
        self._shutting_down = False

    def set(self, service: str, status: Status) -> None:
        """Report `status` for `service` from now on (ignored once shutting down)."""
        if self._shutting_down:
            return
        self._status[service] = status
        self._announce()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, and so it stays."""
        for service in self._status:
            self._status[service] = NOT_SERVING
        self._shutting_down = True
        self._announce()

    def methods(self) -> dict[str, Method]:
        """Check and Watch, by path."""
        parse = health_pb2.HealthCheckRequest.FromString
        serialize = health_pb2.HealthCheckResponse.SerializeToString
        return {
            f"/{SERVICE}/Check": Method(parse, serialize, unary=self.check),
            f"/{SERVICE}/Watch": Method(parse, serialize, stream=self.watch),
        }

    async def check(
        self, request: health_pb2.HealthCheckRequest, context: CallContext
    ) -> health_pb2.HealthCheckResponse:
        """The service's status; NOT_FOUND for a service this server does not know."""
        status = self._status.get(request.service)
        if status is None:
            raise GrpcError(
                grpc.StatusCode.NOT_FOUND,
                f"no service {request.service!r}; ask for '' (the server) or a service it serves",
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def watch(
        self, requests: AsyncIterator[health_pb2.HealthCheckRequest], context: CallContext
    ) -> AsyncGenerator[health_pb2.HealthCheckResponse, None]:
        """The service's status now, then each time it changes, until the client hangs up."""
        request = await anext(requests, None)
        if request is None:
            raise GrpcError(grpc.StatusCode.INVALID_ARGUMENT, "Watch needs a HealthCheckRequest")
        last = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, _UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await changed.wait()

    def _announce(self) -> None:
        # Watchers wait on the event of their time; a fresh one for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
