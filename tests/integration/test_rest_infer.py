"""Inference over REST for every demo model: tritonclient in binary and JSON modes, raw HTTP."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_diabetes, load_iris

import modelport
from modelport.demo import COMPILED_DEMO_MODELS
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry

from ..conftest import assert_close_float32

pytestmark = pytest.mark.integration

DEMO_MODELS = ("iris", "iris-xgboost", "diabetes-lightgbm", "iris-onnx", "greeting-language")

# Greetings of every language (accents included) and two texts the model does not know.
_PHRASES = [
    "hello",
    "bonjour",
    "hola",
    "guten morgen",
    "à bientôt",
    "vielen dank",
    "qué tal",
    "hello anna",
    "good evening",
    "",
]

KINDS = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "original"])
"""Each case against the default server (compiled artifacts) and the --no-compiled one."""

Sample = Callable[[str, int], np.ndarray[Any, Any]]


def _rows(source: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    return np.resize(source, (n, source.shape[1])).astype(np.float32)


@pytest.fixture(scope="module")
def sample() -> Sample:
    """`sample(model, n)`: n rows of that model's single input."""
    iris = load_iris().data
    diabetes = load_diabetes().data

    def make(name: str, n: int) -> np.ndarray[Any, Any]:
        if name == "diabetes-lightgbm":
            return _rows(diabetes, n)
        if name == "greeting-language":
            return np.array([p.encode() for p in np.resize(_PHRASES, n)], dtype=object)
        return _rows(iris, n)

    return make


@pytest.fixture(scope="module")
def both_kinds(demo_registry: Path) -> Iterator[dict[bool, dict[str, modelport.Model]]]:
    """Every demo model loaded in this process, by `compiled=` (True: as the default server)."""
    kinds = {
        compiled: {
            name: modelport.load(name, registry=demo_registry, compiled=compiled)
            for name in DEMO_MODELS
        }
        for compiled in (True, False)
    }
    yield kinds
    for models in kinds.values():
        for model in models.values():
            model.close()


@pytest.fixture(scope="module")
def embedded(both_kinds: dict[bool, dict[str, modelport.Model]]) -> dict[str, modelport.Model]:
    """Every demo model as the default server runs it."""
    return both_kinds[True]


@pytest.fixture(scope="module")
def registered(demo_registry: Path) -> dict[str, ModelVersion]:
    """Each demo model's version, as the registry recorded it."""
    with Registry.open(demo_registry) as registry:
        return {mv.name: mv for mv in registry.latest()}


@pytest.fixture(scope="module")
def digests(registered: dict[str, ModelVersion]) -> dict[str, str]:
    """Artifact digest of each demo model, as the registry recorded it."""
    return {name: mv.digest for name, mv in registered.items()}


def server_client(request: pytest.FixtureRequest, compiled: bool) -> triton.InferenceServerClient:
    """tritonclient for the default server, or (compiled False) the --no-compiled one."""
    fixture = "client" if compiled else "original_client"
    return cast(triton.InferenceServerClient, request.getfixturevalue(fixture))


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    """Equal values, shape and dtype; floats by the float32 rule (compiled graphs compute in it)."""
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    if got.dtype.kind == "f":
        assert_close_float32(got, want)
    elif got.dtype.kind == "O":
        # tritonclient gives JSON-mode BYTES as str, binary-mode BYTES as bytes.
        assert [v.encode() if isinstance(v, str) else v for v in got.ravel()] == list(want.ravel())
    else:
        assert got.tolist() == want.tolist()


