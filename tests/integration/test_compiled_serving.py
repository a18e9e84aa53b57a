"""Serving a version pushed with `--compile onnx`: both digests named, both forms agree."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris

from modelport.cli import main
from modelport.demo import build_iris
from modelport.registry.store import Registry

from ..conftest import assert_close_compiled
from .conftest import ServerFactory

pytestmark = pytest.mark.integration


def test_serving_the_compiled_form_names_both_digests(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    registry = str(tmp_path / "registry")
    iris_file, _, _ = build_iris(tmp_path)
    push = ["models", "push", str(iris_file), "--name", "iris", "--compile", "onnx"]
    pushed = CliRunner().invoke(main, [*push, "--registry", registry])
    assert pushed.exit_code == 0, (pushed.output, pushed.exception)
    with Registry.open(registry) as store:
        mv = store.get("iris")
    assert mv.compiled is not None
    x, _ = load_iris(return_X_y=True)
    body = {
        "inputs": [
            {"name": "input-0", "datatype": "FP32", "shape": [150, 4], "data": x.ravel().tolist()}
        ]
    }
    answers = {}
    for flag in ("--compiled", "--no-compiled"):
        server = start_server("--registry", registry, flag)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.post("/v2/models/iris/infer", json=body).json()
            metadata = http.get("/v2/models/iris").json()
        assert server.stop() == 0
        params = response["parameters"]
        assert params["modelport.sha256"] == mv.digest
        if flag == "--compiled":
            assert params["modelport.compiled_sha256"] == mv.compiled.digest
            assert params["modelport.runtime"] == "onnx"
            assert metadata["parameters"]["modelport.compiled_sha256"] == mv.compiled.digest
        else:
            assert "modelport.compiled_sha256" not in params
            assert "modelport.compiled_sha256" not in metadata["parameters"]
        answers[flag] = {o["name"]: np.asarray(o["data"]) for o in response["outputs"]}
    np.testing.assert_array_equal(
        answers["--compiled"]["predict"], answers["--no-compiled"]["predict"]
    )
    # Within what the compile check verified at push, and no closer: that is all it promises.
    assert_close_compiled(
        answers["--compiled"]["predict_proba"], answers["--no-compiled"]["predict_proba"]
    )
