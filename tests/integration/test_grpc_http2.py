"""gRPC's HTTP/2 wire, seen by a raw h2c client: framing, flow control, limits, hostile input.

Pins what any correct gRPC server shows on the wire (RFC 9113, gRPC's PROTOCOL-HTTP2.md), so
that whatever front end serves the gRPC port is held to it. Where the gRPC spec leaves a
choice (the answer to a method other than POST), the test pins modelport's.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe import frame as hf

import modelport

from .conftest import ServerFactory
from .h2_client import (
    CANCEL,
    COMPRESSION_ERROR,
    DEFAULT_WINDOW,
    FRAME_SIZE_ERROR,
    INFER,
    PREFACE,
    PROTOCOL_ERROR,
    ROWS,
    STREAM_CLOSED,
    Connect,
    Frames,
    connections,
    grpc_frame,
    infer_message,
    iris_server,
    raw_frame,
    request_headers,
    with_continuations,
)

pytestmark = pytest.mark.integration

MAX_BODY = 1024 * 1024
"""The test server's max_body_bytes: room for every request here but the one past it."""
Predict = Callable[[np.ndarray[Any, Any]], list[int]]


@pytest.fixture(scope="module")
def address(
    start_server: ServerFactory, demo_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """`host:port` of a gRPC server for iris whose requests may be at most MAX_BODY bytes."""
    folder = tmp_path_factory.mktemp("h2")
    return iris_server(start_server, demo_registry, folder, MAX_BODY).grpc_address


@pytest.fixture(scope="module")
def predict(demo_registry: Path) -> Iterator[Predict]:
    """The classes iris predicts for some rows, computed in this process."""
    model = modelport.load("iris", registry=demo_registry)
    yield lambda rows: model.predict(rows)["predict"].tolist()
    model.close()


@pytest.fixture
def connect(address: str) -> Iterator[Connect]:
    """Open connections to the server (arguments as for Frames); closed after the test."""
    with connections(address) as connect:
        yield connect


@pytest.fixture
def client(connect: Connect) -> Frames:
    return connect()


def assert_served(connect: Connect, predict: Predict) -> None:
    """A fresh connection gets the right answer."""
    assert connect().infer() == predict(ROWS)


def test_unary_call_has_grpc_headers_one_message_and_trailers(
    client: Frames, predict: Predict
) -> None:
    answer = client.call(infer_message(ROWS, id="h2-1"), INFER, ("x-request-id", "h2-wire-1"))
    assert answer.headers[":status"] == "200"
    assert answer.headers["content-type"].startswith("application/grpc")
    assert answer.predictions() == predict(ROWS)
    assert answer.trailers["grpc-status"] == "0"  # trailers of their own, after the message
    assert answer.response().id == "h2-1"
    assert answer.trailers["x-request-id"] == "h2-wire-1"
    generated = client.call(infer_message(ROWS[:1]), INFER, ("x-request-id", "not valid!"))
    assert generated.status() == "0"
    assert generated.trailers["x-request-id"] not in ("", "not valid!")


def test_ping_and_settings_are_acknowledged(client: Frames) -> None:
    client.conn.ping(b"modelprt")
    client.conn.update_settings({SettingCodes.MAX_HEADER_LIST_SIZE: 32768})
    client.flush()
    client.read_until(
        lambda: client.of(hf.PingFrame, "ACK") and len(client.of(hf.SettingsFrame, "ACK")) == 2,
        "a PING ACK and an ACK of the second SETTINGS",
    )
    acks = [f for f in client.received if "ACK" in f.flags]
    assert [f.opaque_data for f in acks if isinstance(f, hf.PingFrame)] == [b"modelprt"]
    assert all(not f.settings for f in acks if isinstance(f, hf.SettingsFrame))


def test_a_tiny_stream_window_is_never_overrun(connect: Connect, predict: Predict) -> None:
    client = connect({SettingCodes.INITIAL_WINDOW_SIZE: 10}, auto_window=False)
    sid = client.start(request_headers())
    client.send_body(sid, grpc_frame(infer_message(ROWS)))
    grants = client.drain(sid, sid, 10)
    assert client.streams[sid].predictions() == predict(ROWS)
    assert (
        max(f.flow_controlled_length for f in client.received if isinstance(f, hf.DataFrame)) <= 10
    )
    assert grants >= len(client.streams[sid].body) // 10 - 1


def test_a_big_request_and_response_wait_for_window_updates(
    connect: Connect, predict: Predict
) -> None:
    rows = np.tile(ROWS, (1250, 1))  # 80 kB of request, 100 kB of response
    client = connect({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}, auto_window=False)
    sid = client.start(request_headers())
    client.send_body(sid, grpc_frame(infer_message(rows, both=True)))
    assert client.drain(sid, 0, DEFAULT_WINDOW) >= 1  # the connection's window ran out
    assert len(client.streams[sid].body) > DEFAULT_WINDOW
    assert client.streams[sid].predictions() == predict(rows)


def test_a_request_past_the_default_windows_gets_window_updates(
    client: Frames, predict: Predict
) -> None:
    rows = np.tile(ROWS, (5000, 1))  # 320 kB
    assert client.infer(rows) == predict(rows)
    assert client.of(hf.WindowUpdateFrame)


def test_continuation_and_priority_are_understood(client: Frames, predict: Predict) -> None:
    split = client.start(request_headers(), rewrite=with_continuations)
    client.send_body(split, grpc_frame(infer_message(ROWS)))
    prioritised = client.start(request_headers(), priority_weight=200, priority_depends_on=0)
    client.conn.prioritize(prioritised, weight=32, depends_on=split)
    client.flush()
    client.send_body(prioritised, grpc_frame(infer_message(ROWS)))
    assert client.wait(split).predictions() == predict(ROWS)
    assert client.wait(prioritised).predictions() == predict(ROWS)
    assert sum(isinstance(f, hf.ContinuationFrame) for f in client.sent) >= 2
    assert any("PRIORITY" in f.flags for f in client.sent if isinstance(f, hf.HeadersFrame))
    assert any(isinstance(f, hf.PriorityFrame) for f in client.sent)


def test_a_padded_data_frame_does_not_break_the_connection(
    client: Frames, predict: Predict
) -> None:
    """RFC 9113 §6.1 allows padding: the padded request is answered like any other."""
    sid = client.start(request_headers())
    client.send_body(sid, grpc_frame(infer_message(ROWS)), pad=17)
    assert client.wait(sid).predictions() == predict(ROWS)
    assert client.infer() == predict(ROWS)
    assert client.goaway() is None


def test_a_stream_reset_mid_call_leaves_the_connection_usable(
    client: Frames, predict: Predict
) -> None:
    sid = client.start(request_headers())
    client.send_body(sid, grpc_frame(infer_message(ROWS))[:7], end=False)
    client.conn.reset_stream(sid, CANCEL)
    client.flush()
    assert client.infer() == predict(ROWS)
    assert client.goaway() is None


@pytest.mark.parametrize(
    "path", ["/inference.GRPCInferenceService/NoSuchMethod", "/no.such.Service/ModelInfer"]
)
def test_unknown_methods_and_services_are_unimplemented(client: Frames, path: str) -> None:
    answer = client.call(infer_message(ROWS), path)
    assert (answer.headers[":status"], answer.status()) == ("200", "12")


def test_a_gzip_message_is_decompressed(client: Frames, predict: Predict) -> None:
    sid = client.start(request_headers(INFER, ("grpc-encoding", "gzip")))
    client.send_body(sid, grpc_frame(gzip.compress(infer_message(ROWS)), compressed=True))
    assert client.wait(sid).predictions() == predict(ROWS)


def test_a_message_past_the_body_limit_is_resource_exhausted(
    client: Frames, predict: Predict
) -> None:
    rows = np.tile(ROWS, (MAX_BODY // 64 + 1, 1))
    assert client.call(infer_message(rows)).status() == "8"
    assert client.infer() == predict(ROWS)


def test_a_body_that_is_not_protobuf_is_invalid_argument(client: Frames) -> None:
    assert client.call(b"\xff\xff\xff\xff not protobuf").status() == "3"


def test_a_non_post_request_is_405(client: Frames, predict: Predict) -> None:
    """PROTOCOL-HTTP2.md allows POST alone and names no status for other methods: HTTP's own
    405 says what is wrong."""
    sid = client.start([(k, "GET" if k == ":method" else v) for k, v in request_headers()])
    client.send_body(sid, grpc_frame(infer_message(ROWS)))
    assert client.wait(sid).headers[":status"] == "405"
    assert client.infer() == predict(ROWS)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_a_content_type_that_is_not_grpc_is_415(
    client: Frames, predict: Predict, content_type: str
) -> None:
    """PROTOCOL-HTTP2.md: a content-type not beginning with application/grpc gets HTTP 415."""
    headers = [(k, content_type if k == "content-type" else v) for k, v in request_headers()]
    sid = client.start(headers)
    client.send_body(sid, grpc_frame(infer_message(ROWS)))
    assert client.wait(sid).headers[":status"] == "415"
    assert client.infer() == predict(ROWS)


def test_two_hundred_concurrent_streams_are_answered(client: Frames) -> None:
    limit = min(200, client.conn.remote_settings.max_concurrent_streams)
    ids: dict[int, str] = {}
    while len(ids) < 200:
        if client.conn.open_outbound_streams >= limit:
            client.read_until(lambda: client.conn.open_outbound_streams < limit, "a stream ends")
            continue
        sid = client.start(request_headers())
        ids[sid] = f"c{len(ids)}"
        client.send_body(sid, grpc_frame(infer_message(ROWS[len(ids) % 4 :][:1], ids[sid])))
    client.read_until(lambda: all(client.streams[s].done for s in ids), "every stream answered")
    assert {sid: client.streams[sid].response().id for sid in ids} == ids


def test_data_on_a_closed_stream_is_a_stream_error(
    client: Frames, connect: Connect, predict: Predict
) -> None:
    """RFC 9113 §6.1: a STREAM_CLOSED stream error; the connection goes on."""
    sid = client.start(request_headers())
    client.send_body(sid, grpc_frame(infer_message(ROWS)))
    assert client.wait(sid).status() == "0"
    client.sock.sendall(raw_frame(0, 1, sid, grpc_frame(infer_message(ROWS))))
    client.conn.ping(b"after-it")  # answered after the server has read the stray DATA
    client.flush()
    client.read_until(lambda: client.of(hf.PingFrame, "ACK") or client.goaway() is not None,
                      "a PING ACK or a GOAWAY")  # fmt: skip
    resets = [f.error_code for f in client.received if isinstance(f, hf.RstStreamFrame)]
    assert resets == [STREAM_CLOSED]
    assert client.goaway() is None
    assert client.infer() == predict(ROWS)
    assert_served(connect, predict)


def _hostile(name: str, max_frame: int) -> bytes:
    headers = Encoder().encode(request_headers())
    return {
        "garbage": b"this is not an HTTP/2 frame, nor anything else",
        "data-on-stream-0": raw_frame(0, 1, 0, b"\x00" * 8),
        "bad-hpack": raw_frame(1, 5, 1, b"\x80"),  # index 0 is never valid (RFC 7541 §6.1)
        "even-stream": raw_frame(1, 4, 2, headers),
        "oversized": raw_frame(1, 4, 1, headers + b"\x00" * 16384, length=max_frame + 1),
    }[name]


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("preface", {PROTOCOL_ERROR}),
        # Read as a frame, it is 7 MB long: too long, or a frame no server can make sense of.
        ("garbage", {PROTOCOL_ERROR, FRAME_SIZE_ERROR}),
        ("data-on-stream-0", {PROTOCOL_ERROR}),
        ("bad-hpack", {COMPRESSION_ERROR}),
        ("even-stream", {PROTOCOL_ERROR}),
        ("oversized", {FRAME_SIZE_ERROR}),
    ],
)
def test_hostile_input_ends_the_connection(
    connect: Connect, predict: Predict, name: str, codes: set[int]
) -> None:
    """Each is a connection error (RFC 9113 §5.4.1): a GOAWAY with the RFC's code, then the
    server closes the connection; other connections are unharmed."""
    hostile = connect(handshake=False)
    if name == "preface":
        hostile.sock.sendall(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize())
    else:
        hostile.sock.sendall(PREFACE + hf.SettingsFrame(0).serialize())
        hostile.read_until(lambda: bool(hostile.of(hf.SettingsFrame)), "the server's SETTINGS")
        settings = next(f.settings for f in hostile.received if isinstance(f, hf.SettingsFrame))
        ack = hf.SettingsFrame(0, flags=["ACK"]).serialize()
        hostile.sock.sendall(ack + _hostile(name, settings.get(SettingCodes.MAX_FRAME_SIZE, 16384)))
    with contextlib.suppress(OSError):  # the server may have closed already
        hostile.sock.sendall(hf.PingFrame(0, b"still-up").serialize())
    hostile.read_until(lambda: hostile.closed, f"the server closes the connection after {name}")
    assert not [f for f in hostile.received if f.stream_id == 2 and f.type != 0x3]
    assert hostile.goaway() in codes
    assert_served(connect, predict)
