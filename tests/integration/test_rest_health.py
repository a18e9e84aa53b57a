"""Health, server metadata, model metadata and model readiness over REST."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from modelport.registry.store import Registry

pytestmark = pytest.mark.integration

DEMO_MODELS = ("iris", "iris-xgboost", "diabetes-lightgbm", "iris-onnx", "greeting-language")


@pytest.fixture(scope="module")
def registered(demo_registry: Path) -> dict[str, dict[str, object]]:
    """What the registry itself says about each demo model's newest version."""
    with Registry.open(demo_registry) as registry:
        return {mv.name: mv.to_dict() for mv in registry.latest()}


@pytest.mark.parametrize(("path", "body"), [("live", {"live": True}), ("ready", {"ready": True})])
def test_health_answers_200_with_json_body(http: httpx.Client, path: str, body: object) -> None:
    response = http.get(f"/v2/health/{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == body


def test_health_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata_lists_extensions(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelport"
    assert isinstance(metadata["version"], str)
    assert metadata["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_iris_metadata_matches_the_contract(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("iris")
    assert metadata["name"] == "iris"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_greeting_metadata_takes_bytes(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("greeting-language")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "language", "datatype": "BYTES", "shape": [-1]}]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_every_model_has_batch_dims_and_provenance(
    client: triton.InferenceServerClient,
    registered: dict[str, dict[str, object]],
    name: str,
) -> None:
    metadata = client.get_model_metadata(name)
    assert metadata == client.get_model_metadata(name, model_version="1")
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"]
    assert metadata["outputs"]
    for tensor in metadata["inputs"] + metadata["outputs"]:
        assert tensor["shape"][0] == -1, tensor
        assert isinstance(tensor["datatype"], str)
    mv = registered[name]
    assert metadata["inputs"] == mv["signature"]["inputs"]  # type: ignore[index]
    assert metadata["outputs"] == mv["signature"]["outputs"]  # type: ignore[index]
    params = metadata["parameters"]
    assert params["modelport.sha256"] == mv["digest"]
    assert params["modelport.version"] == "1"
    assert params["modelport.format"] == mv["format"]
    assert params["modelport.created_at"] == mv["created_at"]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_loaded_models_are_ready(client: triton.InferenceServerClient, name: str) -> None:
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, model_version="1")


def test_model_ready_body(http: httpx.Client) -> None:
    response = http.get("/v2/models/iris/ready")
    assert response.status_code == 200
    assert response.json() == {"name": "iris", "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/no-such-model/ready",
        "/v2/models/no-such-model",
        "/v2/models/iris/versions/7/ready",
        "/v2/models/iris/versions/7",
        "/v2/models/iris/versions/newest",
    ],
)
def test_unknown_model_or_version_is_404(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == "not_found"


def test_unknown_model_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert not client.is_model_ready("no-such-model")
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model")
    assert caught.value.status() == "404"
    assert "no-such-model" in caught.value.message()
