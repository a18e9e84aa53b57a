"""Several versions of one model loaded at once: the plain path serves the newest loaded one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.registry.store import Registry

from ..conftest import assert_close_float32

pytestmark = pytest.mark.integration

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
BODY = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": ROWS}]}


@pytest.fixture(scope="module")
def digests(extra_registry: Path) -> dict[int, str]:
    with Registry.open(extra_registry) as registry:
        return {mv.version: mv.digest for mv in registry.versions("iris")}


@pytest.fixture(scope="module")
def api(extra_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extra_server.url, timeout=30.0) as client:
        yield client


def infer(api: httpx.Client, path: str) -> dict[str, Any]:
    response = api.post(path, json=BODY)
    assert response.status_code == 200, response.text
    return response.json()


def proba(body: dict[str, Any]) -> np.ndarray[Any, Any]:
    (out,) = (o for o in body["outputs"] if o["name"] == "predict_proba")
    return np.reshape(out["data"], out["shape"])


def test_two_versions_side_by_side(api: httpx.Client, digests: dict[int, str]) -> None:
    assert digests[1] != digests[2]
    # At start-up only the newest version is loaded.
    assert api.get("/v2/models/iris/versions/2/ready").status_code == 200
    not_loaded = api.get("/v2/models/iris/versions/1/ready")
    assert not_loaded.status_code == 503
    assert not_loaded.json()["code"] == "not_ready"
    assert api.get("/v2/models/iris").json()["versions"] == ["2"]

    loaded = api.post("/v2/repository/models/iris/load", json={"parameters": {"version": "1"}})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["version"] == "1"
    try:
        assert api.get("/v2/models/iris/versions/1/ready").status_code == 200
        metadata = api.get("/v2/models/iris").json()
        assert metadata["versions"] == ["1", "2"]
        assert metadata["parameters"]["modelport.sha256"] == digests[2]
        v1_meta = api.get("/v2/models/iris/versions/1").json()
        assert v1_meta["parameters"]["modelport.sha256"] == digests[1]

        newest = infer(api, "/v2/models/iris/infer")
        v2 = infer(api, "/v2/models/iris/versions/2/infer")
        v1 = infer(api, "/v2/models/iris/versions/1/infer")
        assert newest["model_version"] == v2["model_version"] == "2"
        assert v1["model_version"] == "1"
        assert newest["parameters"]["modelport.sha256"] == digests[2]
        assert v1["parameters"]["modelport.sha256"] == digests[1]
        # Different models really answered: C=0.01 is far less confident than the default.
        assert_close_float32(proba(newest), proba(v2))
        assert np.abs(proba(v1) - proba(v2)).max() > 0.1
        assert proba(v1).max() > proba(v2).max()

        index = api.post("/v2/repository/index", json={"ready": True}).json()
        iris_entries = sorted(e["version"] for e in index if e["name"] == "iris")
        assert iris_entries == ["1", "2"]
    finally:
        unloaded = api.post(
            "/v2/repository/models/iris/unload", json={"parameters": {"version": "1"}}
        )
        assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["versions"] == ["1"]
    # Version 2 keeps serving; version 1 was unloaded: a client error that says how to load it.
    assert infer(api, "/v2/models/iris/infer")["model_version"] == "2"
    gone = api.post("/v2/models/iris/versions/1/infer", json=BODY)
    assert gone.status_code == 404
    assert gone.json() == {
        "error": "model 'iris' version 1 was unloaded; "
        "load it with POST /v2/repository/models/iris/load",
        "code": "not_found",
    }


def test_loading_an_unknown_version_is_404(api: httpx.Client) -> None:
    response = api.post("/v2/repository/models/iris/load", json={"parameters": {"version": 9}})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "9" in response.json()["error"]


def test_loading_the_loaded_version_again_is_harmless(
    api: httpx.Client, digests: dict[int, str]
) -> None:
    response = api.post("/v2/repository/models/iris/load")
    assert response.status_code == 200
    assert response.json()["version"] == "2"
    assert infer(api, "/v2/models/iris/infer")["parameters"]["modelport.sha256"] == digests[2]
