"""Azure ML online endpoints' custom-container contract against a real server.

The scoring route takes Azure's MLflow-style `input_data` (split orientation and records) and
`instances`; liveness and readiness answer at the routes a deployment names. Requests follow
the examples of Azure ML's documentation for MLflow models, aimed at the demo models.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import ServerFactory, eventually
from .test_observability import samples, total

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
IRIS = {"azureml-model-deployment": "iris"}
TEXT = {"azureml-model-deployment": "greeting-language"}


def _score(http: httpx.Client, body: object, headers: dict[str, str]) -> object:
    response = http.post("/score", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"
    assert len(response.headers["x-model-sha256"]) == 64
    return response.json()


def test_probes_answer(http: httpx.Client) -> None:
    live = http.get("/")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = http.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_split_orientation_and_records_give_one_prediction_per_row(http: httpx.Client) -> None:
    split = {"input_data": {"columns": FEATURES, "index": [0, 1], "data": [SETOSA, VIRGINICA]}}
    rows = _score(http, split, IRIS)
    assert isinstance(rows, list)
    assert [r["predict"] for r in rows] == [0, 2]
    assert sum(rows[1]["predict_proba"]) == pytest.approx(1.0, abs=1e-6)
    records = [
        dict(zip(FEATURES, SETOSA, strict=True)),
        dict(zip(FEATURES, VIRGINICA, strict=True)),
    ]
    assert _score(http, {"input_data": records}, IRIS) == rows
    assert _score(http, {"input_data": {"data": [SETOSA, VIRGINICA]}}, IRIS) == rows
    assert _score(http, {"input_data": {"input-0": [SETOSA, VIRGINICA]}}, IRIS) == rows
    assert _score(http, {"instances": [SETOSA, VIRGINICA]}, IRIS) == {"predictions": rows}


def test_text_model_by_its_column(http: httpx.Client) -> None:
    body = {"input_data": {"columns": ["text"], "data": [["hola"], ["hello anna"]]}}
    assert _score(http, body, TEXT) == ["es", "unknown"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input_data": {"columns": FEATURES[:2], "data": [SETOSA]}}, ["row 0", "2 values"]),
        ({"input_data": {"columns": FEATURES, "index": [0, 1], "data": [SETOSA]}}, ["index"]),
        ({"input_data": {"columns": FEATURES, "data": [SETOSA], "x": 1}}, ["'x'"]),
        ({"input_data": "5.1,3.5"}, ["input_data must be"]),
        ({"data": [SETOSA]}, ['"input_data"']),
        ({"input_data": [SETOSA], "instances": [SETOSA]}, ["not both"]),
        ({"input_data": [SETOSA], "params": [1]}, ['"params"']),
    ],
    ids=["short-row", "index", "unknown-field", "string", "no-input", "both", "params"],
)
def test_bad_scoring_bodies_are_400_with_a_message(
    http: httpx.Client, body: dict[str, object], words: list[str]
) -> None:
    response = http.post("/score", json=body, headers=IRIS)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error"}
    for word in words:
        assert word in error["error"], error


def test_several_models_and_no_deployment_header_say_how_to_choose(http: httpx.Client) -> None:
    response = http.post("/score", json={"input_data": [SETOSA]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "azureml-model-deployment" in message
    assert "azure_model" in message


def test_configured_routes_and_the_only_model(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text(
        '[serve]\nazure_scoring_route = "/api/score"\nazure_liveness_route = "/health/live"\n'
        'azure_readiness_route = "/health/ready"\n'
    )
    server = start_server("--registry", str(registry_dir), "--config", str(config))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.get("/health/live").status_code == 200
        assert http.get("/health/ready").status_code == 200
        assert http.get("/ready").status_code == 404
        # One model served: it answers, whatever deployment (blue/green) the header names.
        # (This iris was pushed without reference data, so its rows go by position.)
        scored = http.post(
            "/api/score",
            json={"input_data": {"index": [0], "data": [SETOSA]}},
            headers={"azureml-model-deployment": "blue"},
        )
        assert scored.status_code == 200, scored.text
        assert scored.json()[0]["predict"] == 0

        def counted() -> bool:
            found = samples(http)
            return (
                total(found, "modelport_requests_total", protocol="azureml", endpoint="infer") == 1
            )

        # Polled: the metrics snapshot is published a moment after the answer.
        eventually(counted, "the scoring request counted under protocol azureml")
