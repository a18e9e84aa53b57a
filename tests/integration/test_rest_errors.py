"""Malformed requests get a 4xx JSON error that says what was wrong: never a 500, never a 422."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

INFER = "/v2/models/iris/infer"


def iris_input(*, drop: str = "", **overrides: Any) -> dict[str, Any]:
    """One valid iris input tensor, with `overrides` applied and the key `drop` removed."""
    tensor: dict[str, Any] = {
        "name": "input-0",
        "shape": [1, 4],
        "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2],
    }
    tensor.update(overrides)
    tensor.pop(drop, None)
    return tensor


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    """The documented error shape, a status, a code and a message naming every one of `words`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    message = body["error"]
    assert isinstance(message, str)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    # Messages never leak the server's file system.
    assert "/tmp/" not in message
    assert "site-packages" not in message
    return body


# (test id, raw body or JSON value, words the message must contain)
JSON_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("invalid-json", b'{"inputs": [', ("json",)),
    (
        "not-utf8",
        b'{"inputs": [{"name": "\xff\xfe", "shape": [1], "datatype": "FP32", "data": [1]}]}',
        ("utf-8",),
    ),
    ("empty-body", b"", ("empty", "inputs")),
    ("json-array", [1, 2, 3], ("object",)),
    ("missing-inputs", {}, ("inputs",)),
    ("inputs-not-a-list", {"inputs": {"name": "input-0"}}, ("inputs",)),
    ("input-missing-data", {"inputs": [iris_input(drop="data")]}, ("data",)),
    ("input-without-name", {"inputs": [iris_input(drop="name")]}, ("name",)),
    ("input-without-shape", {"inputs": [iris_input(drop="shape")]}, ("shape",)),
    ("wrong-input-name", {"inputs": [iris_input(name="features")]}, ("features", "input-0")),
    ("wrong-datatype", {"inputs": [iris_input(datatype="FP64")]}, ("FP64", "FP32")),
    ("wrong-rank", {"inputs": [iris_input(shape=[4])]}, ("shape", "[4]", "[-1, 4]")),
    ("wrong-features", {"inputs": [iris_input(shape=[2, 2])]}, ("[2, 2]", "[-1, 4]")),
    ("count-mismatch", {"inputs": [iris_input(shape=[2, 4])]}, ("[2, 4]", "8", "4")),
    ("negative-shape", {"inputs": [iris_input(shape=[-1, 4])]}, ("shape", ">= 0")),
    ("unknown-datatype", {"inputs": [iris_input(datatype="FP128")]}, ("FP128",)),
    ("string-in-float-data", {"inputs": [iris_input(data=["a", "b", "c", "d"])]}, ("FP32",)),
    (
        "ragged-nested-data",
        {"inputs": [iris_input(shape=[2, 4], data=[[1, 2, 3, 4], [5]])]},
        ("[2, 4]",),
    ),
    ("duplicate-input", {"inputs": [iris_input(), iris_input()]}, ("input-0", "more than once")),
    (
        "unknown-output",
        {"inputs": [iris_input()], "outputs": [{"name": "scores"}]},
        ("scores", "predict_proba"),
    ),
    ("outputs-not-a-list", {"inputs": [iris_input()], "outputs": "predict"}, ("outputs",)),
    (
        "binary-flag-not-bool",
        {
            "inputs": [iris_input()],
            "outputs": [{"name": "predict", "parameters": {"binary_data": 3}}],
        },
        ("binary_data",),
    ),
    (
        "binary-size-without-header",
        {"inputs": [iris_input(drop="data", parameters={"binary_data_size": 16})]},
        ("binary_data_size",),
    ),
]


