"""Vertex AI's custom-container contract against a real server started as Vertex starts it.

Vertex sets AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and AIP_DEPLOYED_MODEL_ID; the
server must listen on that port, answer health checks and predictions at those routes, and
answer `{"instances": [...], "parameters": {...}}` with `{"predictions": [...],
"deployedModelId", "model", "modelDisplayName", "modelVersionId"}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.demo import build_iris
from modelport.intake.push import push_artifact
from modelport.registry.store import Registry

from .conftest import CREATED_BY, ServerFactory, ServerProcess, eventually, free_port
from .test_observability import samples, total

pytestmark = pytest.mark.integration

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
PREDICT = "/v1/endpoints/1234/deployedModels/5678:predict"
"""The predict route Vertex AI uses when the model names none (AIP_PREDICT_ROUTE)."""


@pytest.fixture(scope="module")
def vertex(start_server: ServerFactory, registry_dir_module: Path) -> ServerProcess:
    port = free_port()
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/health",
        "AIP_PREDICT_ROUTE": PREDICT,
        "AIP_DEPLOYED_MODEL_ID": "5678",
    }
    server = start_server("--registry", str(registry_dir_module), env=env)
    assert server.url.endswith(f":{port}"), server.url
    return server


@pytest.fixture(scope="module")
def registry_dir_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of its own holding iris only: the one model Vertex's route answers with."""
    tmp = tmp_path_factory.mktemp("vertex")
    location = tmp / "registry"
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(tmp)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
    return location


@pytest.fixture(scope="module")
def http(vertex: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vertex.url, timeout=30.0) as client:
        yield client


def test_health_route_from_the_environment(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {}


def test_predict_route_answers_as_vertex_documents(http: httpx.Client) -> None:
    response = http.post(
        PREDICT,
        json={"instances": [SETOSA, VIRGINICA], "parameters": {}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "predictions",
        "deployedModelId",
        "model",
        "modelDisplayName",
        "modelVersionId",
    }
    assert body["deployedModelId"] == "5678"
    assert (body["model"], body["modelDisplayName"], body["modelVersionId"]) == (
        "iris",
        "iris",
        "1",
    )
    assert [p["predict"] for p in body["predictions"]] == [0, 2]
    assert sum(body["predictions"][0]["predict_proba"]) == pytest.approx(1.0, abs=1e-6)
    assert response.headers["x-model-version"] == "1"
    assert len(response.headers["x-model-sha256"]) == 64
    # Objects naming the input, by the route that names the model; parameters pass through.
    named = http.post(
        "/vertex/models/iris:predict",
        json={"instances": [{"input-0": SETOSA}], "parameters": {"timeout": 30_000_000}},
    )
    assert named.status_code == 200, named.text
    assert named.json()["predictions"] == body["predictions"][:1]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"instances": [SETOSA[:3]]}, 400, ["4 per record"]),
        ({"inputs": [SETOSA]}, 400, ["'inputs'"]),
        ({}, 400, ['"instances"']),
        ({"instances": [SETOSA], "parameters": [1]}, 400, ['"parameters"']),
        ({"instances": [SETOSA], "parameters": {"x": {"y": 1}}}, 400, ["parameters.x"]),
    ],
    ids=["ragged", "unknown-field", "no-instances", "parameters-list", "parameters-nested"],
)
def test_bad_requests_are_4xx_in_vertex_error_shape(
    http: httpx.Client, body: dict[str, object], status: int, words: list[str]
) -> None:
    response = http.post(PREDICT, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error"}
    for word in words:
        assert word in error["error"], error


def test_unknown_model_and_counted_under_vertex(http: httpx.Client) -> None:
    response = http.post("/vertex/models/nothing:predict", json={"instances": [SETOSA]})
    assert response.status_code == 404, response.text
    assert "nothing" in response.json()["error"]

    def counted() -> bool:
        found = samples(http)
        return total(found, "modelport_requests_total", protocol="vertex", code="404") == 1

    # Polled: the metrics snapshot is published a moment after the answer.
    eventually(counted, "the refused prediction counted under protocol vertex")


def test_without_the_variables_the_default_routes_answer(
    start_server: ServerFactory, demo_registry: Path
) -> None:
    server = start_server("--registry", str(demo_registry))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.get("/vertex/health").status_code == 200
        several = http.post("/vertex/predict", json={"instances": [SETOSA]})
        assert several.status_code == 400, several.text
        assert "vertex_model" in several.json()["error"]
        text = http.post("/vertex/models/greeting-language:predict", json={"instances": ["hola"]})
        assert text.status_code == 200, text.text
        assert text.json()["predictions"] == ["es"]
        assert text.json()["deployedModelId"] == "greeting-language"
