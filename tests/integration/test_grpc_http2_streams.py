"""gRPC streams on the HTTP/2 front end, seen by a raw h2c client: windows, deadlines, resets.

ModelStreamInfer answers past a small client window, across SETTINGS changes mid-stream;
a streaming deadline; a client's mistakes on a stream answered with their status; a rapid
reset flood sent away; and random frames that never make the server log a traceback.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import hpack
import pytest
from h2.settings import SettingCodes
from hyperframe import frame as hf
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.transports.grpc_gen import inference_pb2 as pb
from modelport.transports.http2_frames import header_block

from .conftest import ServerFactory, ServerProcess
from .h2_client import (
    CANCEL,
    INFER,
    PREFACE,
    ROWS,
    Connect,
    Frames,
    connections,
    grpc_frame,
    infer_message,
    iris_server,
    raw_frame,
    request_headers,
)

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024
"""The test server's max_body_bytes."""
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
ENHANCE_YOUR_CALM = 0xB
BAD_LOG = ("Traceback", "Exception in callback", "internal error")
"""What the server's log never shows after a client's mistakes."""


@pytest.fixture(scope="module")
def server(
    start_server: ServerFactory, demo_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> ServerProcess:
    """A gRPC server for iris whose requests may be at most MAX_BODY bytes."""
    return iris_server(start_server, demo_registry, tmp_path_factory.mktemp("h2-streams"), MAX_BODY)


@pytest.fixture
def connect(server: ServerProcess) -> Iterator[Connect]:
    """Open connections to the server (arguments as for Frames); closed after the test."""
    with connections(server.grpc_address) as connect:
        yield connect


def whole_messages(body: bytes) -> int:
    """How many whole length-prefixed messages `body` begins with."""
    count = 0
    while len(body) >= 5 and len(body) >= 5 + int.from_bytes(body[1:5]):
        body, count = body[5 + int.from_bytes(body[1:5]) :], count + 1
    return count


def messages(body: bytes) -> list[bytes]:
    """The length-prefixed messages of `body`, which holds only whole ones."""
    out = []
    while body:
        flag, length = struct.unpack(">BI", body[:5])
        assert flag == 0, "want uncompressed messages"
        assert len(body) >= 5 + length, "want whole messages"
        out.append(body[5 : 5 + length])
        body = body[5 + length :]
    return out


def stream_ids(body: bytes) -> list[str]:
    """The request ids of the ModelStreamInfer responses in `body`, failing on an error."""
    answers = [pb.ModelStreamInferResponse.FromString(m) for m in messages(body)]
    assert not [a.error_message for a in answers if a.error_message]
    return [a.infer_response.id for a in answers]


def send_requests(client: Frames, sid: int, ids: list[str]) -> None:
    for rid in ids:
        client.send_body(sid, grpc_frame(infer_message(ROWS, id=rid)), end=False)


def test_stream_responses_past_a_small_window_wait_for_window_updates_in_order(
    connect: Connect,
) -> None:
    client = connect({SettingCodes.INITIAL_WINDOW_SIZE: 100}, auto_window=False)
    sid = client.start(request_headers(STREAM))
    ids = [f"w{i}" for i in range(8)]
    send_requests(client, sid, ids)
    client.send_body(sid, b"", end=True)
    grants = client.drain(sid, sid, 100)
    assert client.streams[sid].status() == "0"
    assert stream_ids(client.streams[sid].body) == ids
    assert grants >= len(client.streams[sid].body) // 100 - 1  # it waited for each grant
    data = [f for f in client.received if isinstance(f, hf.DataFrame)]
    assert max(f.flow_controlled_length for f in data) <= 100


def test_the_initial_window_lowered_then_raised_mid_stream(connect: Connect) -> None:
    """RFC 9113 §6.9.2: the change applies to open streams, and may make their window negative;
    the client's accounting (from each SETTINGS' ACK on) fails the test on any overrun."""
    client = connect({SettingCodes.INITIAL_WINDOW_SIZE: 1000}, auto_window=False)
    sid = client.start(request_headers(STREAM))
    stream = client.streams[sid]
    send_requests(client, sid, ["before"])
    client.read_until(lambda: whole_messages(stream.body) == 1, "the first answer")
    client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    client.read_until(lambda: len(client.of(hf.SettingsFrame, "ACK")) == 3, "the ACK of 0")
    assert client.windows[sid] < 0  # what it already sent now counts against nothing
    send_requests(client, sid, ["during-1", "during-2"])
    client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    client.flush()
    send_requests(client, sid, ["after"])
    client.send_body(sid, b"", end=True)
    client.wait(sid)
    assert stream.status() == "0"
    assert stream_ids(stream.body) == ["before", "during-1", "during-2", "after"]


def test_a_streaming_call_past_its_deadline_is_deadline_exceeded(connect: Connect) -> None:
    client = connect()
    sid = client.start(request_headers(STREAM, ("grpc-timeout", "200m")))
    send_requests(client, sid, ["in-time"])  # and no END_STREAM: the call stays open
    answer = client.wait(sid)
    assert answer.status() == "4", answer.trailers
    assert "deadline" in answer.trailers.get("grpc-message", answer.headers.get("grpc-message"))
    assert set(stream_ids(answer.body)) <= {"in-time"}  # answered, unless the deadline came first


def test_a_message_that_is_not_a_request_gets_its_error_and_the_stream_goes_on(
    connect: Connect,
) -> None:
    client = connect()
    sid = client.start(request_headers(STREAM))
    send_requests(client, sid, ["first"])
    client.send_body(sid, grpc_frame(b"\xff\xff\xff\xff not protobuf"), end=False)
    send_requests(client, sid, ["third"])
    client.send_body(sid, b"", end=True)
    answer = client.wait(sid)
    assert answer.status() == "0", answer.trailers
    first, second, third = (
        pb.ModelStreamInferResponse.FromString(m) for m in messages(answer.body)
    )
    assert (first.infer_response.id, third.infer_response.id) == ("first", "third")
    assert "not a valid ModelInferRequest" in second.error_message


@pytest.mark.parametrize("path", [INFER, STREAM])
def test_a_call_that_ends_inside_a_message_is_invalid_argument(connect: Connect, path: str) -> None:
    client = connect()
    sid = client.start(request_headers(path))
    client.send_body(sid, grpc_frame(infer_message(ROWS)) + b"\x00\x00\x00")
    answer = client.wait(sid)
    assert answer.status() == "3", answer.trailers or answer.headers
    assert "inside a message" in (answer.trailers or answer.headers)["grpc-message"]


def test_a_message_too_large_while_answers_wait_for_window_keeps_its_status(
    connect: Connect,
) -> None:
    """The status queued behind blocked DATA leaves once the window opens (not a CANCEL)."""
    client = connect({SettingCodes.INITIAL_WINDOW_SIZE: 10}, auto_window=False)
    sid = client.start(request_headers(STREAM))
    send_requests(client, sid, ["s1", "s2"])
    client.read_until(lambda: client.windows[sid] == 0, "the first answer's bytes to the window")
    client.sock.sendall(raw_frame(0, 0, sid, struct.pack(">BI", 0, MAX_BODY + 1)))
    client.drain(sid, sid, 1000)
    answer = client.streams[sid]
    assert answer.status() == "8", answer.trailers
    assert set(stream_ids(answer.body)) <= {"s1", "s2"}


def _handshake(client: Frames) -> None:
    """Preface and SETTINGS, raw; returns once the server's SETTINGS are in."""
    client.sock.sendall(PREFACE + hf.SettingsFrame(0).serialize())
    client.read_until(lambda: bool(client.of(hf.SettingsFrame)), "the server's SETTINGS")
    client.sock.sendall(hf.SettingsFrame(0, flags=["ACK"]).serialize())


def test_a_rapid_reset_flood_is_sent_away_and_others_are_served(connect: Connect) -> None:
    other = connect()
    expected = other.infer()
    flood = connect(handshake=False)
    _handshake(flood)
    encoder = hpack.Encoder()
    frames = []
    for sid in range(1, 6001, 2):  # 3,000 streams
        frames.append(raw_frame(1, 4, sid, encoder.encode(request_headers())))
        frames.append(raw_frame(3, 0, sid, CANCEL.to_bytes(4)))
    data = b"".join(frames)
    with contextlib.suppress(OSError):  # the server stops reading once it has had enough
        for start in range(0, len(data), 65536):
            flood.sock.sendall(data[start : start + 65536])
    flood.read_until(lambda: flood.closed, "the server closes the flooding connection")
    assert flood.goaway() == ENHANCE_YOUR_CALM
    assert other.infer() == expected
    assert connect().infer() == expected


# -- random frames ---------------------------------------------------------------------------

_BLOCKS = [
    header_block(request_headers()),
    header_block(request_headers(STREAM, ("grpc-timeout", "1m"))),
    header_block(request_headers("/grpc.health.v1.Health/Check")),
    header_block([*request_headers(), ("", "an empty name")]),
    header_block([*request_headers(), ("X-Upper", "1")]),
    header_block([(":method", "GET"), (":path", "/")]),
    header_block([("x-trailer", "1")]),
    b"\x80",  # index 0: never valid HPACK
]
_SIDS = st.sampled_from([1, 3, 5, 7, 9, 11])
_CODES = st.sampled_from([0, CANCEL, 2, 0xB, 2**32 - 1]).map(lambda c: c.to_bytes(4))
_HEADERS = st.tuples(
    st.just(1), st.sampled_from([4, 5, 4, 5, 0, 0x24]), _SIDS, st.sampled_from(_BLOCKS)
)
_WELL_FORMED = st.one_of(
    _HEADERS,
    _HEADERS,
    st.tuples(st.just(9), st.sampled_from([0, 4]), _SIDS, st.sampled_from(_BLOCKS)),
    st.tuples(
        st.just(0),
        st.sampled_from([0, 1, 8, 9]),
        _SIDS,
        st.sampled_from([grpc_frame(infer_message(ROWS)), b"", b"\x00\x00\x00", b"\x01junk!"]),
    ),
    st.tuples(st.just(3), st.just(0), _SIDS, _CODES),
    st.tuples(st.just(2), st.just(0), _SIDS, st.sampled_from([b"\x00\x00\x00\x01\x10", b"\x00"])),
    st.tuples(
        st.just(8),
        st.just(0),
        st.sampled_from([0, 1, 3]),
        st.sampled_from([1, 0, 100, 2**31 - 1]).map(lambda n: n.to_bytes(4)),
    ),
    st.tuples(
        st.just(4),
        st.sampled_from([0, 1]),
        st.just(0),
        st.sampled_from(
            [
                b"",
                b"\x00\x04\x00\x00\x00\x00",
                b"\x00\x04\x7f\xff\xff\xff",
                b"\x00\x05\x00\x00\x40\x00",
                b"\x00\x02\x00\x00\x00\x02",
            ]
        ),
    ),
    st.tuples(st.just(6), st.sampled_from([0, 1]), st.just(0), st.just(b"pingpong")),
    st.tuples(st.just(7), st.just(0), st.just(0), st.just(b"\x00" * 8)),
)
"""Frames of the right shape for their type (flags, stream, payload picked among valid and
subtly wrong ones)."""
_RANDOM = st.tuples(
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 2**31 - 1]) | st.integers(0, 2**32 - 1),
    st.binary(max_size=48),
)
_FRAMES = st.lists(
    st.tuples(
        st.one_of(_WELL_FORMED, _WELL_FORMED, _WELL_FORMED, _RANDOM),
        st.one_of(st.none(), st.none(), st.none(), st.integers(0, 80)),
    ),
    min_size=1,
    max_size=10,
)
"""Frames, each maybe with a length that is not its payload's (the framing goes astray)."""


