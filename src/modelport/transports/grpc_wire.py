"""gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2), on the worker's event loop: calls, messages, status.

A `GrpcCall` (made by `grpc_endpoint.GrpcEndpoint` for each call it serves) reassembles the
call's length-prefixed messages (gzip and deflate accepted), holds them to the message size
limit, and runs the method's handler as a task on the loop: a unary handler answers one request with
one response; a streaming one reads an async iterator of requests and yields responses.
Handlers end a call with a status by raising `GrpcError`; anything else they raise is logged
and answered INTERNAL. A call whose client resets it, or whose connection drops, has its task
cancelled.

Deadlines (`grpc-timeout`) reach the handler as `CallContext.timeout`. A streaming call is
also cancelled when its deadline passes and answered DEADLINE_EXCEEDED; a unary one is left to
the handler, which answers a deadline with its own message (and its client gives up anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import grpc
from google.protobuf.message import DecodeError

from modelport.transports.http2 import Stream
from modelport.transports.http2_frames import CANCEL, Header, header_block

log = logging.getLogger("modelport.grpc")

Trailers = tuple[tuple[str, str], ...]
UnaryHandler = Callable[[Any, "CallContext"], Awaitable[Any]]
StreamHandler = Callable[[AsyncIterator[Any], "CallContext"], AsyncGenerator[Any, None]]
Inflate = Callable[[bytes, int], bytes]
"""Inflates a message, returning at most the limit given plus one byte."""

INBOX: Final = 64
"""Request messages of one stream held before its handler takes them; beyond that the client
waits for window (flow control), so a slow stream holds a bounded amount of memory."""
BACKLOG: Final = 1 << 20
"""Response bytes a stream may have waiting for the client's window before its handler waits."""
ENCODINGS: Final = "identity,deflate,gzip"

CONTENT_TYPE: Final = "application/grpc"
_TIMEOUT: Final = re.compile(r"(\d{1,8})([HMSmun])")
_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_RESPONSE_HEADERS: Final = header_block(((":status", "200"), ("content-type", CONTENT_TYPE)))
_OK: Final = header_block((("grpc-status", "0"),))
_UNRESERVED: Final = frozenset(range(0x20, 0x7F)) - {ord("%")}


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: how its messages parse and serialize, and its handler (exactly one of the two:
    `unary` for one request and one response, `stream` for everything else)."""

    parse: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    unary: UnaryHandler | None = None
    stream: StreamHandler | None = None


class GrpcError(Exception):
    """Ends a call with `code`, `message` and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: Trailers = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers


class CallContext:
    """What a call carries (headers as `metadata`, the client's host, the deadline's seconds)
    and the trailing metadata its handler adds."""

    __slots__ = ("metadata", "path", "peer", "timeout", "trailers")

    def __init__(self, metadata: list[Header], path: str, peer: str, timeout: float | None):
        self.metadata = metadata
        self.path = path
        self.peer = peer
        self.timeout = timeout
        self.trailers: Trailers = ()


def message_frame(body: bytes) -> bytes:
    """One length-prefixed gRPC message, not compressed."""
    return b"\x00" + len(body).to_bytes(4) + body


def status_block(code: grpc.StatusCode, message: str, trailers: Trailers, *, only: bool) -> bytes:
    """The header block that ends a call; `only`: a trailers-only response (no body came)."""
    fields: list[Header] = [(":status", "200"), ("content-type", CONTENT_TYPE)] if only else []
    fields.append(("grpc-status", str(code.value[0])))
    if message:
        fields.append(("grpc-message", percent_encoded(message)))
    fields.extend(trailers)
    return header_block(fields)


