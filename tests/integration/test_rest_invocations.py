"""MLflow's scoring protocol and SageMaker's container contract against a real server.

The request shapes are those of MLflow's documentation for `mlflow models serve` (plain
`requests` calls and MLflow's own scoring client) and of SageMaker's container and
multi-model contracts.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from .conftest import ServerFactory, ServerProcess
from .test_security import make_keys

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
IRIS = {"X-Amzn-SageMaker-Target-Model": "iris"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def solo(start_server: ServerFactory, demo_registry: Path) -> ServerProcess:
    """A server of the demo registry serving iris only (the other models stay registered)."""
    return start_server("--registry", str(demo_registry), "--model", "iris")


@pytest.fixture(scope="module")
def solo_http(solo: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=solo.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def expected(http: httpx.Client) -> dict[str, Any]:
    """iris's answer to ROWS over the OIP, and its artifact digest."""
    reply = http.post(
        "/v2/models/iris/infer",
        json={"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]},
    )
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o["data"] for o in reply.json()["outputs"]}
    return {
        "predict": outputs["predict"],
        "predict_proba": np.array(outputs["predict_proba"]).reshape(2, 3),
        "sha256": reply.json()["parameters"]["modelport.sha256"],
    }


def assert_iris(predictions: Any, expected: dict[str, Any]) -> None:
    assert [p["predict"] for p in predictions] == expected["predict"]
    proba = np.array([p["predict_proba"] for p in predictions])
    np.testing.assert_allclose(proba, expected["predict_proba"], rtol=0, atol=1e-6)


