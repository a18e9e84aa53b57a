"""`serve --workers N`: pre-forked workers on one port, replaced when they die, stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.integration.conftest import ServerFactory, eventually, free_port, push_doubling_model
from tests.integration.h2_client import Frames, Stream, infer_message
from tests.integration.workers import children, holder

import modelport

pytestmark = pytest.mark.integration

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)


def infer_many(url: str, count: int) -> list[int]:
    body = {
        "inputs": [
            {"name": "input-0", "datatype": "FP32", "shape": [3, 4], "data": ROWS.ravel().tolist()}
        ]
    }

    def one(_: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=30) as http:
            response = http.post("/v2/models/iris/infer", json=body)
            assert response.status_code == 200, response.text
            return list(response.json()["outputs"][0]["data"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(count)))
    assert len({tuple(r) for r in results}) == 1
    return results[0]


def test_workers_serve_are_replaced_and_stop_together(
    start_server: Callable[..., Any], demo_registry: Path
) -> None:
    server = start_server("--registry", str(demo_registry), "--workers", "2", "--model", "iris")
    assert "2 workers" in server.output[0]
    workers = children(server.pid)
    assert len(workers) == 2
    expected = modelport.load("iris", registry=demo_registry).predict(ROWS)["predict"]
    assert infer_many(server.url, 40) == expected.tolist()

    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for("replaced by worker")
    replaced = children(server.pid)
    assert victim not in replaced
    assert len(replaced) == 2
    # The replacement was forked from the loaded parent: it answers without loading anything.
    assert infer_many(server.url, 40) == expected.tolist()

    assert server.stop(signal.SIGTERM) == 0
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_repository_changes_are_refused_with_several_workers(
    start_server: Callable[..., Any], demo_registry: Path
) -> None:
    server = start_server("--registry", str(demo_registry), "--workers", "2", "--model", "iris")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for action in ("load", "unload"):
            response = http.post(f"/v2/repository/models/iris/{action}")
            assert response.status_code == 501, response.text
            assert response.json()["code"] == "unsupported"
            assert "--model" in response.json()["error"]
        assert http.get("/v2/models/iris/ready").status_code == 200
    assert server.stop() == 0


def test_workers_auto_and_bad_values(start_server: Callable[..., Any], demo_registry: Path) -> None:
    server = start_server("--registry", str(demo_registry), "--workers", "auto", "--model", "iris")
    assert len(children(server.pid)) == len(os.sched_getaffinity(0))
    assert server.stop() == 0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def write_slow_model(path: Path, started: Path) -> Path:
    """A python model that says it started on the FIFO `started`, then takes a second."""
    import cloudpickle

    class Slow:
        def __init__(self, fifo: str) -> None:
            self.fifo = fifo

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            import time

            with open(self.fifo, "wb") as fh:
                fh.write(b"1")
            time.sleep(1.0)
            return {"y": inputs["x"] * 2}

    path.write_bytes(cloudpickle.dumps(Slow(str(started))))
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_in_flight_requests_finish(
    start_server: Callable[..., Any], tmp_path: Path, workers: str
) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)
    push_doubling_model(
        tmp_path / "registry", write_slow_model(tmp_path / "slow.cloudpickle", started), "slow"
    )
    server = start_server("--registry", str(tmp_path / "registry"), "--workers", workers)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=server.url, timeout=30) as http:
        pending = pool.submit(http.post, "/v2/models/slow/infer", json=body)
        with started.open("rb") as fifo:  # blocks until the model is running the request
            assert fifo.read(1) == b"1"
        code = server.stop(signal.SIGTERM)
        response = pending.result(timeout=30)
    assert code == 0
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2, 4]


def test_a_second_multi_worker_server_cannot_share_the_port(
    start_server: Callable[..., Any], demo_registry: Path
) -> None:
    # Both would set SO_REUSEPORT; without the exclusive probe the kernel would split the
    # connections between two unrelated servers.
    first = start_server("--registry", str(demo_registry), "--workers", "2", "--model", "iris")
    port = first.url.rsplit(":", 1)[1]
    second = start_server(
        "--registry", str(demo_registry), "--workers", "2", "--http-port", port, ready=False
    )
    assert second.wait() == 1
    assert "cannot listen" in second.log()
    assert first.stop() == 0


def test_a_version_pushed_while_serving_loads_once_and_is_shared(
    start_server: Callable[..., Any], registry_dir: Path, tmp_path: Path
) -> None:
    from modelport.intake.push import push_artifact
    from modelport.registry.store import Registry

    from .conftest import CREATED_BY, write_iris_c001

    server = start_server("--registry", str(registry_dir), "--workers", "2")
    before = children(server.pid)
    with Registry.open(registry_dir) as registry:
        push_artifact(registry, write_iris_c001(tmp_path), name="iris", created_by=CREATED_BY)
    server.wait_for("iris: requests now go to version 2")
    server.wait_for("replacing 2 worker(s)")
    for _ in range(2):
        server.wait_for("replaced by worker")
    after = children(server.pid)
    # Old workers may still be draining; the two serving ones are new forks of the parent.
    assert len(after - before) == 2
    # An old worker takes connections until its loop has handled the SIGTERM sent just
    # before "replaced by worker" is logged; once it has exited, only new ones answer.
    # Polled: a worker's exit is not announced.
    eventually(lambda: not children(server.pid) & before, "the old workers exiting")
    with Registry.open(registry_dir) as registry:
        loads = [e for e in registry.history("iris") if e.kind == "load" and e.to_version == 2]
    # Loaded once, by the parent: every worker shares that copy instead of loading its own.
    assert [e.detail["pid"] if e.detail else None for e in loads] == [server.pid]
    for _ in range(20):  # fresh connections, so both workers answer
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.post(
                "/v2/models/iris/infer",
                json={
                    "inputs": [
                        {
                            "name": "input-0",
                            "datatype": "FP32",
                            "shape": [1, 4],
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ]
                },
            )
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == "2"
    assert server.stop() == 0


def write_blocking_model(path: Path, started: Path, release: Path) -> Path:
    """A python model that says it started on the FIFO `started`, then waits on `release`."""
    import cloudpickle

    class Blocking:
        def __init__(self, started: str, release: str) -> None:
            self.started = started
            self.release = release

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            with open(self.started, "wb") as fh:
                fh.write(b"1")
            with open(self.release, "rb") as fh:  # until the test writes to it
                fh.read(1)
            return {"y": inputs["x"] * 2}

    path.write_bytes(cloudpickle.dumps(Blocking(str(started), str(release))))
    return path


def test_a_model_queue_bound_holds_across_workers(
    start_server: Callable[..., Any], tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    os.mkfifo(started)
    os.mkfifo(release)
    push_doubling_model(
        tmp_path / "registry",
        write_blocking_model(tmp_path / "blocking.cloudpickle", started, release),
        "blocking",
    )
    config = tmp_path / "modelport.toml"
    config.write_text("[models.blocking]\nmax_queue = 1\n")
    server = start_server(
        "--registry", str(tmp_path / "registry"), "--workers", "2",
        "--inference-log", "off", "--config", str(config),
    )  # fmt: skip
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}

    def infer() -> httpx.Response:
        # A fresh connection each time: the kernel spreads them over both workers.
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return http.post("/v2/models/blocking/infer", json=body)

    def hold() -> Any:
        """Send one request and return once the model is running it (its answer pending)."""
        pending = pool.submit(infer)
        with started.open("rb") as fifo:  # blocks until the model runs the request
            assert fifo.read(1) == b"1"
        return pending

    def unblock() -> None:
        with release.open("wb") as fifo:  # blocks until the model waits on it
            fifo.write(b"1")

    with ThreadPoolExecutor(1) as pool:
        try:
            held = hold()
            # One request in flight in one worker fills the queue of the whole server: with a
            # bound per worker, about half of these would reach the other worker and run.
            shed = [infer() for _ in range(16)]
            assert [r.status_code for r in shed] == [503] * 16, [r.text for r in shed]
            for response in shed:
                assert response.json()["code"] == "overloaded"
                assert response.headers["retry-after"] == "1"
                assert "across all of the server's workers" in response.json()["error"]
            unblock()
            assert held.result(timeout=30).status_code == 200
            # The request left: the next one, on whichever worker, is admitted.
            again = hold()
            unblock()
            assert again.result(timeout=30).status_code == 200
        finally:
            # Should a request have been admitted after all, leave nothing hanging: opening
            # the other end of each FIFO without blocking lets a model waiting on it run on.
            for fifo, mode in ((started, os.O_RDONLY), (release, os.O_WRONLY)):
                with contextlib.suppress(OSError):  # ENXIO: nobody waits on it
                    os.close(os.open(fifo, mode | os.O_NONBLOCK))
    assert server.stop(signal.SIGTERM) == 0


def test_grpc_connections_spread_over_workers_and_share_one_rate_limit(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    """With 2 workers every worker serves gRPC on the same port (SO_REUSEPORT), and a caller
    still gets its burst once over gRPC: both workers spend from one bucket."""
    server = start_server(
        "--registry", str(registry_dir), "--workers", "2", "--grpc-port", str(free_port()),
        "--rate-limit", "0.01", "--rate-burst", "3",  # refill: one request in 100 s
    )  # fmt: skip
    workers = children(server.pid)
    assert len(workers) == 2
    by_worker = dict.fromkeys(workers, 0)
    answers: list[Stream] = []
    # Fresh connections until each worker has answered more than the burst, which per-worker
    # buckets would each admit in full; the bound only stops a broken spread.
    while min(by_worker.values()) <= 3:
        assert len(answers) < 400, f"connections never reached both workers: {by_worker}"
        connection = Frames(server.grpc_address)
        try:
            answers.append(connection.call(infer_message(ROWS)))
            by_worker[holder(connection.sock, workers)] += 1
        finally:
            connection.sock.close()
    statuses = [answer.status() for answer in answers]
    assert statuses.count("0") == 3, f"{statuses} (answers per worker: {by_worker})"
    assert statuses.count("8") == len(answers) - 3, statuses  # RESOURCE_EXHAUSTED
    refused = [answer.headers for answer in answers if answer.status() == "8"]
    assert all(int(headers["retry-after"]) >= 1 for headers in refused), refused
