"""A raw gRPC-over-HTTP/2 client for the wire tests: h2c with prior knowledge, every frame kept.

`Frames` drives h2's client state machine over a plain socket and keeps every frame either side
sent, for what h2 leaves unchecked (the server's DATA against the windows this client granted)
and for the tests' own assertions; hostile input goes out as raw bytes (`raw_frame`). Every
read has a deadline: a server that stops answering fails the test, it never hangs it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import numpy as np
from hyperframe import frame as hf

from modelport.transports.grpc_gen import inference_pb2 as pb

from .conftest import ServerFactory, ServerProcess, free_port

TIMEOUT = 30.0
"""Seconds any wait for the server's frames may take before the test fails (no read hangs)."""
INFER = "/inference.GRPCInferenceService/ModelInfer"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
PROTOCOL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR, CANCEL, COMPRESSION_ERROR = 1, 5, 6, 8, 9
ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]],
    np.float32,
)


def infer_message(rows: np.ndarray[Any, Any], id: str = "", both: bool = False) -> bytes:
    """A ModelInferRequest for iris, rows raw; it asks for `predict` alone unless `both`."""
    request = pb.ModelInferRequest(model_name="iris", id=id)
    request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    if not both:
        request.outputs.add(name="predict")
    request.raw_input_contents.append(rows.tobytes())
    return request.SerializeToString()


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    """One gRPC length-prefixed message."""
    return struct.pack(">BI", int(compressed), len(message)) + message


def raw_frame(kind: int, flags: int, stream: int, payload: bytes, length: int = -1) -> bytes:
    """One HTTP/2 frame as bytes, however wrong (hyperframe refuses to build most of these)."""
    length = len(payload) if length < 0 else length
    return struct.pack(">I", length)[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def request_headers(path: str = INFER, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "modelport"),
        ("content-type", "application/grpc"), ("te", "trailers"), *extra,
    ]  # fmt: skip


def split_frames(data: bytes) -> tuple[list[hf.Frame], bytes]:
    """The complete frames at the start of `data`, and the bytes of an incomplete one after."""
    frames, view = [], memoryview(data)
    while len(view) >= 9:
        frame, length = hf.Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames, bytes(view)


def with_continuations(data: bytes, size: int = 16) -> bytes:
    """`data` (whole frames) with each HEADERS block split into HEADERS and CONTINUATIONs."""
    out = b""
    for frame in split_frames(data)[0]:
        if isinstance(frame, hf.HeadersFrame) and len(frame.data) > size:
            block, frame.data = frame.data, frame.data[:size]
            frame.flags.discard("END_HEADERS")
            out += frame.serialize()
            for start in range(size, len(block), size):
                part = hf.ContinuationFrame(frame.stream_id, block[start : start + size])
                if start + size >= len(block):
                    part.flags.add("END_HEADERS")
                out += part.serialize()
        else:
            out += frame.serialize()
    return out


@dataclass
class Stream:
    """What the server sent on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def status(self) -> str:
        """grpc-status, from the trailers or from a trailers-only response's headers."""
        # A server may end the answer before the request, then reset the stream (RFC 9113 §8.1).
        assert self.ended, f"the server reset the stream (error code {self.reset})"
        return (self.trailers or self.headers).get("grpc-status", "missing")

    def response(self) -> pb.ModelInferResponse:
        """The one uncompressed length-prefixed message of a successful call, parsed."""
        assert self.status() == "0", self.trailers or self.headers
        flag, length = struct.unpack(">BI", self.body[:5])
        assert (flag, len(self.body)) == (0, 5 + length), "want one uncompressed message"
        return pb.ModelInferResponse.FromString(self.body[5:])

    def predictions(self) -> list[int]:
        return np.frombuffer(self.response().raw_output_contents[0], np.int64).tolist()


