"""TensorFlow Serving's REST API (and KServe v1) against a real server with the demo models.

The requests follow the examples of TF Serving's REST API documentation (row format, columnar
format, `{"b64": ...}` for text), aimed at the demo's iris (four float features, two outputs)
and greeting-language (text in, text out); then the documented error shape for bad input.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.inference_log.location import open_store
from modelport.registry.store import Registry

from .conftest import ServerFactory, ServerProcess, eventually
from .test_observability import samples, total

pytestmark = pytest.mark.integration

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
TOLERANCE = 1e-6


def _ok(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, dict)
    return body


def _error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body  # TF Serving's error shape
    message: str = body["error"]
    for word in words:
        assert word in message, message
    return message


def test_model_status_lists_each_loaded_version(http: httpx.Client) -> None:
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert _ok(http.get("/v1/models/iris")) == expected
    assert _ok(http.get("/v1/models/iris/versions/1")) == expected


def test_metadata_describes_the_signature_as_a_signature_def(http: httpx.Client) -> None:
    body = _ok(http.get("/v1/models/iris/metadata"))
    assert body["model_spec"] == {"name": "iris", "signature_name": "", "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]  # type: ignore[index]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"] == {
        "input-0": {
            "dtype": "DT_FLOAT",
            "tensor_shape": {
                "dim": [{"size": "-1", "name": ""}, {"size": "4", "name": ""}],
                "unknown_rank": False,
            },
            "name": "input-0",
        }
    }
    assert sig["outputs"]["predict"]["dtype"] == "DT_INT64"
    text = _ok(http.get("/v1/models/greeting-language/versions/1/metadata"))
    text_sig = text["metadata"]["signature_def"]["signature_def"]["serving_default"]  # type: ignore[index]
    assert text_sig["inputs"]["text"]["dtype"] == "DT_STRING"


def test_row_format_answers_one_prediction_object_per_instance(http: httpx.Client) -> None:
    response = http.post("/v1/models/iris:predict", json={"instances": [SETOSA, VIRGINICA]})
    body = _ok(response)
    assert response.headers["x-model-version"] == "1"
    assert len(response.headers["x-model-sha256"]) == 64
    assert response.headers["x-request-id"]
    rows = body["predictions"]
    assert isinstance(rows, list)
    assert [r["predict"] for r in rows] == [0, 2]
    for row in rows:
        assert set(row) == {"predict", "predict_proba"}
        assert sum(row["predict_proba"]) == pytest.approx(1.0, abs=TOLERANCE)
    # The same rows as objects naming the input, and with the signature named.
    named = http.post(
        "/v1/models/iris/versions/1:predict",
        json={
            "signature_name": "serving_default",
            "instances": [{"input-0": SETOSA}, {"input-0": VIRGINICA}],
        },
    )
    assert _ok(named)["predictions"] == rows


def test_csv_and_avro_bodies_on_predict(http: httpx.Client) -> None:
    import io

    import fastavro

    features = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    csv = f"{','.join(features)}\n{','.join(map(str, SETOSA))}\n{','.join(map(str, VIRGINICA))}\n"
    answer = http.post("/v1/models/iris:predict", content=csv, headers={"content-type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert [line.split(",")[0] for line in answer.text.splitlines()] == ["0", "2"]
    assert len(answer.headers["x-model-sha256"]) == 64
    schema = {
        "type": "record",
        "name": "Flower",
        "fields": [{"name": f, "type": "float"} for f in features],
    }
    out = io.BytesIO()
    rows = [dict(zip(features, row, strict=True)) for row in (SETOSA, VIRGINICA)]
    fastavro.writer(out, fastavro.parse_schema(schema), rows)
    avro = {"content-type": "application/avro"}
    as_json = http.post("/v1/models/iris:predict", content=out.getvalue(), headers=avro)
    assert [p["predict"] for p in _ok(as_json)["predictions"]] == [0, 2]
    as_avro = http.post(
        "/v1/models/iris:predict",
        content=out.getvalue(),
        headers={**avro, "accept": "application/avro"},
    )
    assert as_avro.status_code == 200, as_avro.text
    assert [r["predict"] for r in fastavro.reader(io.BytesIO(as_avro.content))] == [0, 2]
    # A CSV row of the wrong length is the client's mistake, in TF Serving's error shape.
    short = http.post(
        "/v1/models/iris:predict", content="5.1,3.5\n", headers={"content-type": "text/csv"}
    )
    _error(short, 400, "row")


def test_columnar_format_answers_outputs_by_name(http: httpx.Client) -> None:
    rows = _ok(http.post("/v1/models/iris:predict", json={"instances": [SETOSA, VIRGINICA]}))
    bare = _ok(http.post("/v1/models/iris:predict", json={"inputs": [SETOSA, VIRGINICA]}))
    named = _ok(
        http.post("/v1/models/iris:predict", json={"inputs": {"input-0": [SETOSA, VIRGINICA]}})
    )
    assert bare == named
    outputs = bare["outputs"]
    assert isinstance(outputs, dict)
    assert outputs["predict"] == [0, 2]
    expected = [r["predict_proba"] for r in rows["predictions"]]  # type: ignore[union-attr]
    np.testing.assert_allclose(outputs["predict_proba"], expected, atol=TOLERANCE)


def test_text_instances_plain_and_base64(http: httpx.Client) -> None:
    hola = base64.b64encode(b"hola").decode()
    body = _ok(
        http.post(
            "/v1/models/greeting-language:predict",
            json={"instances": ["hello", {"b64": hola}, "bonjour", "hello anna"]},
        )
    )
    # A single output: TF Serving answers the bare values, one per instance.
    assert body == {"predictions": ["en", "es", "fr", "unknown"]}
    objects = _ok(
        http.post(
            "/v1/models/greeting-language:predict",
            json={"instances": [{"text": {"b64": hola}}, {"text": "hallo"}]},
        )
    )
    assert objects == {"predictions": ["es", "de"]}
    columns = _ok(
        http.post("/v1/models/greeting-language:predict", json={"inputs": {"text": ["hola"]}})
    )
    assert columns == {"outputs": ["es"]}


def test_kserve_v1_request_body(http: httpx.Client) -> None:
    """KServe v1's documented body: `{"instances": [...]}` in, `{"predictions": [...]}` out."""
    body = _ok(http.post("/v1/models/greeting-language:predict", json={"instances": ["hola"]}))
    assert body == {"predictions": ["es"]}