@settings(max_examples=400, deadline=None)
@given(frames=_FRAMES)
def test_random_frames_never_break_the_server(
    server: ServerProcess, frames: list[tuple[tuple[int, int, int, bytes], int | None]]
) -> None:
    client = Frames(server.grpc_address, handshake=False)
    data = b"".join(raw_frame(*f, -1 if length is None else length) for f, length in frames)
    try:
        _handshake(client)
        with contextlib.suppress(OSError):
            client.sock.sendall(data)
            # The end of what this client sends: the server closes when it is done with it.
            client.sock.shutdown(socket.SHUT_WR)
        client.read_until(lambda: client.closed, "the server closes the connection")
    finally:
        client.sock.close()


def test_after_random_frames_the_server_serves_and_logged_no_traceback(
    server: ServerProcess, connect: Connect
) -> None:
    """Runs after the fuzz test (file order): its mistakes left nothing behind."""
    assert len(connect().infer()) == len(ROWS)
    # A last protocol error the fuzz never makes (its prefaces are right): once its log line
    # is in, so is everything the server logged before it.
    marker = connect(handshake=False)
    marker.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    marker.read_until(lambda: marker.closed, "the server closes the connection")
    server.wait_for("not an HTTP/2 connection preface")
    log = server.log()
    assert not [bad for bad in BAD_LOG if bad in log], log[-4000:]
