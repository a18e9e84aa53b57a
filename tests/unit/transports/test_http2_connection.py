"""An HTTP/2 `Connection` fed bytes by hand: which mistakes are a stream's, and what is freed.

A fake transport keeps what the connection writes; handlers record what they hear. Each test
sends the preface and SETTINGS, then frames, and reads the frames the connection wrote back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelport.transports import http2
from modelport.transports import http2_frames as wire
from modelport.transports.http2_frames import frame, header_block

pytestmark = pytest.mark.anyio

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/s/M"), (":authority", "x")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Transport:
    """What the connection writes, and whether it closed."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str) -> Any:
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Recorder:
    """A handler that keeps what its stream heard."""

    def __init__(self) -> None:
        self.body = b""
        self.ended = False
        self.closed_with: int | None = None

    def data(self, chunk: bytes, end: bool) -> None:
        self.body += chunk
        self.ended = self.ended or end

    def closed(self, code: int) -> None:
        self.closed_with = code


class Peer:
    """One connection and the client side of it, in bytes."""

    def __init__(self) -> None:
        self.handlers: dict[int, Recorder] = {}
        self.streams: dict[int, http2.Stream] = {}
        self.transport = Transport()
        self.conn = http2.Connection(self._open, max_streams=100, on_close=lambda c: None)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.send(wire.PREFACE + frame(wire.SETTINGS, 0, 0))
        self.read()

    def _open(self, stream: http2.Stream, headers: list[wire.Header], end: bool) -> Recorder:
        self.streams[stream.id] = stream
        self.handlers[stream.id] = Recorder()
        self.handlers[stream.id].ended = end
        return self.handlers[stream.id]

    def send(self, *frames: bytes) -> None:
        self.conn.data_received(b"".join(frames))

    def read(self) -> list[tuple[int, int, int, bytes]]:
        """The frames written since the last read: (type, flags, stream, payload)."""
        data, self.transport.written = bytes(self.transport.written), bytearray()
        return list(_frames(data))

    def open(self, sid: int, end: bool = False) -> Recorder:
        flags = wire.END_HEADERS | (wire.END_STREAM if end else 0)
        self.send(frame(wire.HEADERS, flags, sid, header_block(REQUEST)))
        return self.handlers[sid]


def _frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    while data:
        length = int.from_bytes(data[:3])
        yield data[3], data[4], int.from_bytes(data[5:9]), data[9 : 9 + length]
        data = data[9 + length :]


def resets(frames: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    return [(sid, int.from_bytes(p)) for kind, _, sid, p in frames if kind == wire.RST_STREAM]


def goaway(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(p[4:8]) for kind, _, _, p in frames if kind == wire.GOAWAY]
    return codes[0] if codes else None


async def test_every_reset_stream_is_closed_even_the_one_that_sends_the_peer_away() -> None:
    peer = Peer()
    count = http2.RESET_ALLOWANCE + 1
    for sid in range(1, 2 * count, 2):
        peer.open(sid)
        peer.send(frame(wire.RST_STREAM, 0, sid, wire.CANCEL.to_bytes(4)))
    assert goaway(peer.read()) == wire.ENHANCE_YOUR_CALM
    assert peer.transport.closed
    assert all(h.closed_with == wire.CANCEL for h in peer.handlers.values())
    assert len(peer.handlers) == count
    assert peer.conn.idle


async def test_priority_of_the_wrong_size_on_an_open_stream_closes_that_stream() -> None:
    peer = Peer()
    handler = peer.open(1)
    peer.send(frame(wire.PRIORITY, 0, 1, b"\x00" * 4))
    frames = peer.read()
    assert resets(frames) == [(1, wire.FRAME_SIZE_ERROR)]
    assert handler.closed_with == wire.FRAME_SIZE_ERROR
    assert peer.conn.idle  # forgotten: it no longer counts against the stream limit
    assert goaway(frames) is None


async def test_headers_after_the_request_ended_are_a_stream_error() -> None:
    """RFC 9113 §5.1: a half-closed (remote) stream answers more HEADERS with STREAM_CLOSED."""
    peer = Peer()
    handler = peer.open(1, end=True)
    trailers = header_block([("x-trailer", "1")])
    peer.send(frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 1, trailers))
    frames = peer.read()
    assert resets(frames) == [(1, wire.STREAM_CLOSED)]
    assert goaway(frames) is None
    assert handler.closed_with == wire.STREAM_CLOSED
    assert peer.open(3) is peer.handlers[3]


