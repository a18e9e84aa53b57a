"""The container image (deploy/docker/Dockerfile) built and run with a real engine.

Needs MODELPORT_TEST_CONTAINER_ENGINE (e.g. podman) and MODELPORT_TEST_IMAGE_BASE (a base
image the engine has locally, e.g. localbase:bookworm from `make image-base`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ENGINE = os.environ.get("MODELPORT_TEST_CONTAINER_ENGINE", "")
BASE = os.environ.get("MODELPORT_TEST_IMAGE_BASE", "")
IMAGE = "modelport:container-test"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

pytestmark = [
    pytest.mark.skipif(
        not (ENGINE and BASE and shutil.which(ENGINE)),
        reason="set MODELPORT_TEST_CONTAINER_ENGINE (e.g. podman, on PATH) and "
        "MODELPORT_TEST_IMAGE_BASE (e.g. localbase:bookworm) to build and run the image",
    ),
    # The first test builds the image (installing every dependency from the index when the
    # engine has no cached layers): minutes on a busy machine, not the usual two.
    pytest.mark.timeout(900),
]


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


def infer_rest(port: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": IRIS_ROW}]}
    return httpx.post(
        f"http://127.0.0.1:{port}/v2/models/iris/infer", json=body, headers=headers, timeout=60
    )


def assert_setosa(answer: httpx.Response) -> None:
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert outputs[0]["data"][0] in (0, "setosa"), outputs


def cli(*args: str | Path) -> str:
    """A `modelport` command on the host (the test's venv); its standard output."""
    return subprocess.run(
        [sys.executable, "-m", "modelport", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def inspect(image: str) -> dict[str, Any]:
    [info] = json.loads(
        subprocess.run(
            [*engine(), "image", "inspect", image], capture_output=True, text=True, check=True
        ).stdout
    )
    return cast(dict[str, Any], info)


def health_check(info: dict[str, Any]) -> list[str]:
    """The image's HEALTHCHECK command (the Test list after its CMD marker)."""
    # podman shows it beside Config, docker inside it.
    health = info.get("Healthcheck") or info["Config"].get("Healthcheck")
    assert health, "the image has no HEALTHCHECK"
    kind, *command = health["Test"]
    assert kind == "CMD", health
    return cast(list[str], command)


def test_default_command_serves_the_volume_with_auth_and_stops_on_sigterm(
    image: str, tmp_path: Path, containers: list[Container]
) -> None:
    """The image's own CMD (ports moved off 8080-8082) on a read-only root: the registry on the
    volume, keys required, REST and gRPC answers, the health check, SIGTERM."""
    import grpc

    from modelport.transports.grpc_gen import inference_pb2 as pb
    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    data = tmp_path / "data"
    cli("demo", "--registry", data / "registry")
    key = cli(
        "keys", "create", "--scope", "infer", "--name", "test", "--registry", data / "registry"
    )
    secret = key.splitlines()[0].strip()
    subprocess.run(["chown", "-R", "10001:10001", str(data)], check=True)
    info = inspect(image)
    command = list(info["Config"]["Cmd"])
    ports = {"--http-port": free_port(), "--grpc-port": free_port(), "--metrics-port": free_port()}
    for flag, port in ports.items():
        command[command.index(flag) + 1] = str(port)
    http, grpc_port = ports["--http-port"], ports["--grpc-port"]
    container = Container(
        image,
        ["-v", f"{data}:/var/lib/modelport", "-e", f"MODELPORT_HEALTH_PORT={http}"],
        command,
    )
    containers.append(container)
    container.wait_ready()
    assert httpx.get(f"http://127.0.0.1:{http}/v2/health/ready", timeout=30).status_code == 200
    refused = infer_rest(http)
    assert refused.status_code == 401, refused.text
    assert "modelport keys create" in refused.json()["error"]
    assert_setosa(infer_rest(http, {"x-api-key": secret}))

    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROW)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as unauthenticated:
            stub.ModelInfer(request, timeout=60)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.ModelInfer(request, timeout=60, metadata=[("x-api-key", secret)])
    assert answer.model_name == "iris"
    assert answer.outputs[0].contents.int64_contents[0] == 0

    checked = subprocess.run(
        [*engine(), "exec", container.name, *health_check(info)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # 0, not 137: dumb-init handed SIGTERM to the server, which drained and exited
    # before the engine's SIGKILL.
    assert container.stop() == 0, "".join(container.output)


def test_every_module_imports_in_the_image(image: str) -> None:
    """The trimmed runtime venv (no pip, no tests/ folders, no headers) still holds everything
    each modelport module imports, on a read-only root (no byte code can be written)."""
    script = (
        "import importlib, pkgutil, modelport\n"
        "names = [m.name for m in pkgutil.walk_packages(modelport.__path__, 'modelport.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [
            *engine(),
            "run",
            "--rm",
            *run_flags(),
            "--read-only",
            "--entrypoint",
            "python3",
            image,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 100


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
    info = inspect(image)
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "8082/tcp"}
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert config["Entrypoint"] == ["dumb-init", "--", "modelport"]
    assert not any(env.startswith("MODELPORT_REGISTRY=") for env in config["Env"])
    assert "modelport-healthcheck" in " ".join(health_check(info))
