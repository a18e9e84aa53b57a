"""HTTP/2 connections for the gRPC server (RFC 9113): streams, flow control, SETTINGS, GOAWAY.

One `Connection` per client connection, an asyncio protocol on the worker's event loop. It
reads frames, keeps the flow-control windows of the connection and of each stream both ways,
answers SETTINGS and PING, and hands each stream to what the server's `Opener` returns for
it: the request headers once they are complete, then the body as it arrives, then its end or
its reset. What a stream sends leaves as soon as the peer's windows allow, and everything
written in one turn of the loop leaves in one write.

Only what a server needs: no server push, priorities accepted and ignored; frames and HPACK
are in `http2_frames`. A peer that breaks the protocol gets GOAWAY with the error code and a
reason; a stream that breaks it gets RST_STREAM.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol, cast

import hpack

from modelport.transports.http2_frames import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_HEADER_LIST,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    Header,
    HeaderDecoder,
    ProtocolViolation,
    frame,
    goaway,
    unpadded,
)

log = logging.getLogger("modelport.grpc")

STREAM_WINDOW: Final = 1 << 20
"""What each stream may send before it hears from us (SETTINGS_INITIAL_WINDOW_SIZE): large
tensors arrive without a round trip per 64 KiB."""
CONNECTION_WINDOW: Final = 1 << 24
"""What the connection's streams together may send before it hears from us."""
MAX_FRAME: Final = 1 << 20
"""The largest frame we accept (SETTINGS_MAX_FRAME_SIZE)."""
MAX_HEADER_BLOCK: Final = 1 << 17
"""The largest header block, compressed, across HEADERS and CONTINUATION frames."""
RESET_ALLOWANCE: Final = 1000
"""Streams a peer may reset beyond twice the streams it lets finish, before it is sent away
(the "rapid reset" attack opens and resets streams to make the server work for nothing)."""


class Handler(Protocol):
    """What receives one stream's request, from `Opener`."""

    def data(self, chunk: bytes, end: bool) -> None:
        """Body bytes (maybe empty); `end`: the peer sends nothing more."""

    def closed(self, code: int) -> None:
        """The stream is gone before it ended: reset by the peer (`code`) or the connection
        closed (CANCEL). Nothing sent on it leaves any more."""


Opener = Callable[["Stream", list[Header], bool], Handler]
"""Called with a new stream, its request headers and whether the request already ended."""


class Stream:
    """One request and its response; `send_*` queue frames that leave as windows allow."""

    __slots__ = (
        "_connection",
        "_drained",
        "_pending",
        "handler",
        "id",
        "local_closed",
        "recv_unacked",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, connection: Connection, stream_id: int, send_window: int) -> None:
        self._connection = connection
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = STREAM_WINDOW
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.handler: Handler | None = None
        # Frames not yet sent, in order: (HEADERS, block, end) or (DATA, bytes, end).
        self._pending: deque[tuple[int, bytes | memoryview, bool]] = deque()
        self._drained: asyncio.Future[None] | None = None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The client's address (host, port), when the socket has one."""
        return self._connection.peer

    def send_headers(self, block: bytes, end: bool = False) -> None:
        """Send a header block (see `header_block`); `end` closes our side."""
        self._queue(HEADERS, block, end)

    def send_data(self, data: bytes, end: bool = False) -> None:
        """Send body bytes, in frames the peer's windows and frame size allow."""
        self._queue(DATA, data, end)

    def respond(self, headers: bytes, body: bytes, trailers: bytes) -> None:
        """Headers, body and trailers at once: a whole response, the stream's end."""
        if self.local_closed:
            return
        pending = self._pending
        pending.append((HEADERS, headers, False))
        pending.append((DATA, body, False))
        pending.append((HEADERS, trailers, True))
        self.local_closed = True
        self._connection.push(self)

    def reset(self, code: int = CANCEL) -> None:
        """End the stream at once with RST_STREAM; what was queued is dropped."""
        self._connection.reset(self, code)

    def consumed(self, count: int) -> None:
        """The handler has taken `count` body bytes: the peer may send that much more."""
        self.recv_unacked += count
        if self.recv_unacked >= STREAM_WINDOW // 2 and not self.remote_closed:
            self._connection.window_update(self.id, self.recv_unacked)
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0

    @property
    def backlog(self) -> int:
        """Bytes queued that the peer's windows do not let out yet."""
        return sum(len(item[1]) for item in self._pending)

    async def drained(self) -> None:
        """Wait until everything queued has left (or the stream is gone)."""
        if not self._pending and not self._connection.paused:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def _queue(self, kind: int, payload: bytes, end: bool) -> None:
        if self.local_closed:
            return
        self._pending.append((kind, payload, end))
        self.local_closed = end
        self._connection.push(self)

    def _wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None


class Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection (see the module docstring)."""

    def __init__(
        self,
        opener: Opener,
        *,
        max_streams: int,
        on_close: Callable[[Connection], None],
        on_open: Callable[[Connection], None] = lambda connection: None,
    ) -> None:
        """`on_open` is called once the connection is made (after a TLS handshake: one that
        fails never opens it), `on_close` when an opened connection is lost."""
        self._opener = opener
        self._max_streams = max_streams
        self._on_open = on_open
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.paused = False
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()  # the start of a frame not read in full yet
        self._preface = False
        self._settled = False  # the peer's first frame, its SETTINGS, has arrived
        self._decoder = HeaderDecoder()
        self._streams: dict[int, Stream] = {}
        self._last_id = 0
        self._continuation: tuple[int, int, bytearray] | None = None
        self._send_window = DEFAULT_WINDOW
        self._peer_window = DEFAULT_WINDOW
        self._peer_frame = DEFAULT_FRAME
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._blocked: dict[int, Stream] = {}
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._reading = False
        self._going_away = False
        self._closing = False  # we closed: what the peer still sends is not read
        self._resets = 0
        self._finished = 0

    # -- the asyncio protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        settings = b"".join(
            key.to_bytes(2) + value.to_bytes(4)
            for key, value in (
                (0x3, self._max_streams),
                (0x4, STREAM_WINDOW),
                (0x5, MAX_FRAME),
                (0x6, MAX_HEADER_LIST),
            )
        )
        self._write(frame(SETTINGS, 0, 0, settings))
        self._write(frame(WINDOW_UPDATE, 0, 0, (CONNECTION_WINDOW - DEFAULT_WINDOW).to_bytes(4)))
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            # A TLS transport may still hand over what it decrypted after close().
            return
        self._reading = True
        try:
            self._receive(data)
        except ProtocolViolation as exc:
            log.info("HTTP/2 error from %s: %s", self.peer, exc.reason)
            self._write(goaway(self._last_id, exc.code, exc.reason))
            self._close()
        finally:
            self._reading = False
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        for stream in streams:
            stream.local_closed = True
            stream._wake()
            if stream.handler is not None:
                stream.handler.closed(CANCEL)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._transport = None
        self._on_close(self)

    def pause_writing(self) -> None:
        # The client reads slower than we answer: read no more requests until it catches up.
        self.paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self._transport is not None:
            self._transport.resume_reading()
        for stream in list(self._streams.values()):
            if not stream._pending:
                stream._wake()

    # -- what the server does with a connection ------------------------------------------

    @property
    def idle(self) -> bool:
        """No stream is open."""
        return not self._streams

    def go_away(self) -> None:
        """Stop taking new streams (GOAWAY); the open ones finish, then the connection closes."""
        if self._going_away or self._transport is None:
            return
        self._going_away = True
        self._write(goaway(self._last_id, NO_ERROR, ""))
        if not self._streams:
            self._close()

    def abort(self) -> None:
        """Close at once; open streams are closed (CANCEL)."""
        if self._transport is not None:
            self._transport.abort()

    # -- reading -------------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        # A frame that comes in many reads grows one buffer, instead of being copied anew
        # with each read.
        buffer: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        else:
            buffer = data
        position = 0
        if not self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(buffer):
                    raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer = bytearray(buffer)
                return
            if not buffer.startswith(PREFACE):
                raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = True
            position = len(PREFACE)
        size = len(buffer)
        while size - position >= 9 and not self._closing:
            length = (buffer[position] << 16) | (buffer[position + 1] << 8) | buffer[position + 2]
            if length > MAX_FRAME:
                raise ProtocolViolation(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            end = position + 9 + length
            if end > size:
                break
            kind = buffer[position + 3]
            flags = buffer[position + 4]
            stream_id = int.from_bytes(buffer[position + 5 : position + 9]) & MAX_WINDOW
            payload = bytes(buffer[position + 9 : end])
            position = end
            self._frame(kind, flags, stream_id, payload)
        if buffer is self._buffer:
            del self._buffer[:position]
        elif position < len(buffer):
            self._buffer = bytearray(buffer[position:])

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if not self._settled:
            if kind != SETTINGS or flags & ACK:
                raise ProtocolViolation(PROTOCOL_ERROR, "the first frame must be SETTINGS")
            self._settled = True
        if self._continuation is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._more_headers(flags, stream_id, payload)
        elif kind == RST_STREAM:
            self._reset_by_peer(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PRIORITY:
            if stream_id == 0:
                raise ProtocolViolation(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(stream_id, FRAME_SIZE_ERROR)
        elif kind == GOAWAY:
            if stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            # The peer closes: what is open still finishes, then we close too.
            self._going_away = True
            if not self._streams:
                self._close()
        elif kind == PUSH_PROMISE:
            raise ProtocolViolation(PROTOCOL_ERROR, "a client cannot push")
        # Frames of unknown types are ignored (RFC 9113 §4.1).

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self._recv_window -= length
        if self._recv_window < 0:
            raise ProtocolViolation(FLOW_CONTROL_ERROR, "the connection's window was overrun")
        self._recv_unacked += length
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self.window_update(0, self._recv_unacked)
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        data = unpadded(flags, payload) if flags & PADDED else payload
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "DATA on a stream never opened")
            self._reset_id(stream_id, STREAM_CLOSED)
            return
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._reset_stream(stream, FLOW_CONTROL_ERROR)
            return
        # Padding is not the handler's to count.
        stream.consumed(length - len(data))
        end = bool(flags & END_STREAM)
        if end:
            stream.remote_closed = True
        assert stream.handler is not None
        stream.handler.data(data, end)
        if end:
            self._settle(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = unpadded(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._open(stream_id, flags, payload)
        else:
            self._continuation = (stream_id, flags, bytearray(payload))

    def _more_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block = self._continuation[2]
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "a header block over the size limit")
        if flags & END_HEADERS:
            first = self._continuation[1]
            self._continuation = None
            self._open(stream_id, first, bytes(block))

    def _open(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except hpack.HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        end = bool(flags & END_STREAM)
        stream = self._streams.get(stream_id)
        if stream is not None:
            # Trailers: the request's last word. After the request's end, the stream is
            # half-closed (RFC 9113 §5.1: STREAM_CLOSED); without END_STREAM, the request is
            # malformed (§8.1: PROTOCOL_ERROR). Either is the stream's error, not the
            # connection's.
            if stream.remote_closed or not end:
                code = STREAM_CLOSED if stream.remote_closed else PROTOCOL_ERROR
                self._reset_stream(stream, code)
                return
            stream.remote_closed = True
            assert stream.handler is not None
            stream.handler.data(b"", True)
            self._settle(stream)
            return
        if stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a client cannot open stream {stream_id}")
        if stream_id <= self._last_id:
            # A stream that ended, or that we reset while the peer still sent on it (§5.1).
            self._reset_id(stream_id, STREAM_CLOSED)
            return
        self._last_id = stream_id
        if self._going_away or len(self._streams) >= self._max_streams:
            self._reset_id(stream_id, REFUSED_STREAM)
            return
        if not all(name and name == name.lower() for name, _ in headers):
            # Malformed (§8.2.1: names are lower-case, never empty): a stream error.
            self._reset_id(stream_id, PROTOCOL_ERROR)
            return
        stream = Stream(self, stream_id, self._peer_window)
        stream.remote_closed = end
        self._streams[stream_id] = stream
        stream.handler = self._opener(stream, headers, end)
        self._settle(stream)

    def _reset_by_peer(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id > self._last_id:
            raise ProtocolViolation(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._forget(stream)
        if stream.handler is not None:
            stream.handler.closed(int.from_bytes(payload))
        # Only after the handler heard of it: connection_lost no longer sees this stream.
        self._count_reset()

    def _count_reset(self) -> None:
        """One more stream the peer had reset, by RST_STREAM or by a stream error of its
        making (which costs it as little: the "MadeYouReset" variant of rapid reset)."""
        self._resets += 1
        if self._resets > 2 * self._finished + RESET_ALLOWANCE:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "too many streams reset")

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        for offset in range(0, len(payload), 6):
            key = int.from_bytes(payload[offset : offset + 2])
            value = int.from_bytes(payload[offset + 2 : offset + 6])
            if key == 0x2 and value > 1:
                raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1")
            if key == 0x4:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ProtocolViolation(
                            FLOW_CONTROL_ERROR, "the new initial window took a stream past 2^31-1"
                        )
            elif key == 0x5:
                if not DEFAULT_FRAME <= value <= 16_777_215:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self._peer_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._unblock()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload) & MAX_WINDOW
        if stream_id == 0:
            if increment == 0:
                raise ProtocolViolation(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "the window grew past 2^31-1")
            self._unblock()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE on a stream never opened")
            return
        if increment == 0:
            self._reset_stream(stream, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset_stream(stream, FLOW_CONTROL_ERROR)
            return
        self.push(stream)

    # -- writing -------------------------------------------------------------------------

    def push(self, stream: Stream) -> None:
        """Send what `stream` has queued, as far as the windows allow."""
        pending = stream._pending
        write = self._out.append
        while pending:
            kind, payload, end = pending[0]
            if kind == HEADERS:
                self._header_frames(stream.id, payload, end)
                pending.popleft()
                continue
            size = len(payload)
            allowed = min(self._send_window, stream.send_window, self._peer_frame)
            # An empty DATA frame takes no window.
            if size <= allowed or size == 0:
                write(frame(DATA, END_STREAM if end else 0, stream.id, payload))
                self._send_window -= size
                stream.send_window -= size
                pending.popleft()
                continue
            if allowed <= 0:
                self._blocked[stream.id] = stream
                break
            # Slices of a view: a large body is not copied anew for each frame.
            view = memoryview(payload)
            write(frame(DATA, 0, stream.id, view[:allowed]))
            pending[0] = (kind, view[allowed:], end)
            self._send_window -= allowed
            stream.send_window -= allowed
        else:
            self._blocked.pop(stream.id, None)
            stream._wake()
            if stream.local_closed:
                self._finish(stream)
        self._schedule_flush()

    def _header_frames(self, stream_id: int, block: bytes | memoryview, end: bool) -> None:
        limit = self._peer_frame
        first = END_STREAM if end else 0
        if len(block) <= limit:
            self._out.append(frame(HEADERS, first | END_HEADERS, stream_id, block))
            return
        chunks = [block[i : i + limit] for i in range(0, len(block), limit)]
        self._out.append(frame(HEADERS, first, stream_id, chunks[0]))
        for chunk in chunks[1:-1]:
            self._out.append(frame(CONTINUATION, 0, stream_id, chunk))
        self._out.append(frame(CONTINUATION, END_HEADERS, stream_id, chunks[-1]))

    def window_update(self, stream_id: int, increment: int) -> None:
        """Let the peer send `increment` more bytes on the stream (0: the connection)."""
        self._write(frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4)))

    def reset(self, stream: Stream, code: int) -> None:
        """RST_STREAM for `stream`, which is forgotten."""
        if self._streams.get(stream.id) is not stream:
            return
        self._forget(stream)
        self._reset_id(stream.id, code)

    def _forget(self, stream: Stream) -> None:
        """`stream` ends now, both ways: what it had queued is dropped, a writer waiting on it
        wakes."""
        del self._streams[stream.id]
        self._blocked.pop(stream.id, None)
        stream._pending.clear()
        stream.local_closed = stream.remote_closed = True
        stream._wake()
        self._closed_one()

    def _reset_stream(self, stream: Stream, code: int) -> None:
        """A stream error of the peer's making on an open stream: reset, handler told."""
        self.reset(stream, code)
        if stream.handler is not None:
            stream.handler.closed(code)
        self._count_reset()

    def _reset_id(self, stream_id: int, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream_id, code.to_bytes(4)))

    def _stream_error(self, stream_id: int, code: int) -> None:
        """RST_STREAM `code` for `stream_id`; an open stream is forgotten, its handler told."""
        stream = self._streams.get(stream_id)
        if stream is None:
            self._reset_id(stream_id, code)
        else:
            self._reset_stream(stream, code)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                break
            self.push(stream)

    def _settle(self, stream: Stream) -> None:
        if stream.local_closed and not stream._pending:
            self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is not stream:
            return
        if not stream.remote_closed:
            # The answer is complete before the request: the rest of it is not wanted.
            stream.remote_closed = True
            self._reset_id(stream.id, NO_ERROR)
        del self._streams[stream.id]
        self._finished += 1
        self._closed_one()

    def _closed_one(self) -> None:
        if self._going_away and not self._streams:
            self._schedule_flush()

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self._reading:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        transport = self._transport
        if transport is None:
            self._out.clear()
            return
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            transport.write(data)
        if self._going_away and not self._streams:
            self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            if self._out:
                self._transport.write(b"".join(self._out))
                self._out.clear()
            self._transport.close()
