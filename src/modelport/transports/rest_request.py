"""One HTTP request as the REST handlers see it: headers picked out once, the body on demand.

Also the response shape every handler returns, `(status, headers, body)`, and the small
encoders they share.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import orjson

from modelport.errors import InvalidInput, ModelportError, TooLarge
from modelport.protocol.types import InferResponse
from modelport.serving.requests import REQUEST_ID_PATTERN
from modelport.serving.telemetry import Call, new_request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]
"""What a handler answers: status, headers, body."""

JSON: Final = (b"content-type", b"application/json")
BINARY: Final = (b"content-type", b"application/octet-stream")
HTML: Final = (b"content-type", b"text/html; charset=utf-8")
HEADER_LENGTH: Final = b"inference-header-content-length"
REQUEST_ID: Final = b"x-request-id"
_SAFE_ID: Final = re.compile(REQUEST_ID_PATTERN.encode("ascii"))


class Request:
    """The request headers the API reads, picked out in one pass, and what routing found.

    `params` holds the path parameters of the matched route (e.g. `model_name`); `call` is
    the record of the request that telemetry receives when it is answered.
    """

    __slots__ = (
        "accept",
        "api_key",
        "authorization",
        "call",
        "content_encoding",
        "content_length",
        "content_type",
        "error_body",
        "header_length",
        "host",
        "max_body",
        "origin",
        "params",
        "receive",
        "request_id",
        "scope",
    )

    def __init__(self, scope: Scope, receive: Receive, max_body: int) -> None:
        self.scope = scope
        self.receive = receive
        self.max_body = max_body
        self.params: dict[str, str] = {}
        self.header_length: bytes | None = None
        self.content_length: bytes | None = None
        self.content_encoding: bytes | None = None
        self.authorization: str | None = None
        self.api_key: str | None = None
        self.host: bytes | None = None
        self.origin: bytes | None = None
        self.content_type: bytes | None = None
        self.accept: bytes | None = None
        self.error_body: Callable[[ModelportError, int], bytes] | None = None
        """How the matched route's protocol shapes an error body (None: the OIP's)."""
        request_id: str | None = None
        for key, value in scope["headers"]:
            # A repeated header means its values joined by commas (RFC 9110, 5.3), which the
            # checks on these four then refuse instead of silently taking the last one.
            if key == b"host":
                self.host = _joined(self.host, value)
            elif key == b"origin":
                self.origin = _joined(self.origin, value)
            elif key == HEADER_LENGTH:
                self.header_length = _joined(self.header_length, value)
            elif key == b"content-length":
                self.content_length = value
            elif key == b"content-type":
                self.content_type = _joined(self.content_type, value)
            elif key == b"accept":
                self.accept = _joined(self.accept, value)
            elif key == b"content-encoding":
                self.content_encoding = _joined(self.content_encoding, value.strip().lower())
            elif key == REQUEST_ID and _SAFE_ID.fullmatch(value):
                request_id = value.decode("ascii")
            elif key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"x-api-key":
                self.api_key = value.decode("latin-1")
        self.request_id = request_id if request_id is not None else new_request_id()
        client = scope.get("client")
        self.call = Call("rest", self.request_id, caller=client[0] if client else "")

    async def body(self) -> bytes:
        """The whole body, decompressed; TooLarge beyond `max_body` bytes either way."""
        limit = self.max_body
        if self.content_length is not None:
            try:
                declared = int(self.content_length)
            except ValueError:
                raise InvalidInput("Content-Length is not a number") from None
            if declared > limit:
                raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise InvalidInput("client disconnected before sending the whole body")
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.content_encoding is None or self.content_encoding == b"identity":
            return body
        return _decompress(body, self.content_encoding, limit)

    async def json_object(self, what: str) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); InvalidInput names the `what` request."""
        body = await self.body()
        if not body.strip():
            return {}
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the {what} request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"the {what} request body must be a JSON object")
        return value


def segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own.

    Splitting the raw path first keeps an encoded slash (`%2F`) inside its segment, where
    it is part of a name rather than a separator that would re-route the request.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        parts: list[str] = scope["path"].strip("/").split("/")
        return parts
    raw = raw.partition(b"?")[0].strip(b"/")
    if b"%" not in raw:
        return raw.decode("utf-8", "replace").split("/")
    return [unquote_to_bytes(p).decode("utf-8", "replace") for p in raw.split(b"/")]


def provenance_headers(response: InferResponse) -> list[tuple[bytes, bytes]]:
    """The version and artifact digest of the answer, for bodies with no place for them."""
    return [
        (b"x-model-version", response.model_version.encode()),
        (b"x-model-sha256", str(response.parameters.get("modelport.sha256", "")).encode()),
    ]


def json_response(value: Any) -> Response:
    """200 with `value` as JSON (dataclasses encode field by field, in order)."""
    return 200, [JSON], orjson.dumps(value)


def _joined(previous: bytes | None, value: bytes) -> bytes:
    return value if previous is None else previous + b", " + value


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
