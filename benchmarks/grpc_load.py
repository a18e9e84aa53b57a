"""The gRPC load: a prebuilt ModelInferRequest posted by h2load, and a grpc-status check.

h2load drives the unary `ModelInfer` method over plain HTTP/2: the body file is the 5-byte
gRPC frame header plus one serialized ModelInferRequest (iris rows in raw_input_contents, the
way tritonclient sends them). h2load only sees HTTP statuses, and gRPC errors come back as
HTTP 200 with a non-zero grpc-status trailer, so `grpc_status` sends the very same message
once per server start with a real gRPC client.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from modelport.transports.grpc_gen import inference_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAMS_PER_CONNECTION = 16


def request_message(model: str, rows: list[list[float]]) -> bytes:
    """A serialized ModelInferRequest: input-0 FP32 [N, features] raw, asking for `predict`."""
    import numpy as np

    data = np.asarray(rows, dtype="<f4")
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="input-0", datatype="FP32", shape=list(data.shape))
    message.outputs.add(name="predict")
    message.raw_input_contents.append(data.tobytes())
    return message.SerializeToString()


def frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: not compressed (0), then the length, big-endian."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_status(host: str, port: int, body: bytes, timeout: float = 30) -> str:
    """Post one framed body with a gRPC client; "OK" or the status name and its details."""
    import grpc

    message = body[5:]
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(
            METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            call(message, timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "OK"


def accepting(host: str, port: int) -> bool:
    """True once something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def h2load(
    host: str, port: int, body_file: Path, streams: int, seconds: int, cpu: str
) -> dict[str, Any]:
    """One h2load run from `cpu` with `streams` concurrent streams; figures or {"error": ...}.

    Latency percentiles come from h2load's per-request log (microseconds per response).
    """
    connections = max(1, streams // STREAMS_PER_CONNECTION)
    per_connection = streams // connections
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        argv = ["taskset", "-c", cpu, "h2load", "-D", str(seconds), "-c", str(connections)]
        argv += ["-m", str(per_connection), "-d", str(body_file), "--log-file", log.name]
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        argv.append(f"http://{host}:{port}{METHOD}")
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        lines = Path(log.name).read_text().splitlines()
    result = parse(done.stdout)
    if "error" in result:
        result["error"] += f" {done.stderr.strip()[-200:]}"
        return result
    latencies = sorted(int(line.split("\t")[2]) for line in lines if line.count("\t") >= 2)
    if not latencies:
        return {"error": "h2load logged no responses"}
    result["p50_us"] = statistics.median(latencies)
    result["p99_us"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return result


def parse(text: str) -> dict[str, Any]:
    """req/s, counts and mean latency from h2load's summary; {"error": ...} if absent."""
    figures: dict[str, Any] = {}
    for line in text.splitlines():
        words = line.replace(",", "").split()
        if line.startswith("finished in"):
            figures["rps"] = float(words[3])
        elif line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            figures["requests"] = int(words[1])
            figures["failed"] = int(words[9])
            figures["socket_errors"] = int(words[11])
            figures["timeouts"] = int(words[13])
        elif line.startswith("status codes:"):
            # status codes: N 2xx, N 3xx, N 4xx, N 5xx
            figures["non2xx"] = int(words[4]) + int(words[6]) + int(words[8])
        elif line.startswith("time for request:"):
            figures["mean_us"] = _us(words[5])
    if not {"rps", "requests", "non2xx", "mean_us"} <= figures.keys():
        return {"error": "h2load gave no figures:"}
    # A request h2load counts as failed without an HTTP status (a reset stream, say).
    figures["non2xx"] += max(0, figures.pop("failed") - figures["non2xx"])
    return figures


def _us(text: str) -> float:
    """h2load's durations ("850us", "12.34ms", "1.2s") in microseconds."""
    for unit, scale in (("us", 1.0), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"not an h2load duration: {text!r}")