def error_of(reply: httpx.Response | requests.Response, status: int, code: str) -> str:
    """MLflow's error body: the status, its error_code, and the message."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"error_code", "message"}, body
    assert body["error_code"] == code, body
    message: str = body["message"]
    return message


def test_ping_is_200_when_ready(http: httpx.Client) -> None:
    reply = http.get("/ping")
    assert reply.status_code == 200
    assert reply.json() == {"ready": True}
    assert "x-request-id" in reply.headers


def test_mlflow_s_scoring_client_scores_a_dataframe(
    solo: ServerProcess, expected: dict[str, Any]
) -> None:
    host, port = solo.hostport.rsplit(":", 1)
    client = ScoringServerClient(host, int(port))
    client.ping()  # raises unless 200
    client.wait_server_ready(timeout=30)
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    answer = client.invoke(frame, params={"note": "from mlflow"})
    assert_iris(answer["predictions"], expected)


@pytest.mark.parametrize(
    "document",
    [
        {"dataframe_split": {"columns": FEATURES, "data": ROWS}},
        # pandas' split orientation, index and all, with the columns in another order
        {
            "dataframe_split": {
                "index": [7, 8],
                "columns": FEATURES[::-1],
                "data": [r[::-1] for r in ROWS],
            }
        },
        {"dataframe_split": {"data": ROWS}},
        {"dataframe_records": [dict(zip(FEATURES, r, strict=True)) for r in ROWS]},
        {"dataframe_split": {"columns": FEATURES, "data": ROWS}, "params": {"threshold": 0.5}},
    ],
    ids=["split", "split-index-reordered", "split-positional", "records", "params"],
)
def test_mlflow_s_json_forms(
    solo: ServerProcess, expected: dict[str, Any], document: dict[str, Any]
) -> None:
    # As MLflow's documentation calls a local scoring server: plain requests.
    reply = requests.post(f"{solo.url}/invocations", json=document, headers=JSON, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-model-version"] == "1"
    assert reply.headers["x-model-sha256"] == expected["sha256"]
    assert_iris(reply.json()["predictions"], expected)


@pytest.mark.parametrize(
    "document",
    [
        {"instances": ROWS},  # TF Serving's row format, as MLflow documents it
        {"instances": [dict(zip(FEATURES, row, strict=True)) for row in ROWS]},
        {"inputs": ROWS},  # the columnar format: the only input's tensor
        {"inputs": {"input-0": ROWS}},
    ],
    ids=["instances", "instances-objects", "inputs", "inputs-named"],
)
def test_tf_serving_forms_answer_predictions(
    solo_http: httpx.Client, expected: dict[str, Any], document: dict[str, Any]
) -> None:
    reply = solo_http.post("/invocations", json=document)
    assert reply.status_code == 200, reply.text
    assert_iris(reply.json()["predictions"], expected)


def test_a_ragged_instances_form_is_a_bad_request(solo_http: httpx.Client) -> None:
    reply = solo_http.post("/invocations", json={"instances": [ROWS[0], ROWS[1][:3]]})
    assert error_of(reply, 400, "BAD_REQUEST")


def test_target_model_header_picks_the_model(http: httpx.Client, expected: dict[str, Any]) -> None:
    document = {"dataframe_split": {"data": ROWS}}
    # SageMaker's TargetModel is an artifact's relative path; a .tar.gz suffix is dropped.
    for target in ("iris", "iris.tar.gz"):
        headers = {"X-Amzn-SageMaker-Target-Model": target}
        reply = http.post("/invocations", json=document, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-model-sha256"] == expected["sha256"]
        assert_iris(reply.json()["predictions"], expected)
    onnx = http.post(
        "/invocations", json=document, headers={"X-Amzn-SageMaker-Target-Model": "iris-onnx"}
    )
    assert onnx.status_code == 200, onnx.text
    assert onnx.headers["x-model-sha256"] != expected["sha256"]
    metrics = http.get("/metrics").text
    assert 'protocol="invocations"' in metrics


def test_several_models_and_no_header_is_a_400_naming_them(http: httpx.Client) -> None:
    reply = http.post("/invocations", json={"dataframe_split": {"data": ROWS}})
    message = error_of(reply, 400, "BAD_REQUEST")
    assert "iris-onnx" in message
    assert "X-Amzn-SageMaker-Target-Model" in message
    unknown = http.post(
        "/invocations",
        json={"dataframe_split": {"data": ROWS}},
        headers={"X-Amzn-SageMaker-Target-Model": "no-such-model"},
    )
    assert "no-such-model" in error_of(unknown, 404, "RESOURCE_DOES_NOT_EXIST")


def test_csv_round_trip(solo_http: httpx.Client, expected: dict[str, Any]) -> None:
    body = "".join(",".join(map(str, r)) + "\n" for r in ROWS)
    headers = {"Content-Type": "text/csv"}
    reply = solo_http.post("/invocations", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert reply.headers["x-model-sha256"] == expected["sha256"]
    lines = pd.read_csv(io.StringIO(reply.text), header=None)
    assert lines[0].tolist() == expected["predict"]
    np.testing.assert_allclose(lines[[1, 2, 3]].to_numpy(), expected["predict_proba"], atol=1e-6)
    # A header of the model's feature names (pandas' to_csv), answered in JSON by Accept.
    framed = pd.DataFrame(ROWS, columns=FEATURES).to_csv(index=False)
    as_json = solo_http.post(
        "/invocations",
        content=framed,
        headers={"Content-Type": "text/csv; charset=utf-8", "Accept": "application/json"},
    )
    assert as_json.status_code == 200, as_json.text
    assert_iris(as_json.json()["predictions"], expected)


def test_avro_round_trip(solo_http: httpx.Client, expected: dict[str, Any]) -> None:
    schema = {
        "type": "record",
        "name": "Flower",
        "fields": [{"name": f, "type": "float"} for f in FEATURES],
    }
    out = io.BytesIO()
    records = [dict(zip(FEATURES, r, strict=True)) for r in ROWS]
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    headers = {"Content-Type": "application/avro", "Accept": "application/avro"}
    reply = solo_http.post("/invocations", content=out.getvalue(), headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/avro"
    answers = list(fastavro.reader(io.BytesIO(reply.content)))
    assert [a["predict"] for a in answers] == expected["predict"]
    proba = np.array([a["predict_proba"] for a in answers])
    np.testing.assert_allclose(proba, expected["predict_proba"], rtol=0, atol=1e-6)
    assert {a["_sha256"] for a in answers} == {expected["sha256"]}
    assert {a["_request_id"] for a in answers} == {reply.headers["x-request-id"]}
    # Without Accept: JSON.
    plain = solo_http.post(
        "/invocations", content=out.getvalue(), headers={"Content-Type": "application/avro"}
    )
    assert plain.status_code == 200, plain.text
    assert_iris(plain.json()["predictions"], expected)


@pytest.mark.parametrize(
    ("content", "content_type", "word"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[[5.1, 3.5, 1.4, 0.2]]", "application/json", "must be a JSON object"),
        (b'{"data": [[1, 2, 3, 4]]}', "application/json", "exactly one of"),
        (
            b'{"dataframe_split": {"data": [[1,2,3,4]]}, "dataframe_records": []}',
            "application/json",
            "exactly one of",
        ),
        (b'{"dataframe_split": [[1, 2, 3, 4]]}', "application/json", '"data"'),
        (b'{"dataframe_split": {"data": [[1, 2, 3]]}}', "application/json", "row 1 has 3"),
        (b'{"dataframe_records": [{"a": 1}]}', "application/json", "sepal_length"),
        (
            b'{"dataframe_split": {"data": [[1,2,3,4]]}, "params": [1]}',
            "application/json",
            "params",
        ),
        (b"1,2,3,4\n1,2,3\n", "text/csv", "CSV row 2 has 3 value(s)"),
        (b"1,2,three,4\n", "text/csv", "CSV row 1, column 3"),
        (b"1,2,3,4\n", "text/csv; charset=latin-1", "UTF-8"),
        (b'{"columns": ["a"], "data": [[1]]}', "application/json; format=pandas-split", "format"),
        (b"not avro", "application/avro", "Avro object container file"),
        (b"a=1", "application/x-www-form-urlencoded", "text/csv"),
    ],
)
def test_bad_input_is_a_400_saying_what_to_fix(
    solo_http: httpx.Client, content: bytes, content_type: str, word: str
) -> None:
    reply = solo_http.post("/invocations", content=content, headers={"Content-Type": content_type})
    assert word in error_of(reply, 400, "BAD_REQUEST")


def test_avro_records_that_do_not_fit_are_a_400(solo_http: httpx.Client) -> None:
    schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "double"}]}
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [{"x": 1.0}])
    reply = solo_http.post(
        "/invocations", content=out.getvalue(), headers={"Content-Type": "application/avro"}
    )
    assert "sepal_length" in error_of(reply, 400, "BAD_REQUEST")


def test_multi_model_api(solo_http: httpx.Client, expected: dict[str, Any]) -> None:
    listed = solo_http.get("/models")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"models": [{"modelName": "iris", "modelUrl": "models:/iris"}]}
    # Load: a registered model made ready; the url is shown back.
    url = "/opt/ml/models/iris-onnx/model"
    loaded = solo_http.post("/models", json={"model_name": "iris-onnx", "url": url})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["modelName"] == "iris-onnx"
    try:
        again = solo_http.post("/models", json={"model_name": "iris-onnx", "url": url})
        assert "already loaded" in error_of(again, 409, "RESOURCE_CONFLICT")
        assert solo_http.get("/models/iris-onnx").json() == {
            "modelName": "iris-onnx",
            "modelUrl": url,
        }
        names = [m["modelName"] for m in solo_http.get("/models").json()["models"]]
        assert names == ["iris", "iris-onnx"]
        invoked = solo_http.post(
            "/models/iris/invoke",
            json={"dataframe_split": {"data": ROWS}},
            headers={"X-Amzn-SageMaker-Target-Model": "iris.tar.gz"},
        )
        assert invoked.status_code == 200, invoked.text
        assert_iris(invoked.json()["predictions"], expected)
        # Two models now: /invocations needs the header.
        bare = solo_http.post("/invocations", json={"dataframe_split": {"data": ROWS}})
        assert "2 models" in error_of(bare, 400, "BAD_REQUEST")
    finally:
        gone = solo_http.delete("/models/iris-onnx")
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"modelName": "iris-onnx", "unloaded": ["1"]}
    assert "unloaded" in error_of(
        solo_http.get("/models/iris-onnx"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    again_gone = solo_http.delete("/models/iris-onnx")
    assert "not loaded" in error_of(again_gone, 404, "RESOURCE_DOES_NOT_EXIST")
    after = solo_http.post("/models/iris-onnx/invoke", json={"dataframe_split": {"data": ROWS}})
    error_of(after, 404, "RESOURCE_DOES_NOT_EXIST")
    unknown = solo_http.post("/models", json={"model_name": "no-such-model"})
    assert "no-such-model" in error_of(unknown, 404, "RESOURCE_DOES_NOT_EXIST")
    nameless = solo_http.post("/models", json={"url": url})
    assert "model_name" in error_of(nameless, 400, "BAD_REQUEST")
    assert solo_http.get("/models/no-such-model").status_code == 404
    assert 'protocol="sagemaker"' in solo_http.get("/metrics").text


def test_the_same_guard_answers_in_mlflow_s_shape(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    keys = make_keys(registry_dir)
    server = start_server("--registry", str(registry_dir), "--require-auth")
    document = {"dataframe_split": {"data": ROWS}}
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.get("/ping").status_code == 200
        anonymous = http.post("/invocations", json=document)
        assert "x-api-key" in error_of(anonymous, 401, "UNAUTHENTICATED")
        infer = {"x-api-key": keys["infer"]}
        reply = http.post("/invocations", json=document, headers=infer)
        assert reply.status_code == 200, reply.text
        assert [p["predict"] for p in reply.json()["predictions"]] == [0, 2]
        refused = http.delete("/models/iris", headers=infer)
        assert "admin" in error_of(refused, 403, "PERMISSION_DENIED")
        unloaded = http.delete("/models/iris", headers={"x-api-key": keys["admin"]})
        assert unloaded.status_code == 200, unloaded.text
    assert server.stop() == 0
    assert "unload iris version 1 by admin-key@127.0.0.1: done" in server.log()
