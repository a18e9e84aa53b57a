"""Concurrent requests to several models each get their own, correct answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

import modelport

from ..conftest import assert_close_float32

pytestmark = pytest.mark.integration

MODELS = ("iris", "iris-xgboost", "diabetes-lightgbm", "iris-onnx")


def test_concurrent_mixed_requests(http: httpx.Client, demo_registry: Path) -> None:
    rng = np.random.default_rng(7)
    sources = {"diabetes-lightgbm": load_diabetes().data, "default": load_iris().data}
    jobs: list[tuple[str, str, np.ndarray[Any, Any]]] = []
    embedded = {name: modelport.load(name, registry=demo_registry) for name in MODELS}
    try:
        for i in range(96):
            name = MODELS[i % len(MODELS)]
            data = sources.get(name, sources["default"])
            rows = data[rng.integers(0, len(data), size=int(rng.integers(1, 9)))]
            (spec,) = embedded[name].signature.inputs
            jobs.append((name, spec.name, rows.astype(np.float32)))
        expected = [embedded[name].predict(x) for name, _, x in jobs]
    finally:
        for model in embedded.values():
            model.close()

    def call(job: tuple[int, tuple[str, str, np.ndarray[Any, Any]]]) -> dict[str, Any]:
        index, (name, input_name, x) = job
        body = {
            "id": f"job-{index}",
            "inputs": [
                {"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                 "data": x.ravel().tolist()}
            ],
        }  # fmt: skip
        response = http.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, enumerate(jobs)))

    for index, (result, want) in enumerate(zip(results, expected, strict=True)):
        assert result["id"] == f"job-{index}"
        assert result["model_name"] == jobs[index][0]
        outputs = {o["name"]: o for o in result["outputs"]}
        assert set(outputs) == set(want)
        for name, array in want.items():
            got = np.reshape(outputs[name]["data"], outputs[name]["shape"])
            # Answered within batches of other sizes; the float32 rule holds FP64 outputs too,
            # which compiled graphs compute in float32.
            assert_close_float32(got, array, err_msg=f"{jobs[index][0]} {name}")
