"""The container image (deploy/docker/Dockerfile) built and run with a real engine.

Needs MODELPORT_TEST_CONTAINER_ENGINE (e.g. podman) and MODELPORT_TEST_IMAGE_BASE (a base
image the engine has locally, e.g. localbase:bookworm from `make image-base`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("MODELPORT_TEST_CONTAINER_ENGINE", "")
BASE = os.environ.get("MODELPORT_TEST_IMAGE_BASE", "")
IMAGE = "modelport:container-test"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

pytestmark = pytest.mark.skipif(
    not (ENGINE and BASE and shutil.which(ENGINE)),
    reason="set MODELPORT_TEST_CONTAINER_ENGINE (e.g. podman, on PATH) and "
    "MODELPORT_TEST_IMAGE_BASE (e.g. localbase:bookworm) to build and run the image",
)


def engine() -> list[str]:
    """The engine command with the flags `make image` adds for it."""
    if Path(ENGINE).name == "podman":
        return [ENGINE, "--cgroup-manager=cgroupfs", "--runtime", "runc"]
    return [ENGINE]


def run_flags() -> list[str]:
    hard = subprocess.run(
        ["sh", "-c", "ulimit -Hn"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return ["--network", "host", "--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> str:
    subprocess.run(
        ["make", "-C", str(ROOT), "image", f"ENGINE={ENGINE}", f"BASE={BASE}", f"IMAGE={IMAGE}"],
        check=True,
    )
    return IMAGE


class Container:
    """A `run` in the foreground: its output is read line by line up to the ready line."""

    def __init__(self, image: str, mounts: list[str], args: list[str]) -> None:
        self.name = f"modelport-test-{uuid.uuid4().hex[:8]}"
        self.process = subprocess.Popen(
            [
                *engine(),
                "run",
                "--rm",
                "--name",
                self.name,
                *run_flags(),
                "--read-only",
                "--tmpfs",
                "/tmp",
                *mounts,
                image,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "ready" in line.lower() and "health" not in line.lower():
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise AssertionError("container exited before ready:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self, timeout: int = 60) -> int:
        """SIGTERM, then SIGKILL after timeout: the exit status tells which ended it."""
        subprocess.run(
            [*engine(), "stop", "-t", str(timeout), self.name], check=True, capture_output=True
        )
        return self.process.wait(timeout=timeout + 30)

    def kill(self) -> None:
        if self.process.poll() is None:
            subprocess.run([*engine(), "rm", "-f", self.name], capture_output=True)
            self.process.wait(timeout=60)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.kill()


def infer_rest(port: int) -> httpx.Response:
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROW}]}
    return httpx.post(f"http://127.0.0.1:{port}/v2/models/iris/infer", json=body, timeout=60)


def assert_setosa(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert outputs[0]["data"][0] in (0, "setosa"), outputs


def test_serves_a_registry_read_only_and_stops_on_sigterm(
    image: str, tmp_path: Path, containers: list[Container]
) -> None:
    import grpc

    from modelport.transports.grpc_gen import inference_pb2 as pb
    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    data = tmp_path / "data"
    subprocess.run(
        ["modelport", "demo", "--registry", str(data / "registry")], check=True, capture_output=True
    )
    subprocess.run(["chown", "-R", "10001:10001", str(data)], check=True)
    http, grpc_port = free_port(), free_port()
    container = Container(
        image,
        ["-v", f"{data}:/var/lib/modelport"],
        [
            "serve",
            "--registry",
            "/var/lib/modelport/registry",
            "--host",
            "0.0.0.0",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--allow-insecure",
            "--allowed-host",
            "*",
        ],
    )
    containers.append(container)
    container.wait_ready()
    assert httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=30).status_code == 200
    assert_setosa(infer_rest(http))

    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROW)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert answer.model_name == "iris"

    # 0, not 137: dumb-init handed SIGTERM to the server, which drained and exited
    # before the engine's SIGKILL.
    assert container.stop() == 0, "".join(container.output)


def test_serves_a_mounted_model_directory(
    image: str, tmp_path: Path, containers: list[Container]
) -> None:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    models = tmp_path / "models"
    models.mkdir()
    features, labels = load_iris(return_X_y=True)
    sio.dump(LogisticRegression(max_iter=500).fit(features, labels), models / "model.skops")
    models.chmod(0o755)
    (models / "model.skops").chmod(0o644)
    http = free_port()
    container = Container(
        image,
        ["-v", f"{models}:/mnt/models:ro"],
        [
            "serve",
            "/mnt/models",
            "--model-name",
            "iris",
            "--host",
            "0.0.0.0",
            "--http-port",
            str(http),
            "--grpc-port",
            "0",
            "--allow-insecure",
            "--allowed-host",
            "*",
        ],
    )
    containers.append(container)
    container.wait_ready()
    assert_setosa(infer_rest(http))
    assert container.stop() == 0, "".join(container.output)


def test_image_runs_as_10001_with_health_check_ports_and_labels(image: str) -> None:
    whoami = subprocess.run(
        [*engine(), "run", "--rm", *run_flags(), "--entrypoint", "id", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "uid=10001(modelport) gid=10001(modelport)" in whoami
    [info] = json.loads(
        subprocess.run(
            [*engine(), "image", "inspect", image], capture_output=True, text=True, check=True
        ).stdout
    )
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "8082/tcp"}
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert config["Entrypoint"] == ["dumb-init", "--", "modelport"]
    assert not any(env.startswith("MODELPORT_REGISTRY=") for env in config["Env"])
    health = info.get("HealthCheck") or config.get("Healthcheck")
    assert health
    assert "modelport-healthcheck" in " ".join(health["Test"])
