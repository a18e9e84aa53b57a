"""The listening gRPC server: connections, what each call's headers ask for, a graceful stop.

`GrpcEndpoint` listens (TCP; TLS with ALPN "h2" when given a context), one `http2.Connection`
per client, and serves a table of `grpc_wire.Method`s by path. It reads what a call's request
headers ask for (the method, a deadline, a message encoding), answers at once what it cannot
serve (405 for a method other than POST, 415 for a content type that is not gRPC,
UNIMPLEMENTED for an unknown path or encoding), and hands the rest to a `grpc_wire.GrpcCall`.
On stop, every connection gets GOAWAY, running calls may finish, and the rest are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any, Final

import grpc

from modelport.transports.grpc_wire import (
    CONTENT_TYPE,
    ENCODINGS,
    CallContext,
    GrpcCall,
    GrpcError,
    Inflate,
    Method,
    inflated,
    status_block,
    timeout_seconds,
)
from modelport.transports.http2 import Connection, Stream
from modelport.transports.http2_frames import Header, header_block

MAX_STREAMS: Final = 1024
"""Calls one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS)."""


class _Answered:
    """The handler of a stream already answered at its headers: its body is not wanted."""

    __slots__ = ()

    def data(self, chunk: bytes, end: bool) -> None:
        pass

    def closed(self, code: int) -> None:
        pass


_ANSWERED: Final = _Answered()


def inflater(encoding: str) -> Inflate | None:
    """How to inflate messages of `encoding`; None for identity; GrpcError for the unknown."""
    if encoding == "identity":
        return None
    if encoding == "gzip":
        return lambda data, limit: inflated(data, limit, 31)
    if encoding == "deflate":
        return lambda data, limit: inflated(data, limit, 15)
    raise GrpcError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"grpc-encoding {encoding!r} is not supported; send one of {ENCODINGS}",
        (("grpc-accept-encoding", ENCODINGS),),
    )


class GrpcEndpoint:
    """A listening gRPC server: connections, their calls, and a graceful stop."""

    def __init__(self, methods: Mapping[str, Method], *, max_message_bytes: int) -> None:
        self._methods = dict(methods)
        self.max_message_bytes = max_message_bytes
        self.calls: set[asyncio.Task[None]] = set()
        self._connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()
        self._stopping = False

    @property
    def connections(self) -> int:
        """How many client connections are open."""
        return len(self._connections)

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Listen on host:port (SO_REUSEPORT: every worker listens on the same port); the port.

        OSError when it cannot bind.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connect, host, port, reuse_port=True, ssl=tls, backlog=2048
        )
        return int(self._server.sockets[0].getsockname()[1])

    def _connect(self) -> Connection:
        # Counted once made: a TLS connection whose handshake fails is never made, nor lost.
        return Connection(
            self._open, max_streams=MAX_STREAMS, on_open=self._opened, on_close=self._closed
        )

    def _opened(self, connection: Connection) -> None:
        self._connections.add(connection)
        self._all_closed.clear()
        if self._stopping:
            # Its handshake finished after the stop began.
            connection.go_away()

    def _closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_closed.set()

    def _open(self, stream: Stream, headers: list[Header], end: bool) -> Any:
        method_name = path = content_type = ""
        timeout: str | None = None
        encoding = "identity"
        for name, value in headers:
            if name.startswith(":"):
                if name == ":path":
                    path = value
                elif name == ":method":
                    method_name = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
        if method_name != "POST":
            stream.send_headers(header_block(((":status", "405"),)), end=True)
            return _ANSWERED
        if not content_type.startswith(CONTENT_TYPE):
            stream.send_headers(header_block(((":status", "415"),)), end=True)
            return _ANSWERED
        try:
            method = self._methods.get(path)
            if method is None:
                raise GrpcError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"there is no method {path}; see proto/inference.proto or use reflection",
                )
            inflate = inflater(encoding)
            seconds = None if timeout is None else timeout_seconds(timeout)
        except GrpcError as exc:
            stream.send_headers(status_block(exc.code, exc.message, exc.trailers, only=True), True)
            return _ANSWERED
        peer = stream.peer
        context = CallContext(headers, path, "" if peer is None else peer[0], seconds)
        call = GrpcCall(self, stream, method, context, inflate)
        if end:
            call.data(b"", True)
        return call

    def go_away(self) -> None:
        """Take no new connections or calls; the calls open now go on."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.go_away()

    async def stop(self, grace: float) -> None:
        """Stop (as `go_away`), wait up to `grace` seconds for open calls, cancel the rest."""
        self.go_away()
        if self._connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace)
        for connection in list(self._connections):
            connection.abort()
        for task in list(self.calls):
            task.cancel()
        if self.calls:
            await asyncio.wait(list(self.calls), timeout=grace)
        if self._server is not None:
            await self._server.wait_closed()
