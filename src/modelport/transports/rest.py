"""Open Inference Protocol over HTTP: a raw ASGI app that parses, calls the dataplane, encodes.

ErrorKind is mapped to an HTTP status here, once. Every error body is
`{"error": "<what to fix>", "code": "<kind>"}` with the request id in `x-request-id`.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import orjson

from modelport.errors import (
    ErrorKind,
    InvalidInput,
    ModelportError,
    NotFound,
    NotReady,
    Overloaded,
    TooLarge,
    Unsupported,
)
from modelport.protocol import codec_binary
from modelport.serving.dataplane import DataPlane
from modelport.serving.guard import Action, Guard, OpenGuard
from modelport.serving.telemetry import Call, NoTelemetry, Telemetry, new_request_id
from modelport.transports.openapi import OPENAPI, SWAGGER_UI

log = logging.getLogger("modelport.rest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
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

_JSON: Final = (b"content-type", b"application/json")
_BINARY: Final = (b"content-type", b"application/octet-stream")
_HTML: Final = (b"content-type", b"text/html; charset=utf-8")
_HEADER_LENGTH: Final = b"inference-header-content-length"
_REQUEST_ID: Final = b"x-request-id"
_MAX_LENGTH_DIGITS: Final = 20
_SAFE_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_METRICS_TYPE: Final = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_LIVE: Final = orjson.dumps({"live": True})
_READY: Final = orjson.dumps({"ready": True})

Response = tuple[int, list[tuple[bytes, bytes]], bytes]
_CODES: Final = {status: str(status) for status in (200, *STATUS.values(), 405)}


class MethodNotAllowed(InvalidInput):
    """The path exists but not for this HTTP method."""

    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(f"{method} is not allowed here; use {allowed}")
        self.allowed = allowed


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
    ) -> None:
        self._dp = dataplane
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._guard: Guard = guard if guard is not None else OpenGuard()
        self._metrics_port = metrics_port
        """Port that serves only /metrics (0: /metrics is on the API port)."""
        self._max_body = max_body_bytes
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = _Incoming(scope["headers"])
        request_id = incoming.request_id
        client = scope.get("client")
        call = Call("rest", request_id, caller=client[0] if client else "")
        try:
            if self._metrics_port and scope["server"][1] == self._metrics_port:
                status, headers, body = self._metrics_only(scope, call, incoming)
            else:
                status, headers, body = await self._route(scope, receive, incoming, call)
        except ModelportError as exc:
            call.kind = exc.kind.value
            call.error = exc.message
            status, headers, body = _error(exc)
        except Exception:
            log.exception("internal error handling request %s", request_id)
            error = ModelportError(f"internal error; the server log has details under {request_id}")
            call.kind = error.kind.value
            call.error = error.message
            status, headers, body = _error(error)
        headers.append((_REQUEST_ID, request_id.encode("ascii")))
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            # Recorded even when the client left before the answer reached it.
            self._telemetry.finished(call, _CODES[status])

    def _metrics_only(self, scope: Scope, call: Call, incoming: _Incoming) -> Response:
        call.endpoint = "metrics"
        if scope["path"] != "/metrics":
            raise NotFound(f"no such endpoint {scope['path']!r}; this port serves /metrics only")
        self._admit(call, Action.METRICS, incoming)
        return self._metrics(scope)

    def _admit(self, call: Call, action: Action, incoming: _Incoming) -> None:
        """Let the request do `action` or raise; who asked joins the caller's address."""
        who = self._guard.check(action, incoming.authorization, incoming.api_key, call.caller)
        if who:
            call.caller = f"{who}@{call.caller}"

    def _metrics(self, scope: Scope) -> Response:
        _allow(scope["method"], "GET")
        page = self._telemetry.metrics_page()
        if page is None:
            raise NotFound("metrics are off on this server (it was started with --no-metrics)")
        return 200, [_METRICS_TYPE], page

    async def _route(
        self, scope: Scope, receive: Receive, incoming: _Incoming, call: Call
    ) -> Response:
        method: str = scope["method"]
        parts = _segments(scope)
        if parts == ["openapi.json"] or parts == ["docs"]:
            # What the API is, as OpenAPI and as a page to try it: open, like the health checks.
            call.endpoint = "docs"
            _allow(method, "GET")
            if parts == ["docs"]:
                return 200, [_HTML], SWAGGER_UI
            return 200, [_JSON], OPENAPI
        if parts == ["metrics"]:
            call.endpoint = "metrics"
            if self._metrics_port:
                raise NotFound(f"metrics are served on port {self._metrics_port}")
            self._admit(call, Action.METRICS, incoming)
            return self._metrics(scope)
        if not parts or parts[0] != "v2":
            raise NotFound(f"no such endpoint {scope['path']!r}; the API lives under /v2")
        n = len(parts)
        if n >= 3 and parts[1] == "models":
            name = parts[2]
            version: str | None = None
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                version = rest[1]
                rest = rest[2:]
            if rest == ["infer"]:
                call.endpoint = "infer"
                _allow(method, "POST")
                self._admit(call, Action.INFER, incoming)
                self._dp.shed(name, version)
                body = await self._body(receive, incoming)
                request = codec_binary.decode_request(body, _header_length(incoming.header_length))
                response = await self._dp.infer(name, version, request, incoming.request_id, call)
                out, json_length = codec_binary.encode_response(response, request)
                if json_length is None:
                    return 200, [_JSON], out
                return 200, [_BINARY, (_HEADER_LENGTH, str(json_length).encode())], out
            if not rest:
                call.endpoint = "metadata"
                _allow(method, "GET")
                self._admit(call, Action.METADATA, incoming)
                return _json(await self._dp.model_metadata(name, version))
            if rest == ["drift"]:
                call.endpoint = "drift"
                _allow(method, "GET")
                self._admit(call, Action.LOGS, incoming)
                model = await self._dp.resolve(name, version)
                return _json(self._telemetry.drift(model.version))
            if rest == ["feedback"] and version is None:
                call.endpoint = "feedback"
                _allow(method, "POST")
                self._admit(call, Action.INFER, incoming)
                model = await self._dp.resolve(name, None)
                feedback = _object(await self._body(receive, incoming), "feedback")
                return _json(await self._telemetry.feedback(model.name, feedback))
            if rest == ["ready"]:
                call.endpoint = "ready"
                _allow(method, "GET")
                self._admit(call, Action.METADATA, incoming)
                if await self._dp.model_ready(name, version):
                    return _json({"name": name, "ready": True})
                raise NotReady(f"model {name!r} is not loaded")
        elif n == 1:
            call.endpoint = "server_metadata"
            _allow(method, "GET")
            self._admit(call, Action.METADATA, incoming)
            return _json(self._dp.server_metadata())
        elif n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
            call.endpoint = "health"
            _allow(method, "GET")
            if parts[2] == "live":
                return 200, [_JSON], _LIVE
            if self._dp.ready():
                return 200, [_JSON], _READY
            raise NotReady("the server is still loading its models")
        elif n == 3 and parts[1:] == ["repository", "index"]:
            call.endpoint = "repository"
            _allow(method, "POST")
            self._admit(call, Action.METADATA, incoming)
            options = _object(await self._body(receive, incoming), "index")
            ready = options.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidInput('"ready" must be true or false')
            return _json(await self._dp.repository_index(ready_only=ready))
        elif n == 5 and parts[1:3] == ["repository", "models"] and parts[4] in ("load", "unload"):
            call.endpoint = "repository"
            _allow(method, "POST")
            self._admit(call, Action.ADMIN, incoming)
            return await self._repository(parts[3], parts[4], receive, incoming, call.caller)
        raise NotFound(f"no such endpoint {scope['path']!r}")

    async def _repository(
        self, name: str, action: str, receive: Receive, incoming: _Incoming, actor: str
    ) -> Response:
        options = _object(await self._body(receive, incoming), action)
        parameters = options.get("parameters")
        if parameters is None:
            parameters = {}
        elif not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be a JSON object')
        version = parameters.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        elif version is not None and not isinstance(version, str):
            raise InvalidInput(
                f'parameters.version must be a version number such as "2", got {version!r}'
            )
        if action == "load":
            if "config" in parameters or any(k.startswith("file:") for k in parameters):
                raise Unsupported(
                    "loading with a config or files is not offered; register the artifact "
                    "with `modelport models push` and load it by name"
                )
            model = await self._dp.load(name, version, actor=actor)
            return _json({"name": name, "version": str(model.number), "load": True})
        unloaded = await self._dp.unload(name, version, actor=actor)
        return _json({"name": name, "versions": [str(v) for v in unloaded], "unload": True})

    async def _body(self, receive: Receive, incoming: _Incoming) -> bytes:
        if incoming.content_length is not None:
            try:
                declared = int(incoming.content_length)
            except ValueError:
                raise InvalidInput("Content-Length is not a number") from None
            if declared > self._max_body:
                raise TooLarge(
                    f"request body of {declared} bytes exceeds the limit of {self._max_body}"
                )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client disconnected before sending the whole body")
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    raise TooLarge(f"request body exceeds the limit of {self._max_body} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if incoming.content_encoding is None or incoming.content_encoding == b"identity":
            return body
        return _decompress(body, incoming.content_encoding, self._max_body)

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


class _Incoming:
    """The request headers the API reads, picked out in one pass."""

    __slots__ = (
        "api_key",
        "authorization",
        "content_encoding",
        "content_length",
        "header_length",
        "request_id",
    )

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.header_length: bytes | None = None
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.authorization: str | None = None
        self.api_key: str | None = None
        request_id: str | None = None
        for key, value in headers:
            # A repeated header means its values joined by commas (RFC 9110, 5.3), which the
            # checks on these two then refuse instead of silently taking the last one.
            if key == _HEADER_LENGTH:
                self.header_length = _joined(self.header_length, value)
            elif key == b"content-length":
                self.content_length = value
            elif key == b"content-encoding":
                self.content_encoding = _joined(self.content_encoding, value.strip().lower())
            elif key == _REQUEST_ID and _SAFE_ID.fullmatch(value):
                request_id = value.decode("ascii")
            elif key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                self.api_key = value.decode("latin-1")
        self.request_id = request_id if request_id is not None else new_request_id()


def _joined(previous: bytes | None, value: bytes) -> bytes:
    return value if previous is None else previous + b", " + value


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own.

    Splitting the raw path first keeps an encoded slash (`%2F`) inside its segment, where
    it is part of a name rather than a separator that would re-route the request.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        segments: list[str] = scope["path"].strip("/").split("/")
        return segments
    raw = raw.partition(b"?")[0].strip(b"/")
    if b"%" not in raw:
        return raw.decode("utf-8", "replace").split("/")
    return [unquote_to_bytes(p).decode("utf-8", "replace") for p in raw.split(b"/")]


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo gzip or deflate request compression (tritonclient offers both), within `limit`."""
    if encoding == b"gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise InvalidInput(
            f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
            "send the body uncompressed, gzip or deflate"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        # max_length bounds the output, so a small compressed bomb cannot exhaust memory.
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"the decompressed request body exceeds the limit of {limit} bytes")
    return out


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(method, allowed)


def _header_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    # int() would also take "+12" and "1_2"; a byte count is ASCII digits only.
    value = value.strip(b" \t")
    if value.isdigit():
        if len(value) > _MAX_LENGTH_DIGITS:  # int() refuses thousands of digits anyway
            raise InvalidInput(f"Inference-Header-Content-Length has {len(value)} digits; too long")
        return int(value)
    raise InvalidInput(
        "Inference-Header-Content-Length must be one non-negative integer, the byte length "
        "of the JSON part of the body"
    )


def _object(body: bytes, what: str) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the {what} request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"the {what} request body must be a JSON object")
    return value


def _json(value: Any) -> Response:
    return 200, [_JSON], orjson.dumps(value)


def _error(exc: ModelportError) -> Response:
    if isinstance(exc, MethodNotAllowed):
        body = orjson.dumps({"error": exc.message, "code": exc.kind.value})
        return 405, [_JSON, (b"allow", exc.allowed.encode())], body
    status = STATUS[exc.kind]
    headers = [_JSON]
    if isinstance(exc, Overloaded):
        # Whole seconds, at least one (RFC 9110, 10.2.3).
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    return status, headers, orjson.dumps({"error": exc.message, "code": exc.kind.value})
