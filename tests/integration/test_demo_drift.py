"""The served demo answers drift: PSI and KS per feature once a few inferences came in."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

TABULAR = ("iris", "iris-xgboost", "iris-onnx", "diabetes-lightgbm")
"""The demo models with one numeric [-1, F] input."""


def training_rows(name: str) -> np.ndarray[Any, Any]:
    from sklearn.datasets import load_diabetes, load_iris

    x = load_diabetes().data if name == "diabetes-lightgbm" else load_iris().data
    return np.asarray(x, dtype=np.float32)


@pytest.mark.parametrize("name", TABULAR)
def test_demo_model_answers_drift(http: httpx.Client, name: str) -> None:
    metadata = http.get(f"/v2/models/{name}").json()
    (spec,) = metadata["inputs"]
    x = training_rows(name)
    rows = x[np.linspace(0, len(x) - 1, 40).round().astype(int)]
    for chunk in np.array_split(rows, 4):  # a few inferences, 10 rows each
        tensor = {
            "name": spec["name"],
            "datatype": "FP32",
            "shape": list(chunk.shape),
            "data": chunk.tolist(),
        }
        answer = http.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
    response = http.get(f"/v2/models/{name}/drift")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["model"] == name
    assert report["status"] == "ok"
    assert report["observed"] >= 40
    features = report["features"]
    assert [f["column"] for f in features] == list(range(rows.shape[1]))
    for feature in features:
        assert feature["kind"] == "numeric"
        assert feature["status"] == "ok"
        # The window is the server's, shared with other tests' inputs: only the ranges hold.
        assert isinstance(feature["psi"], float)
        assert feature["psi"] >= 0.0
        assert 0.0 <= feature["ks"] <= 1.0