def test_curl_form_content_type_is_read_as_json(http: httpx.Client) -> None:
    """TF Serving's curl examples send `-d '{...}'`, which curl labels a form."""
    response = http.post(
        "/v1/models/iris:predict",
        content=b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert _ok(response)["predictions"][0]["predict"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [SETOSA[:3], VIRGINICA]}, ["record 0", "4 per record"]),
        ({"instances": [SETOSA], "inputs": [SETOSA]}, ["not both"]),
        ({"instances": []}, ["at least one"]),
        ({"instances": SETOSA[0]}, ['"instances" must be a list']),
        ({"instances": [SETOSA, {"input-0": VIRGINICA}]}, ["every instance is an object"]),
        ({"instances": [["a", 1, 2, 3]]}, ["not a number"]),
        ({"inputs": {"input-0": [SETOSA], "extra": [1, 2]}}, ["batch"]),
        ({"signature_name": "predict", "instances": [SETOSA]}, ["serving_default"]),
        ({"rows": [SETOSA]}, ['"instances"', '"inputs"']),
    ],
    ids=[
        "ragged",
        "both-formats",
        "empty",
        "not-a-list",
        "mixed-instances",
        "text-for-float",
        "columns-differ",
        "unknown-signature",
        "neither-format",
    ],
)
def test_bad_predict_bodies_are_400_with_a_message(
    http: httpx.Client, body: dict[str, object], words: list[str]
) -> None:
    _error(http.post("/v1/models/iris:predict", json=body), 400, *words)


def test_other_errors_in_tf_serving_shape(http: httpx.Client) -> None:
    text = "/v1/models/greeting-language:predict"
    _error(http.post(text, json={"instances": [{"b64": "not base64!"}]}), 400, "base64")
    _error(http.post("/v1/models/iris:predict", content=b"{nope"), 400, "not valid JSON")
    _error(http.post("/v1/models/unknown:predict", json={"instances": [SETOSA]}), 404, "unknown")
    _error(http.get("/v1/models/iris/versions/7"), 404)
    _error(http.get("/v1/models/iris/labels/nothing"), 404, "nothing")
    _error(http.post("/v1/models/iris/versions/one:predict", json={}), 400, "labels/one")
    _error(http.post("/v1/models/iris:frobnicate", json={}), 404, ":predict")
    _error(
        http.post(
            "/v1/models/iris:predict", content=b"a,b", headers={"content-type": "text/x-unknown"}
        ),
        501,
        "application/json",
    )
    for verb in ("classify", "regress", "explain"):
        _error(http.post(f"/v1/models/iris:{verb}", json={}), 501, f":{verb}", ":predict")


def test_labels_are_registry_aliases_and_requests_are_counted_and_logged(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    with Registry.open(registry_dir) as registry:
        registry.set_alias("iris", "stable", 1, actor="test")
    server: ServerProcess = start_server("--registry", str(registry_dir))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        status = _ok(http.get("/v1/models/iris/labels/stable"))
        assert status["model_version_status"][0]["version"] == "1"  # type: ignore[index]
        meta = _ok(http.get("/v1/models/iris/labels/stable/metadata"))
        assert meta["model_spec"]["version"] == "1"  # type: ignore[index]
        ok = http.post("/v1/models/iris/labels/stable:predict", json={"instances": [SETOSA]})
        assert _ok(ok)["predictions"][0]["predict"] == 0  # type: ignore[index]
        _error(http.post("/v1/models/iris:predict", json={"instances": [SETOSA[:2]]}), 400)

        def counted() -> bool:
            found = samples(http)
            return (
                total(found, "modelport_requests_total", protocol="tfserving", endpoint="infer")
                == 2
            )

        # Polled: the metrics snapshot is published a moment after the answer.
        eventually(counted, "both predict requests counted under protocol tfserving")
        found = samples(http)
        assert (
            total(
                found,
                "modelport_requests_total",
                protocol="tfserving",
                endpoint="infer",
                code="200",
            )
            == 1
        )
    assert server.stop() == 0
    with open_store(str(registry_dir / "inference-log.sqlite")) as store:
        records = store.read(model="iris")
    # The refused body never reached the model (it did not map onto its input), as an OIP
    # body that is not JSON does not: the log holds the one inference.
    assert len(records) == 1
    good = [r for r in records if r.request_id == ok.headers["x-request-id"]]
    assert len(good) == 1
    assert good[0].protocol == "tfserving"
    np.testing.assert_array_equal(
        np.asarray(good[0].inputs["input-0"], np.float32), np.float32([SETOSA])
    )


def test_a_wrong_method_is_405_in_tf_serving_shape(http: httpx.Client) -> None:
    response = http.post("/v1/models/iris/metadata", json={})
    assert response.headers["allow"] == "GET"
    _error(response, 405, "GET")
