"""tritonclient and the kserve client over gRPC against a real server, each in its own process.

Their generated protobuf modules register the same `inference.*` symbols as modelport's, so
they run in the clients' venv (`make clients`), named by MODELPORT_CLIENTS_PYTHON.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport

from ..conftest import assert_close_float32

CLIENTS_PYTHON = os.environ.get("MODELPORT_CLIENTS_PYTHON", "")
SCRIPTS = Path(__file__).parents[1] / "clients"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CLIENTS_PYTHON,
        reason="MODELPORT_CLIENTS_PYTHON is unset; `make test` points it at the clients venv",
    ),
]


def run_client(script: str, address: str) -> dict[str, Any]:
    done = subprocess.run(
        [CLIENTS_PYTHON, str(SCRIPTS / script), address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def iris(demo_registry: Path) -> Any:
    model = modelport.load("iris", registry=demo_registry)
    yield model
    model.close()


def test_tritonclient_grpc(grpc_server: Any, iris: Any) -> None:
    report = run_client("triton_grpc.py", grpc_server.grpc_address)
    assert report["live"] is True
    assert report["ready"] is True
    assert report["iris_ready"] is True
    # An unknown model is not ready: either ready=false or NOT_FOUND, never UNKNOWN.
    assert report["unknown_ready"]["status"] in ("OK", "StatusCode.NOT_FOUND")
    if report["unknown_ready"]["status"] == "OK":
        assert report["unknown_ready_value"] is False
    assert {"binary_tensor_data", "model_repository"} <= set(
        report["server_metadata"]["extensions"]
    )
    metadata = report["iris_metadata"]
    assert [i["name"] for i in metadata["inputs"]] == ["input-0"]
    assert metadata["inputs"][0]["shape"] == ["-1", "4"]  # int64 fields come as strings in JSON
    for seen in report["infers"]:
        x = np.asarray(seen["rows"], dtype=np.float32)
        want = iris.predict(x)
        assert seen["predict"] == want["predict"].tolist()
        assert_close_float32(seen["predict_proba"], want["predict_proba"])
        assert seen["model_version"] == "1"
        assert seen["id"] == "rq-1"
        assert seen["parameters"]["modelport.sha256"]["string_param"] == iris.version.digest
    assert report["greeting"] == ["fr", "es", "unknown"]
    assert report["bad_shape"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "[-1, 4]" in report["bad_shape"]["message"]
    assert report["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert {e["name"] for e in report["index"]["models"]} >= {"iris", "iris-onnx"}
    assert report["after_unload_ready"] is False
    assert report["after_load_ready"] is True
    first, second, third = report["stream"]
    assert first["id"] == "s1"
    assert third["id"] == "s3"
    for answer in (first, third):
        want = iris.predict(np.asarray(answer["rows"], dtype=np.float32))["predict"]
        assert answer["predict"] == want.tolist()
    assert "error" in second
    assert "[-1, 4]" in second["error"]


def test_kserve_grpc(grpc_server: Any, iris: Any) -> None:
    report = run_client("kserve_grpc.py", grpc_server.grpc_address)
    assert report["live"] is True
    assert report["ready"] is True
    assert report["iris_ready"] is True
    assert [seen["raw"] for seen in report["infers"]] == [True, False]  # raw and typed inputs
    for seen in report["infers"]:
        want = iris.predict(np.asarray(seen["rows"], dtype=np.float32))
        assert seen["outputs"]["predict"] == want["predict"].tolist()
        assert_close_float32(seen["outputs"]["predict_proba"], want["predict_proba"])
    assert "INVALID_ARGUMENT" in report["bad_shape"]