def triton_inputs(
    model: modelport.Model, x: np.ndarray[Any, Any], binary: bool
) -> list[triton.InferInput]:
    """The model's single input holding `x`, binary or JSON."""
    (spec,) = model.signature.inputs
    tensor = triton.InferInput(spec.name, list(x.shape), spec.datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("name", DEMO_MODELS)
@KINDS
def test_infer_matches_the_model(
    request: pytest.FixtureRequest,
    both_kinds: dict[bool, dict[str, modelport.Model]],
    registered: dict[str, ModelVersion],
    sample: Sample,
    compiled: bool,
    name: str,
    batch: int,
    binary: bool,
) -> None:
    client = server_client(request, compiled)
    x = sample(name, batch)
    model = both_kinds[compiled][name]
    want = model.predict(x)
    outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in want]
    # Versioned on odd batches, unversioned on even ones: both paths see every model.
    version = "1" if batch % 2 else ""
    result = client.infer(
        name,
        triton_inputs(model, x, binary),
        model_version=version,
        outputs=outputs,
    )
    for output, expected in want.items():
        assert_same(result.as_numpy(output), expected)
    response = result.get_response()
    assert response["model_name"] == name
    assert response["model_version"] == "1"
    mv = registered[name]
    params = response["parameters"]
    assert params["modelport.sha256"] == mv.digest
    if compiled and name in COMPILED_DEMO_MODELS:
        # The compiled artifact answered, and the response names it beside the original.
        assert mv.compiled is not None
        assert params["modelport.compiled_sha256"] == mv.compiled.digest
        assert params["modelport.runtime"] == "onnx"
    else:
        assert "modelport.compiled_sha256" not in params
    assert [o["name"] for o in response["outputs"]] == list(want)
    for out in response["outputs"]:
        # Binary outputs carry their size and no data; JSON outputs the opposite.
        assert ("data" in out) is not binary
        assert ("binary_data_size" in out.get("parameters", {})) is binary


@pytest.mark.parametrize("name", DEMO_MODELS)
@KINDS
def test_tritonclient_defaults_binary_in_and_out(
    request: pytest.FixtureRequest,
    both_kinds: dict[bool, dict[str, modelport.Model]],
    sample: Sample,
    compiled: bool,
    name: str,
) -> None:
    # Plain tritonclient usage: binary inputs, no outputs named -> binary_data_output.
    client = server_client(request, compiled)
    model = both_kinds[compiled][name]
    x = sample(name, 5)
    (spec,) = model.signature.inputs
    tensor = triton.InferInput(spec.name, list(x.shape), spec.datatype)
    tensor.set_data_from_numpy(x)
    result = client.infer(name, [tensor])
    want = model.predict(x)
    for output, expected in want.items():
        assert_same(result.as_numpy(output), expected)


def test_binary_in_json_out(
    client: triton.InferenceServerClient, embedded: dict[str, modelport.Model], sample: Sample
) -> None:
    x = sample("iris", 4)
    outputs = [triton.InferRequestedOutput("predict_proba", binary_data=False)]
    result = client.infer("iris", triton_inputs(embedded["iris"], x, True), outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["predict_proba"]
    assert "data" in response["outputs"][0]
    assert_same(result.as_numpy("predict_proba"), embedded["iris"].predict(x)["predict_proba"])


def test_json_in_binary_out(
    client: triton.InferenceServerClient, embedded: dict[str, modelport.Model], sample: Sample
) -> None:
    x = sample("iris", 4)
    # No outputs named: tritonclient asks for binary_data_output.
    result = client.infer("iris", triton_inputs(embedded["iris"], x, False))
    want = embedded["iris"].predict(x)
    for out in result.get_response()["outputs"]:
        assert "data" not in out
        assert out["parameters"]["binary_data_size"] == want[out["name"]].nbytes
    assert_same(result.as_numpy("predict"), want["predict"])


def test_per_output_binary_overrides_request_default(
    client: triton.InferenceServerClient, embedded: dict[str, modelport.Model], sample: Sample
) -> None:
    x = sample("iris", 2)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=False),
        triton.InferRequestedOutput("predict_proba", binary_data=True),
    ]
    result = client.infer("iris", triton_inputs(embedded["iris"], x, True), outputs=outputs)
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" in by_name["predict"]
    assert "data" not in by_name["predict_proba"]
    want = embedded["iris"].predict(x)
    assert_same(result.as_numpy("predict"), want["predict"])
    assert_same(result.as_numpy("predict_proba"), want["predict_proba"])