@pytest.mark.parametrize(
    ("body", "words"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES]
)
def test_malformed_json_request_is_400(
    http: httpx.Client, body: Any, words: tuple[str, ...]
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert_error(http.post(INFER, content=content), 400, "invalid_input", *words)


def binary_request(
    raw: bytes, *, size: int, shape: list[int] | None = None, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    tensor = iris_input(drop="data", shape=shape or [1, 4], parameters={"binary_data_size": size})
    header = json.dumps({"inputs": [tensor]}).encode()
    length = len(header) if header_length is None else header_length
    return header + raw, {"Inference-Header-Content-Length": str(length)}


_ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("raw", "size", "shape", "extra_length", "words"),
    [
        pytest.param(
            _ROW, 16, None, 1000, ("Inference-Header-Content-Length",), id="header-beyond-body"
        ),
        pytest.param(_ROW, 32, None, 0, ("binary_data_size", "16"), id="size-beyond-body"),
        pytest.param(_ROW + _ROW, 16, None, 0, ("binary_data_size", "32"), id="bytes-left-over"),
        pytest.param(_ROW[:12], 12, None, 0, ("16", "12"), id="size-not-matching-shape"),
        pytest.param(_ROW, -16, None, 0, ("binary_data_size",), id="negative-size"),
        pytest.param(_ROW, 16, [-1, 4], 0, ("shape", ">= 0"), id="negative-shape"),
    ],
)
def test_malformed_binary_request_is_400(
    http: httpx.Client,
    raw: bytes,
    size: int,
    shape: list[int] | None,
    extra_length: int,
    words: tuple[str, ...],
) -> None:
    body, headers = binary_request(raw, size=size, shape=shape)
    if extra_length:
        headers["Inference-Header-Content-Length"] = str(len(body) + extra_length)
    assert_error(http.post(INFER, content=body, headers=headers), 400, "invalid_input", *words)


@pytest.mark.parametrize("value", ["abc", "-5", "1.5"])
def test_bad_header_length_is_400(http: httpx.Client, value: str) -> None:
    body, headers = binary_request(_ROW, size=16)
    headers["Inference-Header-Content-Length"] = value
    assert_error(
        http.post(INFER, content=body, headers=headers),
        400,
        "invalid_input",
        "Inference-Header-Content-Length",
    )


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v2/models/no-such-model/infer", ("no-such-model",)),
        ("/v2/models/iris/versions/9/infer", ("iris", "9")),
        ("/v2/models/iris/versions/abc/infer", ("iris", "abc")),
        ("/v2/models/iris/versions/0/infer", ("iris", "0")),
        ("/v2/models/iris/versions/-1/infer", ("iris", "-1")),
        ("/v2/models/iris/versions/%C2%B2/infer", ("iris",)),
        ("/v2/models/iris/versions/%D9%A1/infer", ("iris",)),
        ("/v2/models/iris/versions/99999999999999999999/infer", ("iris", "99999999999999999999")),
    ],
)
def test_unknown_model_or_version_is_404(
    http: httpx.Client, path: str, words: tuple[str, ...]
) -> None:
    body = {"inputs": [iris_input()]}
    assert_error(http.post(path, json=body), 404, "not_found", *words)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", INFER, "POST"),
        ("PUT", INFER, "POST"),
        ("POST", "/v2/models/iris", "GET"),
        ("DELETE", "/v2/models/iris/ready", "GET"),
        ("POST", "/v2/health/live", "GET"),
        ("POST", "/v2", "GET"),
        ("GET", "/v2/repository/index", "POST"),
        ("GET", "/v2/repository/models/iris/load", "POST"),
    ],
)
def test_wrong_method_is_405(http: httpx.Client, method: str, path: str, allowed: str) -> None:
    response = http.request(method, path)
    assert_error(response, 405, "invalid_input", method, allowed)
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    "path",
    [
        "/nothing",
        "/v1/models",
        "/v2/nothing",
        "/v2/health/dead",
        "/v2/models/iris/infer/extra",
        "/v2/models/iris/versions",
        "/v2/repository/models/iris/reload",
    ],
)
def test_unknown_path_is_404(http: httpx.Client, path: str) -> None:
    assert_error(http.get(path), 404, "not_found", path)


