"""What a replica does when Kubernetes replaces it: SIGTERM under load.

The pod's preStop hook and terminationGracePeriodSeconds (deploy/kubernetes) are sized on this
drain: readiness turns false at once (so the probe takes the replica out), and so does gRPC
health (for clients that balance on it), the API port stops taking connections, and every
request already in flight (REST, a gRPC call, the messages of a gRPC stream) is answered
before the process exits 0.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from tests.integration.conftest import eventually, free_port, push_doubling_model

REQUESTS = 4
"""REST requests in flight when SIGTERM lands: one inside the model, the others queued behind
it; a gRPC call and a gRPC stream of two messages wait behind them too."""
GRPC_IN_FLIGHT = 3


def write_gated_model(path: Path, started: Path, release: Path) -> Path:
    """A python model whose first call says it started on the FIFO `started`; every call then
    waits until the file `release` exists (so the test decides when the requests finish)."""
    import cloudpickle

    class Gated:
        def __init__(self, started: str, release: str) -> None:
            self.started = started
            self.release = release
            self.calls = 0

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            import os
            import time

            self.calls += 1
            if self.calls == 1:
                with open(self.started, "wb") as fh:
                    fh.write(b"1")
            while not os.path.exists(self.release):
                time.sleep(0.01)
            return {"y": inputs["x"] * 2}

    path.write_bytes(cloudpickle.dumps(Gated(str(started), str(release))))
    return path


def in_flight(url: str) -> float:
    """The server's `modelport_requests_in_flight` of the gated model (0 when not shown)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('modelport_requests_in_flight{model="gated"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def grpc_health(address: str) -> str:
    """The server's overall status from grpc.health.v1 Check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def grpc_request() -> Any:
    from modelport.transports.grpc_gen import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="gated")
    request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1, 2])
    return request


def grpc_infer(address: str) -> list[float]:
    """One ModelInfer call's `y` (typed in, so typed out)."""
    import grpc

    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(), timeout=60)
    return list(answer.outputs[0].contents.fp32_contents)


def grpc_stream(address: str, messages: int) -> list[list[float]]:
    """The `y` of each answer on one ModelStreamInfer stream of `messages` requests."""
    import grpc

    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answers = stub.ModelStreamInfer(iter([grpc_request()] * messages), timeout=60)
        out = []
        for answer in answers:
            assert not answer.error_message, answer.error_message
            out.append(list(answer.infer_response.outputs[0].contents.fp32_contents))
    return out


def test_sigterm_under_load_turns_readiness_off_refuses_new_and_answers_in_flight(
    start_server: Callable[..., Any], tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    push_doubling_model(
        tmp_path / "registry",
        write_gated_model(tmp_path / "gated.cloudpickle", started, release),
        "gated",
    )
    metrics_port = free_port()
    server = start_server(
        "--registry", str(tmp_path / "registry"), "--metrics-port", str(metrics_port),
        "--grpc-port", str(free_port()),
    )  # fmt: skip
    scrape = f"http://127.0.0.1:{metrics_port}"
    probe = f"{scrape}/v2/health/ready"
    assert httpx.get(probe).status_code == 200
    assert grpc_health(server.grpc_address) == "SERVING"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}

    def infer() -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            return http.post("/v2/models/gated/infer", json=body)

    with ThreadPoolExecutor(REQUESTS + 2) as pool:
        pending = [pool.submit(infer)]
        with started.open("rb") as fifo:  # blocks until the model holds the first request
            assert fifo.read(1) == b"1"
        pending += [pool.submit(infer) for _ in range(REQUESTS - 1)]
        unary = pool.submit(grpc_infer, server.grpc_address)
        stream = pool.submit(grpc_stream, server.grpc_address, 2)
        # The others are queued once the server counts them in flight.
        # Polled: the server announces no request's arrival.
        everything = REQUESTS + GRPC_IN_FLIGHT
        eventually(lambda: in_flight(scrape) == everything, f"{everything} requests in flight")

        os.kill(server.pid, signal.SIGTERM)
        # Polled: the signal is handled on the server's loop, at a moment it does not announce.
        eventually(lambda: httpx.get(probe).status_code == 503, "readiness turning false")
        ready = httpx.get(probe)
        assert ready.json()["code"] == "not_ready"
        assert "stopping" in ready.json()["error"]
        # Polled: the health service is told on the loop, after the REST listener closes.
        eventually(lambda: grpc_health(server.grpc_address) == "NOT_SERVING", "gRPC health")
        try:
            refused = httpx.post(f"{server.url}/v2/models/gated/infer", json=body, timeout=5)
        except httpx.ConnectError:
            refused = None
        assert refused is None, f"a new connection was answered while stopping: {refused}"

        # Let the model answer the first request and the queued ones.
        release.touch()
        responses = [p.result(timeout=60) for p in pending]
        grpc_answers = [unary.result(timeout=60), *stream.result(timeout=60)]
    assert [r.status_code for r in responses] == [200] * REQUESTS, [r.text for r in responses]
    assert all(r.json()["outputs"][0]["data"] == [2, 4] for r in responses)
    # The gRPC call and both messages of the stream were answered too, before the exit.
    assert grpc_answers == [[2.0, 4.0]] * GRPC_IN_FLIGHT
    assert server.stop(signal.SIGTERM) == 0