@pytest.mark.parametrize("output", ["predict", "predict_proba"])
def test_requested_output_subset(
    client: triton.InferenceServerClient,
    embedded: dict[str, modelport.Model],
    sample: Sample,
    output: str,
) -> None:
    x = sample("iris", 3)
    outputs = [triton.InferRequestedOutput(output, binary_data=False)]
    result = client.infer("iris", triton_inputs(embedded["iris"], x, False), outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == [output]
    assert result.as_numpy("predict" if output == "predict_proba" else "predict_proba") is None
    assert_same(result.as_numpy(output), embedded["iris"].predict(x)[output])


def test_id_is_echoed(
    client: triton.InferenceServerClient, embedded: dict[str, modelport.Model], sample: Sample
) -> None:
    inputs = triton_inputs(embedded["iris"], sample("iris", 1), True)
    result = client.infer("iris", inputs, request_id="my-request-42")
    assert result.get_response()["id"] == "my-request-42"


# -- raw HTTP ----------------------------------------------------------------------------------

_IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def iris_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [v for row in _IRIS_ROWS for v in row],
            }
        ]
    }
    body.update(extra)
    return body


@pytest.fixture(scope="module")
def iris_expected(embedded: dict[str, modelport.Model]) -> dict[str, list[Any]]:
    got = embedded["iris"].predict(np.array(_IRIS_ROWS, dtype=np.float32))
    return {k: v.tolist() for k, v in got.items()}


