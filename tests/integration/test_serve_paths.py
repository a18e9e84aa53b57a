"""`modelport serve PATH...`: model files and directories served in one command, and SageMaker's
`serve` (the model directory and port from the environment, SIGTERM drain)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.demo import build_iris

from .conftest import STOP_TIMEOUT, ServerFactory, ServerProcess, free_port

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
"""A setosa and a virginica: the iris model predicts [0, 2]."""
IRIS_BODY = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4], "data": ROWS}]}
_TEMPORARY = re.compile(r"^temporary registry (\S+): removed at exit")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris.skops (loads without trusting code) and iris_model.pkl (joblib: a pickle)."""
    import joblib
    import skops.io

    out = tmp_path_factory.mktemp("artifacts")
    path, _, _ = build_iris(out)
    joblib.dump(skops.io.load(path), out / "iris_model.pkl")
    return out


def predict(url: str, model: str, **headers: str) -> list[int]:
    """The iris model's `predict` for ROWS, over OIP REST."""
    response = httpx.post(f"{url}/v2/models/{model}/infer", json=IRIS_BODY, headers=headers)
    assert response.status_code == 200, response.text
    (out,) = [o for o in response.json()["outputs"] if o["name"] == "predict"]
    data: list[int] = out["data"]
    return data


def refused(*args: str) -> str:
    """Run `modelport serve ARGS` expecting it to refuse before serving; its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
    argv = [sys.executable, "-m", "modelport", "serve", "--http-port", "0", "--grpc-port", "0"]
    done = subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=env, timeout=STOP_TIMEOUT * 3
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "serving REST at" not in done.stdout
    return done.stderr


def temporary_registry(server: ServerProcess) -> Path:
    """The temporary registry the server announced."""
    found = [m.group(1) for line in server.output if (m := _TEMPORARY.match(line))]
    assert len(found) == 1, server.log()
    return Path(found[0])


def test_a_skops_file_is_served_under_its_stem_from_a_temporary_registry(
    start_server: ServerFactory, artifacts: Path
) -> None:
    server = start_server(str(artifacts / "iris.skops"))
    assert server.ready_line.endswith("(iris:1)"), server.ready_line
    assert predict(server.url, "iris") == [0, 2]
    registry = temporary_registry(server)
    assert registry.parent == Path(tempfile.gettempdir())
    assert registry.is_dir()
    assert f"(registry: {registry};" in server.log()
    assert server.stop() == 0
    assert not registry.exists(), "the temporary registry outlived the server"


def test_a_pickle_is_refused_without_trust_pickle(artifacts: Path) -> None:
    message = refused(str(artifacts / "iris_model.pkl"))
    assert "'iris_model.pkl' can run arbitrary code when loaded" in message
    assert "--trust-pickle" in message


def test_a_pickle_is_served_with_trust_pickle_and_a_model_name(
    start_server: ServerFactory, artifacts: Path
) -> None:
    server = start_server(
        str(artifacts / "iris_model.pkl"), "--trust-pickle", "--model-name", "flowers"
    )
    assert server.ready_line.endswith("(flowers:1)"), server.ready_line
    assert predict(server.url, "flowers") == [0, 2]


def test_a_directory_serves_each_model_in_it(
    start_server: ServerFactory, artifacts: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "first.skops").write_bytes((artifacts / "iris.skops").read_bytes())
    (models / "second.pkl").write_bytes((artifacts / "iris_model.pkl").read_bytes())
    (models / "README.md").write_text("not a model\n")
    (models / "settings.json").write_text('{"not": "an XGBoost model"}\n')
    server = start_server(str(models), "--trust-pickle", "--registry", str(tmp_path / "reg"))
    assert server.ready_line.endswith("(first:1, second:1)"), server.ready_line
    assert predict(server.url, "first") == predict(server.url, "second") == [0, 2]
    assert not any(_TEMPORARY.match(line) for line in server.output)
    assert (tmp_path / "reg").is_dir()


def test_two_models_of_one_name_are_refused(artifacts: Path, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "iris.skops").write_bytes((artifacts / "iris.skops").read_bytes())
    message = refused(str(tmp_path / "a"), str(tmp_path / "b" / "iris.skops"))
    assert "two models would both be named 'iris' (a/iris.skops and b/iris.skops)" in message
    message = refused(str(tmp_path / "a"), str(tmp_path / "b"), "--model-name", "x")
    assert "--model-name applies to the one model of PATH, but the paths hold 2 models" in message


def write_slow_model(path: Path, started: Path) -> Path:
    """A python model (its signature its own) that says it started on the FIFO `started`,
    then takes a second."""
    import cloudpickle

    class Slow:
        def __init__(self, fifo: str) -> None:
            self.fifo = fifo
            self.signature = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            }

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            import time

            with open(self.fifo, "wb") as fh:
                fh.write(b"1")
            time.sleep(1.0)
            return {"y": inputs["x"] * 2}

    path.write_bytes(cloudpickle.dumps(Slow(str(started))))
    return path


def test_sagemaker_serve_takes_the_model_directory_and_port_and_drains_on_sigterm(
    start_server: ServerFactory, artifacts: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes((artifacts / "iris_model.pkl").read_bytes())
    started = tmp_path / "started"
    os.mkfifo(started)
    write_slow_model(model_dir / "slow.cloudpickle", started)
    port = free_port()
    env = {
        "MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        # SageMaker starts the container with `serve` alone: trust comes from the environment.
        "MODELPORT_TRUST_PICKLE": "1",
    }
    server = start_server(env=env, ports=False)
    assert server.ready_line.endswith("(model:1, slow:1)"), server.ready_line
    assert server.url == f"http://0.0.0.0:{port}"
    assert server.grpc_address == "", "SageMaker speaks HTTP only; gRPC stays off"
    url = f"http://127.0.0.1:{port}"
    # SageMaker's own Host name, whatever it is, is answered.
    assert predict(url, "model", host="model.sagemaker.internal") == [0, 2]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=30) as http:
        pending = pool.submit(http.post, "/v2/models/slow/infer", json=body)
        with started.open("rb") as fifo:  # blocks until the model is running the request
            assert fifo.read(1) == b"1"
        # ServerProcess.stop fails the test past STOP_TIMEOUT (20 s, within SageMaker's 30).
        code = server.stop(signal.SIGTERM)
        response = pending.result(timeout=30)
    assert code == 0, server.log()
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2, 4]
    assert not temporary_registry(server).exists()


def test_a_named_registry_is_served_as_before_beside_a_sagemaker_directory(
    start_server: ServerFactory, artifacts: Path, registry_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    (model_dir / "other.skops").write_bytes((artifacts / "iris.skops").read_bytes())
    env = {"MODELPORT_SAGEMAKER_MODEL_DIR": str(model_dir)}
    server = start_server("--registry", str(registry_dir), env=env)
    assert server.ready_line.endswith("(iris:1)"), server.ready_line
    assert not any("SageMaker" in line for line in server.output)
    assert server.url.startswith("http://127.0.0.1:")
