"""Open Inference Protocol over HTTP: a raw ASGI app that routes by a table of endpoints.

ErrorKind is mapped to an HTTP status here, once. Every error body is
`{"error": "<what to fix>", "code": "<kind>"}` with the request id in `x-request-id`. Each
route names its endpoint and the permission it needs; the app first refuses a Host or Origin
that a web page should not send (`browser`), counts the request under the route's endpoint,
checks the method and the permission, then hands the request to the route's
handler (`rest_oip` for the protocol itself, this module for the metrics and docs pages).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import orjson

from modelport.config import ProtocolSettings
from modelport.errors import ErrorKind, ModelportError, NotFound, Overloaded
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action, Guard, OpenGuard
from modelport.serving.requests import admit, internal_error, retry_after
from modelport.serving.telemetry import NoTelemetry, Telemetry
from modelport.transports.browser import BrowserPolicy, cors_headers, preflight_headers
from modelport.transports.openapi import OPENAPI
from modelport.transports.rest_azure import AzureEndpoints
from modelport.transports.rest_invocations import InvocationsEndpoints
from modelport.transports.rest_oip import OipEndpoints
from modelport.transports.rest_request import (
    HTML,
    JSON,
    REQUEST_ID,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    segments,
)
from modelport.transports.rest_tfserving import TfServingEndpoints
from modelport.transports.rest_vertex import VertexEndpoints
from modelport.transports.routes import ErrorBody, MethodNotAllowed, Route, Router
from modelport.transports.swagger_ui import SWAGGER_UI

log = logging.getLogger("modelport.rest")

Hook = Callable[[], Awaitable[None]]

STATUS: Final[dict[ErrorKind, int]] = {
    ErrorKind.INVALID_INPUT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NOT_READY: 503,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.DEADLINE: 504,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNTRUSTED_ARTIFACT: 400,
    ErrorKind.UNSUPPORTED: 501,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.INTERNAL: 500,
}

_METRICS_TYPE: Final = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_PROBES: Final = ("/v2/health/live", "/v2/health/ready")
"""The health checks the metrics port answers too, so probes can use it."""
_CODES: Final = {status: str(status) for status in (200, 204, *STATUS.values(), 405)}
_PREFLIGHT_METHOD: Final = b"access-control-request-method"


class RestApp:
    """The OIP REST API as an ASGI application."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        telemetry: Telemetry | None = None,
        metrics_port: int = 0,
        guard: Guard | None = None,
        browser: BrowserPolicy | None = None,
        protocols: ProtocolSettings | None = None,
    ) -> None:
        self._dp = dataplane
        self._browser = browser if browser is not None else BrowserPolicy()
        """Which Host names and Origins are answered; by default loopback names only."""
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._guard: Guard = guard if guard is not None else OpenGuard()
        self._metrics_port = metrics_port
        """Port that serves only /metrics (0: /metrics is on the API port)."""
        self._max_body = max_body_bytes
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        protocols = protocols if protocols is not None else ProtocolSettings()
        """Where the cloud platforms' protocols answer."""
        self.router = Router(
            [
                *self._pages(),
                *OipEndpoints(dataplane).routes(),
                *InvocationsEndpoints(dataplane).routes(),
                *TfServingEndpoints(dataplane).routes(),
                *VertexEndpoints(dataplane, protocols).routes(),
                *AzureEndpoints(dataplane, protocols).routes(),
            ]
        )
        """Every route of the API, matched in one walk of the path."""
        self._draining = False

    def drain(self) -> None:
        """From now on every answer closes its connection and readiness answers 503 (the
        server is about to stop).

        A client then sends its next request on a new connection, to a server that stays,
        instead of on one that is about to be closed under it.
        """
        self._draining = True
        self._dp.stop_accepting()

    def _pages(self) -> list[Route]:
        """The routes this module answers: the docs pages and the metrics page.

        What the API is, as OpenAPI and as a page to try it, is open like the health checks.
        """
        return [
            Route("GET", "/openapi.json", Endpoint.DOCS, None, _openapi),
            Route("GET", "/docs", Endpoint.DOCS, None, _swagger_ui),
            # Which port first, then the guard, then the method: as on the metrics-only port.
            Route(
                "GET",
                "/metrics",
                Endpoint.METRICS,
                Action.METRICS,
                self._metrics_route,
                checks_itself=True,
            ),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self._max_body)
        call = request.call
        cross_origin: bytes | None = None
        try:
            # Before routing, the guard and the body: a web page gets nothing from a request
            # that it should not have been able to send.
            server = scope.get("server")
            cross_origin = self._browser.check(
                request.host, request.origin, server[0] if server else ""
            )
            metrics_only = bool(self._metrics_port and server and server[1] == self._metrics_port)
            if cross_origin is not None and _is_preflight(scope):
                status, headers, body = self._preflight(request, cross_origin, metrics_only)
            elif metrics_only:
                status, headers, body = await self._metrics_only(request)
            else:
                status, headers, body = await self._route(request)
        except ModelportError as exc:
            call.kind = exc.kind.value
            call.error = exc.message
            status, headers, body = _error(exc, request.error_body)
        except Exception:
            log.exception("internal error handling request %s", request.request_id)
            error = internal_error(request.request_id)
            call.kind = error.kind.value
            call.error = error.message
            status, headers, body = _error(error, request.error_body)
        if cross_origin is not None and status != 204:
            headers.extend(cors_headers(cross_origin))
        elif request.origin is not None:
            headers.append((b"vary", b"origin"))
        headers.append((REQUEST_ID, request.request_id.encode("ascii")))
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        if self._draining:
            headers.append((b"connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            # Recorded even when the client left before the answer reached it.
            self._telemetry.finished(call, _CODES[status])

    async def _route(self, request: Request) -> Response:
        scope = request.scope
        parts = segments(scope)
        route = self.router.find(request, parts)
        if route is None:
            if parts[0] != "v2":
                raise NotFound(f"no such endpoint {scope['path']!r}; the API lives under /v2")
            raise NotFound(f"no such endpoint {scope['path']!r}")
        if route.action is not None and not route.checks_itself:
            self._admit(request, route.action)
        return await route.handler(request)

    def _preflight(self, request: Request, origin: bytes, metrics_only: bool) -> Response:
        """The answer to a CORS preflight from the allowed `origin`: which methods the path
        takes and which headers a request may carry."""
        scope = request.scope
        if metrics_only:
            methods = "GET" if scope["path"] == "/metrics" else None
        else:
            methods = self.router.methods(segments(scope))
        if methods is None:
            raise NotFound(f"no such endpoint {scope['path']!r}")
        return 204, preflight_headers(origin, methods), b""

    def _admit(self, request: Request, action: Action) -> None:
        """Let the request do `action` (credentials from its headers) or raise."""
        admit(self._guard, action, request.authorization, request.api_key, request.call)

    async def _metrics_route(self, request: Request) -> Response:
        if self._metrics_port:
            raise NotFound(f"metrics are served on port {self._metrics_port}")
        self._admit(request, Action.METRICS)
        return self._metrics(request.scope)

    async def _metrics_only(self, request: Request) -> Response:
        """The metrics port: /metrics, and the health checks for probes (open, as on the API)."""
        scope = request.scope
        if scope["path"] in _PROBES:
            return await self._route(request)
        request.call.endpoint = Endpoint.METRICS
        if scope["path"] != "/metrics":
            raise NotFound(
                f"no such endpoint {scope['path']!r}; this port serves /metrics and the health "
                f"checks ({', '.join(_PROBES)}) only"
            )
        self._admit(request, Action.METRICS)
        return self._metrics(scope)

    def _metrics(self, scope: Scope) -> Response:
        if scope["method"] != "GET":
            raise MethodNotAllowed(scope["method"], "GET")
        return 200, [_METRICS_TYPE], self._dp.metrics_page()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _openapi(request: Request) -> Response:
    return 200, [JSON], OPENAPI


async def _swagger_ui(request: Request) -> Response:
    return 200, [HTML], SWAGGER_UI


def _is_preflight(scope: Scope) -> bool:
    """Whether the request is a CORS preflight (an OPTIONS that is not one is routed as any
    request is)."""
    if scope["method"] != "OPTIONS":
        return False
    return any(key == _PREFLIGHT_METHOD for key, _ in scope["headers"])


def _error(exc: ModelportError, shaped: ErrorBody | None) -> Response:
    """The status of `exc`'s kind, and its body in the shape of the route's protocol."""
    status = 405 if isinstance(exc, MethodNotAllowed) else STATUS[exc.kind]
    if shaped is not None:
        body = shaped(exc, status)
    else:
        body = orjson.dumps({"error": exc.message, "code": exc.kind.value})
    headers = [JSON]
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allowed.encode()))
    elif isinstance(exc, Overloaded):
        headers.append((b"retry-after", retry_after(exc).encode()))
    return status, headers, body