def percent_encoded(text: str) -> str:
    """`grpc-message`'s encoding: UTF-8, with '%' and bytes outside printable ASCII as %XX."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def timeout_seconds(value: str) -> float:
    """A `grpc-timeout` value ("100m", "5S") in seconds; GrpcError when malformed."""
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise GrpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"grpc-timeout {value!r} is malformed; send up to 8 digits and a unit (H M S m u n)",
        )
    return int(match[1]) * _UNITS[match[2]]


class Calls(Protocol):
    """Where a call runs (a `GrpcEndpoint`): its message size limit and the running calls."""

    max_message_bytes: int
    calls: set[asyncio.Task[None]]


class GrpcCall:
    """One call on one stream: the `http2.Handler` that turns its bytes into messages and runs
    its method's handler."""

    __slots__ = (
        "_buffer",
        "_ended",
        "_endpoint",
        "_inbox",
        "_inflate",
        "_method",
        "_request",
        "_started",
        "_stream",
        "_task",
        "_timer",
        "_uncredited",
        "_waiter",
        "context",
        "expired",
    )

    def __init__(
        self,
        endpoint: Calls,
        stream: Stream,
        method: Method,
        context: CallContext,
        inflate: Inflate | None,
    ) -> None:
        self._endpoint = endpoint
        self._stream = stream
        self._method = method
        self.context = context
        self._inflate = inflate
        self._buffer: bytearray | None = None
        self._request: bytes | None = None
        self._started = False
        self._inbox: deque[bytes] = deque()
        self._ended = False
        self._uncredited = 0
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False
        if method.stream is not None:
            self._start(self._streaming())
            if context.timeout is not None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(context.timeout, self._expire)

    # -- http2.Handler -------------------------------------------------------------------

    def data(self, chunk: bytes, end: bool) -> None:
        if self._stream.local_closed:
            return
        if chunk:
            self._take(chunk)
        if end and not self._stream.local_closed:
            self._ended = True
            if self._buffer is not None:
                self.fail(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the call ended inside a message ({len(self._buffer)} bytes of it came); "
                    "send each message whole: 5 bytes of flag and length, then that many bytes",
                )
            elif self._method.stream is not None:
                self._wake()
            elif self._request is None:
                self.fail(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "the call ended without a request message; send one",
                )
            else:
                self._start(self._unary(self._request))

    def closed(self, code: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    # -- messages in ---------------------------------------------------------------------

    def _take(self, chunk: bytes) -> None:
        buffer: bytes | bytearray
        if self._buffer is None:
            buffer = chunk
        else:
            self._buffer += chunk
            buffer = self._buffer
        size = len(buffer)
        position = 0
        limit = self._endpoint.max_message_bytes
        while size - position >= 5:
            length = int.from_bytes(buffer[position + 1 : position + 5])
            if length > limit:
                self._too_large(length)
                return
            end = position + 5 + length
            if end > size:
                break
            compressed = buffer[position]
            message = bytes(buffer[position + 5 : end])
            position = end
            if compressed:
                inflated = self._inflated(message)
                if inflated is None:
                    return
                message = inflated
            self._message(message)
            if self._stream.local_closed:
                return
        rest = buffer[position:]
        self._buffer = bytearray(rest) if rest else None
        if self._method.stream is None:
            self._stream.consumed(len(chunk))
        else:
            self._uncredited += len(chunk)
            self._credit()

    def _inflated(self, message: bytes) -> bytes | None:
        if self._inflate is None:
            self.fail(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a message is marked compressed but the call has no grpc-encoding; name it",
            )
            return None
        limit = self._endpoint.max_message_bytes
        try:
            inflated = self._inflate(message, limit)
        except (zlib.error, ValueError):
            self.fail(grpc.StatusCode.INVALID_ARGUMENT, "a compressed message does not inflate")
            return None
        if len(inflated) > limit:
            self.fail(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a compressed message inflates past the limit ({limit} bytes); send smaller "
                "requests or raise --max-body-bytes",
            )
            return None
        return inflated

    def _too_large(self, length: int) -> None:
        limit = self._endpoint.max_message_bytes
        self.fail(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"received a message larger than the limit ({length} vs. {limit} bytes); send "
            "smaller requests or raise --max-body-bytes",
        )

    def _message(self, message: bytes) -> None:
        if self._method.stream is not None:
            self._inbox.append(message)
            self._wake()
        elif self._request is not None:
            self.fail(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{self.context.path} takes one request message; this call sent more",
            )
        else:
            self._request = message

    def _credit(self) -> None:
        if self._uncredited and len(self._inbox) < INBOX:
            self._stream.consumed(self._uncredited)
            self._uncredited = 0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _requests(self) -> AsyncIterator[Any]:
        parse = self._method.parse
        while True:
            if self._inbox:
                message = self._inbox.popleft()
                self._credit()
                yield _parsed(parse, message, self.context.path)
            elif self._ended:
                return
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter

    # -- running the handler -------------------------------------------------------------

    def _start(self, work: Awaitable[None]) -> None:
        self._task = asyncio.ensure_future(work)
        self._endpoint.calls.add(self._task)
        self._task.add_done_callback(self._endpoint.calls.discard)

    async def _unary(self, message: bytes) -> None:
        method = self._method
        assert method.unary is not None
        try:
            request = _parsed(method.parse, message, self.context.path)
            response = await method.unary(request, self.context)
            body = method.serialize(response)
        except GrpcError as exc:
            self.fail(exc.code, exc.message, exc.trailers)
            return
        except asyncio.CancelledError:
            # The client went away, the server stops, or the call was already answered
            # (`fail`): whatever has not been answered is reset.
            if not self._stream.local_closed:
                self._stream.reset(CANCEL)
            return
        except Exception:
            log.exception("internal error in %s", self.context.path)
            self.fail(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            return
        trailers = self.context.trailers
        self._stream.respond(
            _RESPONSE_HEADERS,
            message_frame(body),
            _OK if not trailers else status_block(grpc.StatusCode.OK, "", trailers, only=False),
        )

    async def _streaming(self) -> None:
        method = self._method
        assert method.stream is not None
        stream = self._stream
        code, message = grpc.StatusCode.OK, ""
        trailers: Trailers = ()
        try:
            responses = method.stream(self._requests(), self.context)
            async with contextlib.aclosing(responses):
                async for response in responses:
                    if not self._started:
                        stream.send_headers(_RESPONSE_HEADERS)
                        self._started = True
                    stream.send_data(message_frame(method.serialize(response)))
                    if stream.backlog > BACKLOG:
                        await stream.drained()
            trailers = self.context.trailers
        except GrpcError as exc:
            code, message, trailers = exc.code, exc.message, exc.trailers
        except asyncio.CancelledError:
            if not self.expired:
                # Unless `fail` has answered already (its status may still wait for window).
                if not stream.local_closed:
                    stream.reset(CANCEL)
                return
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed"
        except Exception:
            log.exception("internal error in %s", self.context.path)
            code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
        finally:
            if self._timer is not None:
                self._timer.cancel()
        stream.send_headers(status_block(code, message, trailers, only=not self._started), True)

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    def fail(self, code: grpc.StatusCode, message: str, trailers: Trailers = ()) -> None:
        """End the call now with `code` (as trailers after what it answered so far)."""
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        block = status_block(code, message, trailers, only=not self._started)
        self._stream.send_headers(block, end=True)


def _parsed(parse: Callable[[bytes], Any], message: bytes, path: str) -> Any:
    try:
        return parse(message)
    except DecodeError:
        raise GrpcError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message for {path}"
        ) from None


def inflated(data: bytes, limit: int, wbits: int) -> bytes:
    """`data` inflated (zlib `wbits`), but at most `limit` + 1 bytes of it: more than `limit`
    says too large without holding all of a compression bomb. zlib.error when it is not a
    whole compressed stream."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) <= limit and not inflater.eof:
        raise zlib.error("the compressed message ends early")
    return out
