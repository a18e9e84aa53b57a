"""The model repository extension: index, load, unload, and what inference says meanwhile."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

DEMO_MODELS = ["diabetes-lightgbm", "greeting-language", "iris", "iris-onnx", "iris-xgboost"]
MODEL = "greeting-language"


def greeting_input() -> list[triton.InferInput]:
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"hello", b"merci beaucoup"], dtype=object))
    return [tensor]


@pytest.fixture
def unloaded(client: triton.InferenceServerClient) -> Iterator[str]:
    """MODEL unloaded for the test, loaded again afterwards whatever the test did."""
    client.unload_model(MODEL)
    yield MODEL
    client.load_model(MODEL)
    assert client.is_model_ready(MODEL)


def test_index_with_an_empty_body(client: triton.InferenceServerClient) -> None:
    # tritonclient POSTs Content-Length 0 and no Content-Type.
    index = client.get_model_repository_index()
    assert sorted(e["name"] for e in index) == DEMO_MODELS
    for entry in index:
        assert entry == {"name": entry["name"], "version": "1", "state": "READY", "reason": ""}


@pytest.mark.parametrize("body", [b"", b"{}", b'{"ready": false}', b'{"ready": true}', b"  \n"])
def test_index_bodies(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v2/repository/index", content=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert sorted(e["name"] for e in response.json()) == DEMO_MODELS


@pytest.mark.parametrize("body", [b"[", b"[]", b'{"ready": "yes"}'])
def test_index_rejects_malformed_options(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v2/repository/index", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"


def test_unload_then_load(client: triton.InferenceServerClient, http: httpx.Client) -> None:
    client.unload_model(MODEL)
    try:
        advice = (
            f"model {MODEL!r} version 1 was unloaded; "
            f"load it with POST /v2/repository/models/{MODEL}/load"
        )
        assert not client.is_model_ready(MODEL)
        # An operator took it away: a client error (retrying will not help), not a 503.
        ready = http.get(f"/v2/models/{MODEL}/ready")
        assert ready.status_code == 404
        assert ready.json() == {"error": advice, "code": "not_found"}

        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, greeting_input())
        assert caught.value.status() == "404"
        assert caught.value.message() == advice
        pinned = http.post(
            f"/v2/models/{MODEL}/versions/1/infer",
            json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]},
        )
        assert pinned.status_code == 404
        assert pinned.json() == {"error": advice, "code": "not_found"}

        everything = http.post("/v2/repository/index").json()
        (entry,) = (e for e in everything if e["name"] == MODEL)
        assert entry["state"] == "UNAVAILABLE"
        assert entry["reason"] == advice
        only_ready = http.post("/v2/repository/index", json={"ready": True}).json()
        assert MODEL not in [e["name"] for e in only_ready]
        assert len(only_ready) == len(DEMO_MODELS) - 1

        # Unloading what is not loaded is not an error.
        again = http.post(f"/v2/repository/models/{MODEL}/unload")
        assert again.status_code == 200
        assert again.json()["versions"] == []
    finally:
        client.load_model(MODEL)
    assert client.is_model_ready(MODEL)
    result = client.infer(MODEL, greeting_input())
    assert result.as_numpy("language").tolist() == [b"en", b"fr"]


def test_metadata_of_an_unloaded_model_is_404(unloaded: str, http: httpx.Client) -> None:
    response = http.get(f"/v2/models/{unloaded}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "was unloaded; load it with POST" in response.json()["error"]


def test_load_with_empty_body_and_json(http: httpx.Client, unloaded: str) -> None:
    response = http.post(f"/v2/repository/models/{unloaded}/load")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": unloaded, "version": "1", "load": True}
    again = http.post(f"/v2/repository/models/{unloaded}/load", json={"parameters": {}})
    assert again.status_code == 200


@pytest.mark.parametrize("action", ["load", "unload"])
def test_unknown_model_is_404(http: httpx.Client, action: str) -> None:
    response = http.post(f"/v2/repository/models/no-such-model/{action}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "not_found"
    assert "no-such-model" in response.json()["error"]


def test_tritonclient_load_unknown_model(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("no-such-model")
    assert caught.value.status() == "404"
    assert "no-such-model" in caught.value.message()


def test_load_with_a_config_is_not_offered(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("iris", config='{"backend": "python"}')
    assert caught.value.status() == "501"
    assert "models push" in caught.value.message()


@pytest.mark.parametrize("body", [b"{", b'{"parameters": []}', b'{"parameters": "x"}', b"[1]"])
def test_load_rejects_malformed_options(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v2/repository/models/iris/load", content=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