_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            INFER,
            '{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": '
            + _DEEP
            + "}]}",
        ),
        (INFER, '{"parameters": {"a": ' + _DEEP + '}, "inputs": []}'),
        ("/v2/repository/index", '{"ready": ' + _DEEP + "}"),
        ("/v2/repository/models/iris/load", '{"parameters": ' + _DEEP + "}"),
    ],
    ids=["data", "parameters", "index", "load"],
)
def test_deeply_nested_json_is_400(http: httpx.Client, path: str, body: str) -> None:
    assert_error(http.post(path, content=body.encode()), 400, "invalid_input", "depth")


def test_no_500_for_a_model_that_rejects_values(http: httpx.Client) -> None:
    # NaN passes the signature check; scikit-learn refuses it, and so does the compiled form
    # this server runs (it would answer, but not as the original): a client mistake either way.
    response = http.post(INFER, json={"inputs": [iris_input(data=[None, 1.0, 1.0, 1.0])]})
    assert_error(response, 400, "invalid_input", "NaN")


# -- tritonclient carries the server's message --------------------------------------------------


def test_tritonclient_sees_the_servers_message(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input-0", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [tensor])
    assert caught.value.status() == "400"
    assert "[1, 3]" in caught.value.message()
    assert "[-1, 4]" in caught.value.message()


def test_tritonclient_wrong_datatype(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [tensor])
    assert caught.value.status() == "400"
    assert "FP32" in caught.value.message()


def test_tritonclient_unknown_output(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input-0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32), binary_data=False)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [tensor], outputs=[triton.InferRequestedOutput("labels")])
    assert caught.value.status() == "400"
    assert "labels" in caught.value.message()


def test_tritonclient_unknown_model(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input-0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("no-such-model", [tensor])
    assert caught.value.status() == "404"
    assert "no-such-model" in caught.value.message()


# -- body size limit ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    start_server: Callable[..., Any],
    demo_registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    """A server that accepts request bodies of at most 4096 bytes."""
    config = tmp_path_factory.mktemp("limits") / "modelport.toml"
    config.write_text("[serve]\nmax_body_bytes = 4096\n")
    server = start_server(
        "--registry", str(demo_registry), "--config", str(config), "--model", "iris"
    )
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def test_body_within_the_limit_is_served(limited: httpx.Client) -> None:
    response = limited.post(INFER, json={"inputs": [iris_input()]})
    assert response.status_code == 200, response.text


def test_body_over_the_limit_is_413(limited: httpx.Client) -> None:
    rows = 1000
    body = {"inputs": [iris_input(shape=[rows, 4], data=[1.5] * (rows * 4))]}
    assert_error(limited.post(INFER, json=body), 413, "too_large", "4096")


def test_chunked_body_over_the_limit_is_413(limited: httpx.Client) -> None:
    payload = json.dumps({"inputs": [iris_input(shape=[300, 4], data=[1.5] * 1200)]}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    # A generator body goes out chunked, without Content-Length.
    assert_error(limited.post(INFER, content=chunks()), 413, "too_large", "4096")


def test_binary_body_over_the_limit_is_413(limited: httpx.Client) -> None:
    raw = np.zeros((400, 4), dtype="<f4").tobytes()
    body, headers = binary_request(raw, size=len(raw), shape=[400, 4])
    assert_error(limited.post(INFER, content=body, headers=headers), 413, "too_large")


def test_compressed_body_that_inflates_past_the_limit_is_413(limited: httpx.Client) -> None:
    rows = 2000
    payload = json.dumps({"inputs": [iris_input(shape=[rows, 4], data=[1.5] * (rows * 4))]})
    packed = gzip.compress(payload.encode())
    assert len(packed) < 4096  # only the inflated body is over the limit
    response = limited.post(INFER, content=packed, headers={"content-encoding": "gzip"})
    assert_error(response, 413, "too_large", "decompressed")


@pytest.mark.parametrize(
    ("encoding", "body", "words"),
    [
        ("br", b"\x00\x01", ("br", "gzip")),
        ("gzip", b"not gzip at all", ("gzip",)),
    ],
)
def test_bad_content_encoding_is_400(
    http: httpx.Client, encoding: str, body: bytes, words: tuple[str, ...]
) -> None:
    response = http.post(INFER, content=body, headers={"content-encoding": encoding})
    assert_error(response, 400, "invalid_input", *words)
