"""Pickle-family artifacts: refused unless trusted at push, and never loaded once tampered with."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from modelport.cli import main
from modelport.registry.store import Registry

pytestmark = pytest.mark.integration

BODY = {
    "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2] * 2}
    ]
}


@pytest.fixture(scope="module")
def joblib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x.astype(np.float32), y)
    path = tmp_path_factory.mktemp("pickle") / "tree.joblib"
    joblib.dump(model, path)
    return path


def test_untrusted_then_trusted_then_tampered(
    tmp_path: Path, joblib_file: Path, start_server: Callable[..., Any]
) -> None:
    registry = tmp_path / "registry"
    runner = CliRunner()
    push = ["models", "push", str(joblib_file), "--name", "tree", "--registry", str(registry)]

    refused = runner.invoke(main, push)
    assert refused.exit_code == 1, refused.output
    assert "--trust-pickle" in refused.stderr
    assert refused.stderr.startswith("error: ")
    with Registry.open(registry) as store:
        assert store.models() == []

    trusted = runner.invoke(main, [*push, "--trust-pickle"])
    assert trusted.exit_code == 0, trusted.output
    assert trusted.stdout.strip() == "1"
    with Registry.open(registry) as store:
        mv = store.get("tree")
        blob = store.artifact_path(mv)
    assert mv.pickle
    assert mv.trusted_pickle

    # A trusted pickle serves.
    first = start_server("--registry", str(registry))
    with httpx.Client(base_url=first.url) as http:
        response = http.post("/v2/models/tree/infer", json=BODY)
        assert response.status_code == 200, response.text
        assert response.json()["parameters"]["modelport.sha256"] == mv.digest
    assert first.stop() == 0

    # Someone rewrites the stored artifact (the store keeps it read-only; that stops mistakes,
    # not an attacker with the same account).
    blob.chmod(blob.stat().st_mode | stat.S_IWUSR)
    tampered = bytearray(blob.read_bytes())
    tampered[-2] ^= 0xFF
    blob.write_bytes(bytes(tampered))

    second = start_server("--registry", str(registry))
    assert "0 model version(s) loaded" in second.ready_line
    with httpx.Client(base_url=second.url) as http:
        ready = http.get("/v2/models/tree/ready")
        assert ready.status_code == 503
        assert ready.json()["code"] == "not_ready"

        (entry,) = http.post("/v2/repository/index").json()
        assert entry["name"] == "tree"
        assert entry["state"] == "UNAVAILABLE"
        assert mv.digest in entry["reason"]

        load = http.post("/v2/repository/models/tree/load")
        assert load.status_code == 400
        assert load.headers["content-type"] == "application/json"
        assert load.json()["code"] == "untrusted_artifact"
        assert mv.digest in load.json()["error"]
        assert str(blob.parent) not in load.json()["error"]

        infer = http.post("/v2/models/tree/infer", json=BODY)
        assert infer.status_code == 503
        assert mv.digest in infer.json()["error"]
    assert "sha256 mismatch" in second.log()
    assert second.stop() == 0