class Frames:
    """One h2c connection (prior knowledge): h2 keeps the client's state; frames are kept.

    `received` and `sent` hold every frame; the server's DATA is checked against the windows
    this client granted, counted from what it sent. `handshake=False` leaves out h2: the test
    writes raw bytes to `sock` and reads frames.
    """

    def __init__(
        self, address: str, settings: dict[int, int] | None = None, *, handshake: bool = True,
        auto_window: bool = True,
    ) -> None:  # fmt: skip
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.h2, self.auto_window, self.closed = handshake, auto_window, False
        self.received: list[hf.Frame] = []
        self.sent: list[hf.Frame] = []
        self.streams: dict[int, Stream] = {}
        self.initial_window = DEFAULT_WINDOW
        self.windows = {0: DEFAULT_WINDOW}
        # Per SETTINGS sent and not yet acknowledged: the change of the initial window and the
        # streams it applies to once the server has it (it acknowledges, then sends by it).
        self._window_changes: deque[tuple[int, set[int]]] = deque()
        self._pending = b""
        if handshake:
            self.conn.initiate_connection()
            if settings:
                self.conn.update_settings(settings)
            self.flush()
            acked = 1 + bool(settings)
            self.read_until(lambda: len(self.of(hf.SettingsFrame, "ACK")) == acked, "SETTINGS ACKs")

    def of(self, kind: type[hf.Frame], flag: str | None = None) -> list[Any]:
        """The server's frames of `kind` so far (with `flag` set, if given)."""
        return [f for f in self.received if isinstance(f, kind) and flag in (None, *f.flags)]

    def goaway(self) -> int | None:
        """The error code of the server's first GOAWAY, None if it sent none."""
        return next((f.error_code for f in self.of(hf.GoAwayFrame)), None)

    def flush(self, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        """Send what h2 has queued (the frames rewritten by `rewrite`), counting grants."""
        data = self.conn.data_to_send()
        preface = PREFACE if data.startswith(PREFACE) else b""
        data = data.removeprefix(preface)
        data = rewrite(data) if rewrite else data
        for frame in split_frames(data)[0]:
            self.sent.append(frame)
            if isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
                window = frame.settings.get(4, self.initial_window)
                self._window_changes.append((window - self.initial_window, set(self.windows) - {0}))
                self.initial_window = window
            elif isinstance(frame, hf.HeadersFrame):
                self.windows.setdefault(frame.stream_id, self.initial_window)
            elif isinstance(frame, hf.WindowUpdateFrame) and frame.stream_id in self.windows:
                self.windows[frame.stream_id] += frame.window_increment
        self.sock.sendall(preface + data)

    def read_until(self, done: Callable[[], bool], what: str) -> None:
        """Read frames until `done()` or the server closes; fail saying `what` did not happen."""
        deadline = time.monotonic() + TIMEOUT
        while not done() and not self.closed:
            left = deadline - time.monotonic()
            assert left > 0, f"not within {TIMEOUT:.0f} s: {what}"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except TimeoutError:
                continue
            self.closed = not data
            self._receive(data)
        assert done(), f"the server closed the connection, so never: {what}"

    def _receive(self, data: bytes) -> None:
        data = self._pending + data
        frames, self._pending = split_frames(data)
        for frame in frames:
            self.received.append(frame)
            if isinstance(frame, hf.SettingsFrame) and "ACK" in frame.flags:
                if self._window_changes:
                    delta, ids = self._window_changes.popleft()
                    for key in ids:
                        self.windows[key] += delta
            elif isinstance(frame, hf.DataFrame):
                for key in (0, frame.stream_id):
                    self.windows[key] = self.windows.get(key, 0) - frame.flow_controlled_length
                    assert self.windows[key] >= 0, f"DATA past the window of stream {key}"
        if not self.h2:
            return
        for event in self.conn.receive_data(data[: len(data) - len(self._pending)]):
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0, Stream())
            if isinstance(event, h2.events.ResponseReceived):
                stream.headers = dict(event.headers)
            elif isinstance(event, h2.events.TrailersReceived):
                stream.trailers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                stream.body += event.data
                if self.auto_window and event.flow_controlled_length:
                    self.grant(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream.ended = True
            elif isinstance(event, h2.events.StreamReset):
                stream.reset = event.error_code
        self.flush()

    def grant(self, increment: int, stream_id: int = 0) -> None:
        """Open the connection's window, and the stream's if it is still open, by `increment`."""
        self.conn.increment_flow_control_window(increment)
        if stream_id:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.conn.increment_flow_control_window(increment, stream_id)

    def start(self, headers: Sequence[tuple[str, str]], *,
              rewrite: Callable[[bytes], bytes] | None = None, **priority: Any) -> int:  # fmt: skip
        sid: int = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, headers, **priority)
        self.flush(rewrite)
        return sid

    def send_body(self, sid: int, data: bytes, *, end: bool = True, pad: int = 0) -> None:
        """Send `data` on `sid` as the server's windows allow; stop if the stream ends first."""
        stream, padding = self.streams[sid], pad + 1 if pad else 0
        while (data or end) and not stream.done:
            room = self.conn.local_flow_control_window(sid) - padding
            if data and room <= 0:
                self.read_until(
                    lambda: stream.done or self.conn.local_flow_control_window(sid) > padding,
                    f"the server opens its window for stream {sid}",
                )
                continue
            chunk = data[: min(room, self.conn.max_outbound_frame_size - padding)]
            data = data[len(chunk) :]
            self.conn.send_data(sid, chunk, end_stream=end and not data, pad_length=pad or None)
            end = end and bool(data)
            self.flush()

    def wait(self, sid: int) -> Stream:
        self.read_until(lambda: self.streams[sid].done, f"the server answers stream {sid}")
        return self.streams[sid]

    def call(self, message: bytes, path: str = INFER, *extra: tuple[str, str]) -> Stream:
        """One unary call: headers, the framed `message`, and the whole answer."""
        sid = self.start(request_headers(path, *extra))
        self.send_body(sid, grpc_frame(message))
        return self.wait(sid)

    def infer(self, rows: np.ndarray[Any, Any] = ROWS) -> list[int]:
        """The classes a ModelInfer call on this connection answers for `rows`."""
        return self.call(infer_message(rows)).predictions()

    def drain(self, sid: int, window: int, step: int) -> int:
        """Read stream `sid` to its end, granting `step` each time `window` (a stream id, or 0
        for the connection) is used up; how many grants it took."""
        stream, grants = self.streams[sid], 0
        while not stream.done:
            self.read_until(lambda: stream.done or self.windows[window] == 0, "DATA to the window")
            if not stream.done:
                self.grant(step, window)
                self.flush()
                grants += 1
        return grants


Connect = Callable[..., Frames]


@contextlib.contextmanager
def connections(address: str) -> Iterator[Connect]:
    """Opens connections to `address` (arguments as for Frames); all closed at the end."""
    opened: list[Frames] = []

    def open_connection(*args: Any, **options: Any) -> Frames:
        opened.append(Frames(address, *args, **options))
        return opened[-1]

    yield open_connection
    for conn in opened:
        conn.sock.close()


def iris_server(
    start_server: ServerFactory, registry: Path, folder: Path, max_body: int
) -> ServerProcess:
    """A server of iris alone, gRPC on, whose requests may be at most `max_body` bytes (its
    config file goes in `folder`)."""
    config = folder / "modelport.toml"
    config.write_text(f"[serve]\nmax_body_bytes = {max_body}\n")
    return start_server(
        "--registry", str(registry), "--config", str(config), "--model", "iris",
        "--inference-log", "off", "--grpc-port", str(free_port()),
    )  # fmt: skip