def check_iris(response: httpx.Response, expected: dict[str, list[Any]]) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["datatype"] == "INT64"
    assert outputs["predict"]["shape"] == [2]
    assert outputs["predict"]["data"] == expected["predict"]
    assert outputs["predict_proba"]["datatype"] == "FP32"
    assert outputs["predict_proba"]["shape"] == [2, 3]
    assert_close_float32(
        np.reshape(outputs["predict_proba"]["data"], (2, 3)), expected["predict_proba"]
    )
    return body


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/octet-stream"],
)
def test_json_body_with_any_content_type(
    http: httpx.Client, iris_expected: dict[str, list[Any]], content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = http.post(
        "/v2/models/iris/infer", content=json.dumps(iris_body()).encode(), headers=headers
    )
    check_iris(response, iris_expected)


def test_nested_data(http: httpx.Client, iris_expected: dict[str, list[Any]]) -> None:
    body = iris_body()
    body["inputs"][0]["data"] = _IRIS_ROWS
    check_iris(http.post("/v2/models/iris/infer", json=body), iris_expected)


def test_integer_json_values_for_float_input(
    http: httpx.Client, embedded: dict[str, modelport.Model]
) -> None:
    body = iris_body()
    body["inputs"][0]["data"] = [5, 3, 1, 0, 7, 3, 5, 2]
    response = http.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    want = embedded["iris"].predict(np.array([[5, 3, 1, 0], [7, 3, 5, 2]], dtype=np.float32))
    assert response.json()["outputs"][0]["data"] == want["predict"].tolist()


def test_unknown_keys_and_parameters_are_ignored(
    http: httpx.Client, iris_expected: dict[str, list[Any]]
) -> None:
    body = iris_body(
        model_name="iris",
        something_new={"nested": [1, 2]},
        parameters={
            "sequence_id": 0,
            "priority": 1,
            "timeout": 10_000_000,  # microseconds: honoured, and generous
            "custom": "value",
            "binary_data_output": False,
        },
        outputs=[
            {"name": "predict", "parameters": {"class_count": 0, "extra": True}},
            {"name": "predict_proba"},
        ],
    )
    body["inputs"][0]["parameters"] = {"content_type": "np", "whatever": 1.5}
    body["inputs"][0]["extra_key"] = "ignored"
    check_iris(http.post("/v2/models/iris/infer", json=body), iris_expected)


def test_provenance_and_request_id(
    http: httpx.Client, digests: dict[str, str], iris_expected: dict[str, list[Any]]
) -> None:
    first = check_iris(http.post("/v2/models/iris/infer", json=iris_body()), iris_expected)
    response = http.post("/v2/models/iris/versions/1/infer", json=iris_body())
    second = check_iris(response, iris_expected)
    for body in (first, second):
        assert body["model_name"] == "iris"
        assert body["model_version"] == "1"
        assert body["parameters"]["modelport.sha256"] == digests["iris"]
        assert body["id"]
    assert second["parameters"]["modelport.request_id"] == response.headers["x-request-id"]
    # Without an id in the request each response gets its own.
    assert first["id"] != second["id"]
    assert (
        first["parameters"]["modelport.request_id"] != second["parameters"]["modelport.request_id"]
    )


def test_client_request_id_header_is_used(http: httpx.Client) -> None:
    response = http.post(
        "/v2/models/iris/infer",
        json=iris_body(id="body-id"),
        headers={"x-request-id": "trace-1234"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-1234"
    body = response.json()
    assert body["id"] == "body-id"
    assert body["parameters"]["modelport.request_id"] == "trace-1234"


def test_bytes_as_json_strings(http: httpx.Client) -> None:
    body = {
        "inputs": [
            {
                "name": "text",
                "shape": [5],
                "datatype": "BYTES",
                "data": ["hello", "bonjour", "buenos días", "guten abend", "hello anna"],
            }
        ],
        "outputs": [{"name": "language"}],
    }
    response = http.post("/v2/models/greeting-language/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "language"
    assert output["datatype"] == "BYTES"
    assert output["shape"] == [5]
    assert output["data"] == ["en", "fr", "es", "de", "unknown"]


def _raw_binary_iris(rows: np.ndarray[Any, Any], binary_output: bool) -> tuple[bytes, int]:
    raw = rows.astype("<f4").tobytes()
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    if binary_output:
        header["parameters"] = {"binary_data_output": True}
    encoded = json.dumps(header).encode()
    return encoded + raw, len(encoded)


@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
def test_raw_binary_request_and_response_layout(
    http: httpx.Client,
    iris_expected: dict[str, list[Any]],
    content_type: str | None,
) -> None:
    body, json_length = _raw_binary_iris(np.array(_IRIS_ROWS, dtype=np.float32), True)
    headers = {"Inference-Header-Content-Length": str(json_length)}
    if content_type:
        headers["Content-Type"] = content_type
    response = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    content = response.content
    header = json.loads(content[:header_length])
    offset = header_length
    decoded = {}
    for out in header["outputs"]:
        assert "data" not in out
        size = out["parameters"]["binary_data_size"]
        dtype = {"INT64": "<i8", "FP32": "<f4"}[out["datatype"]]
        decoded[out["name"]] = np.frombuffer(content[offset : offset + size], dtype=dtype)
        decoded[out["name"]] = decoded[out["name"]].reshape(out["shape"])
        offset += size
    assert offset == len(content)
    assert decoded["predict"].tolist() == iris_expected["predict"]
    assert_close_float32(decoded["predict_proba"], iris_expected["predict_proba"])


def test_raw_binary_bytes_layout(http: httpx.Client) -> None:
    texts = [b"hello", "à bientôt".encode()]
    raw = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "language", "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header).encode()
    response = http.post(
        "/v2/models/greeting-language/infer",
        content=encoded + raw,
        headers={"Inference-Header-Content-Length": str(len(encoded))},
    )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    (out,) = json.loads(response.content[:header_length])["outputs"]
    blob = response.content[header_length:]
    assert out["parameters"]["binary_data_size"] == len(blob)
    labels = []
    while blob:
        (n,) = struct.unpack("<I", blob[:4])
        labels.append(blob[4 : 4 + n])
        blob = blob[4 + n :]
    assert labels == [b"en", b"fr"]


def test_binary_input_json_output_raw(http: httpx.Client) -> None:
    rows = np.array(_IRIS_ROWS, dtype=np.float32)
    raw = rows.tobytes()
    header = {
        "id": "mixed",
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw), "content_type": "np"},
            }
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": False}}],
    }
    encoded = json.dumps(header).encode()
    response = http.post(
        "/v2/models/iris/infer",
        content=encoded + raw,
        headers={"Inference-Header-Content-Length": str(len(encoded))},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    body = response.json()
    assert body["id"] == "mixed"
    assert len(body["outputs"][0]["data"]) == 2


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_empty_batch(http: httpx.Client, embedded: dict[str, modelport.Model], name: str) -> None:
    (spec,) = embedded[name].signature.inputs
    shape = [0, *spec.shape[1:]]
    body = {"inputs": [{"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": []}]}
    response = http.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    for out in response.json()["outputs"]:
        (want,) = (s for s in embedded[name].signature.outputs if s.name == out["name"])
        assert out["shape"] == [0, *want.shape[1:]]
        assert out["data"] == []


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_request(
    client: triton.InferenceServerClient,
    embedded: dict[str, modelport.Model],
    sample: Sample,
    algorithm: str,
) -> None:
    x = sample("iris", 7)
    tensor = triton.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("iris", [tensor], request_compression_algorithm=algorithm)
    assert_same(result.as_numpy("predict"), embedded["iris"].predict(x)["predict"])
