"""The served demo answers drift: PSI and KS per feature once a few inferences came in, over
the server's window whichever worker answers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def test_the_drift_window_is_the_servers_across_workers(
    start_server: Callable[..., Any], demo_registry: Path
) -> None:
    server = start_server("--registry", str(demo_registry), "--workers", "2", "--model", "iris")
    x = training_rows("iris")
    rows = x[np.random.default_rng(13).permutation(len(x))[:120]]
    chunks = np.array_split(rows, 40)  # 40 inferences of 3 rows

    def infer(chunk: np.ndarray[Any, Any]) -> None:
        tensor = {"name": "input-0", "datatype": "FP32", "shape": [3, 4], "data": chunk.tolist()}
        # A fresh connection each: the kernel spreads connections over the workers (SO_REUSEPORT);
        # the odds that one worker takes all 40 are 2 in 2^40.
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answer = http.post("/v2/models/iris/infer", json={"inputs": [tensor]})
            assert answer.status_code == 200, answer.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(infer, chunks))

    def fresh(path: str) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.get(path)
        assert response.status_code == 200, response.text
        return response

    # Whichever worker answers, the report covers every worker's rows.
    reports = [fresh("/v2/models/iris/drift").json() for _ in range(16)]
    assert {(r["observed"], r["window"]) for r in reports} == {(120, 120)}
    psi = {f["name"]: f["psi"] for f in reports[0]["features"]}
    assert all({f["name"]: f["psi"] for f in r["features"]} == psi for r in reports)
    assert all(value is not None for value in psi.values())

    # Both workers compute the same window's gauges; a scrape shows that value, not the sum.
    version = reports[0]["version"]
    for _ in range(4):
        scraped = {
            sample.labels["feature"]: sample.value
            for family in text_string_to_metric_families(fresh("/metrics").text)
            for sample in family.samples
            if sample.name == "modelport_drift_psi"
            and sample.labels["model"] == "iris"
            and sample.labels["version"] == version
        }
        # The exposition writes repr(float): the same number, read back exactly.
        assert scraped == psi