async def test_headers_without_end_stream_in_the_middle_of_a_request_reset_the_stream() -> None:
    """RFC 9113 §8.1: a malformed request is a stream error of type PROTOCOL_ERROR."""
    peer = Peer()
    handler = peer.open(1)
    peer.send(frame(wire.HEADERS, wire.END_HEADERS, 1, header_block([("x-more", "1")])))
    frames = peer.read()
    assert resets(frames) == [(1, wire.PROTOCOL_ERROR)]
    assert goaway(frames) is None
    assert handler.closed_with == wire.PROTOCOL_ERROR


async def test_trailers_on_a_stream_already_answered_and_reset_do_not_end_the_connection() -> None:
    """The peer may send on a stream before it hears our RST_STREAM (RFC 9113 §5.1)."""
    peer = Peer()
    peer.open(1)
    peer.streams[1].respond(header_block([(":status", "200")]), b"x", header_block([("a", "b")]))
    trailers = header_block([("x-trailer", "1")])
    peer.send(frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 1, trailers))
    frames = peer.read()
    assert goaway(frames) is None
    # The answer ended before the request: reset (NO_ERROR); the late trailers: STREAM_CLOSED.
    assert resets(frames) == [(1, wire.NO_ERROR), (1, wire.STREAM_CLOSED)]
    peer.open(3, end=True)
    assert peer.handlers[3].ended


@pytest.mark.parametrize("name", ["", "X-Upper"])
async def test_a_malformed_header_name_resets_the_stream_before_any_handler(name: str) -> None:
    """RFC 9113 §8.2.1: names are non-empty and lower-case; else the request is malformed."""
    peer = Peer()
    block = header_block([*REQUEST, (name, "v")])
    peer.send(frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 1, block))
    frames = peer.read()
    assert resets(frames) == [(1, wire.PROTOCOL_ERROR)]
    assert goaway(frames) is None
    assert not peer.handlers
    assert peer.open(3, end=True).ended


async def test_an_initial_window_that_takes_a_stream_past_the_maximum_is_a_flow_control_error() -> (
    None
):
    """RFC 9113 §6.9.2: a SETTINGS change that overflows any window is FLOW_CONTROL_ERROR."""
    peer = Peer()
    peer.open(1)
    increment = wire.MAX_WINDOW - wire.DEFAULT_WINDOW
    peer.send(frame(wire.WINDOW_UPDATE, 0, 1, increment.to_bytes(4)))
    assert goaway(peer.read()) is None
    peer.send(frame(wire.SETTINGS, 0, 0, (4).to_bytes(2) + (wire.DEFAULT_WINDOW + 1).to_bytes(4)))
    assert goaway(peer.read()) == wire.FLOW_CONTROL_ERROR


async def test_stream_errors_the_peer_provokes_count_as_resets() -> None:
    """A WINDOW_UPDATE of 0 makes us reset a stream as cheaply as RST_STREAM does."""
    peer = Peer()
    count = http2.RESET_ALLOWANCE + 1
    for sid in range(1, 2 * count, 2):
        peer.open(sid)
        peer.send(frame(wire.WINDOW_UPDATE, 0, sid, (0).to_bytes(4)))
    assert goaway(peer.read()) == wire.ENHANCE_YOUR_CALM
    assert all(h.closed_with == wire.PROTOCOL_ERROR for h in peer.handlers.values())
    assert peer.conn.idle


@pytest.mark.parametrize(
    ("stream", "payload", "code"),
    [(1, b"\x00" * 8, wire.PROTOCOL_ERROR), (0, b"\x00" * 7, wire.FRAME_SIZE_ERROR)],
)
async def test_a_malformed_goaway_is_a_connection_error(
    stream: int, payload: bytes, code: int
) -> None:
    """RFC 9113 §6.8: GOAWAY is for stream 0 and has at least 8 bytes."""
    peer = Peer()
    peer.send(frame(wire.GOAWAY, 0, stream, payload))
    assert goaway(peer.read()) == code
