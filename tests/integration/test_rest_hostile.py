"""Hostile and odd input found by probing a live server: each was a 500 or a wrong answer.

Every client mistake must be a 4xx JSON error that says what to fix; correct requests must be
answered correctly. The embedded API (`modelport.load(...).predict`) follows the same rules.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelport
from modelport.errors import InvalidInput

pytestmark = pytest.mark.integration

INFER = "/v2/models/iris/infer"
ROW = [5.1, 3.5, 1.4, 0.2]
REQUEST = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> str:
    """The documented error shape with `status` and `code`; returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code, body
    message: str = body["error"]
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


# -- paths -----------------------------------------------------------------------------------

_LONG_VERSION = "9" * 5000  # past int()'s digit limit


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v2/models/iris/versions/{_LONG_VERSION}/infer"),
        ("GET", f"/v2/models/iris/versions/{_LONG_VERSION}"),
        ("GET", f"/v2/models/iris/versions/{_LONG_VERSION}/ready"),
    ],
    ids=["infer", "metadata", "ready"],
)
def test_version_of_thousands_of_digits_is_404(http: httpx.Client, method: str, path: str) -> None:
    response = http.request(method, path, json=REQUEST if method == "POST" else None)
    assert_error(response, 404, "not_found", "iris")


def test_version_with_thousands_of_leading_zeros(http: httpx.Client) -> None:
    response = http.post(f"/v2/models/iris/versions/{'0' * 5000}1/infer", json=REQUEST)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/iris%2Fversions%2F1/infer",
        "/v2/models/iris%2F..%2F/infer",
        "/v2/models/iris%2Finfer",
    ],
)
def test_encoded_slash_stays_in_the_model_name(http: httpx.Client, path: str) -> None:
    # An encoded slash is part of the name; it must not re-route to another endpoint.
    response = http.post(path, json=REQUEST) if path.endswith("/infer") else http.get(path)
    assert_error(response, 400, "invalid_input", "model name")


def test_percent_encoded_letters_still_route(http: httpx.Client) -> None:
    response = http.post("/v2/models/%69ris/versions/%31/infer", json=REQUEST)
    assert response.status_code == 200, response.text
    assert response.json()["model_name"] == "iris"


# -- binary framing header -------------------------------------------------------------------


def _binary_body() -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    return head + np.array([ROW], dtype="<f4").tobytes(), len(head)


@pytest.mark.parametrize("form", ["+{n}", "{a}_{b}", "{n}.0", "0x{x}"])
def test_header_length_must_be_plain_digits(http: httpx.Client, form: str) -> None:
    body, n = _binary_body()
    text = str(n)
    value = form.format(n=n, a=text[:1], b=text[1:], x=format(n, "x"))
    response = http.post(INFER, content=body, headers={"Inference-Header-Content-Length": value})
    assert_error(response, 400, "invalid_input", "Inference-Header-Content-Length")


def test_header_length_with_spaces_around_is_accepted(server: Any) -> None:
    body, n = _binary_body()
    reply = _raw_post(server.url, INFER, body, [("Inference-Header-Content-Length", f"  {n} ")])
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]


def test_repeated_header_length_is_400(server: Any) -> None:
    body, n = _binary_body()
    headers = [
        ("Inference-Header-Content-Length", str(n)),
        ("Inference-Header-Content-Length", "3"),
    ]
    reply = _raw_post(server.url, INFER, body, headers)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    payload = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert payload["code"] == "invalid_input"
    assert "Inference-Header-Content-Length" in payload["error"]


def test_header_length_of_thousands_of_digits_is_400(http: httpx.Client) -> None:
    body, _ = _binary_body()
    headers = {"Inference-Header-Content-Length": "9" * 5000}
    assert_error(http.post(INFER, content=body, headers=headers), 400, "invalid_input")


def _raw_post(url: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    """POST over a bare socket, so that headers go out exactly as given (repeated, spaced)."""
    host, _, port = url.removeprefix("http://").partition(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += ["Connection: close", "", ""]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode() + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- requested outputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "outputs",
    [
        [{"name": "predict"}, {"name": "predict"}],
        # Asked once as JSON and once as binary: no single answer fits both.
        [{"name": "predict"}, {"name": "predict", "parameters": {"binary_data": True}}],
    ],
    ids=["same", "conflicting-encodings"],
)
def test_output_requested_twice_is_400(http: httpx.Client, outputs: list[dict[str, Any]]) -> None:
    response = http.post(INFER, json={**REQUEST, "outputs": outputs})
    assert_error(response, 400, "invalid_input", "predict", "more than once")


# -- repository actions ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [True, 1.0, [1], {"n": 1}])
def test_load_version_of_the_wrong_type_is_400(http: httpx.Client, version: Any) -> None:
    response = http.post(
        "/v2/repository/models/iris/load", json={"parameters": {"version": version}}
    )
    assert_error(response, 400, "invalid_input", "parameters.version")


@pytest.mark.parametrize("version", [1, "1"])
def test_load_version_as_number_or_string(http: httpx.Client, version: Any) -> None:
    response = http.post(
        "/v2/repository/models/iris/load", json={"parameters": {"version": version}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "1"


# -- the embedded API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def greeting(demo_registry: Path) -> Iterator[modelport.Model]:
    model = modelport.load("greeting-language", registry=demo_registry)
    yield model
    model.close()


@pytest.fixture(scope="module")
def iris(demo_registry: Path) -> Iterator[modelport.Model]:
    model = modelport.load("iris", registry=demo_registry)
    yield model
    model.close()


@pytest.mark.parametrize("value", [5, -1, None, 1.5], ids=["int", "negative", "none", "float"])
def test_embedded_bytes_element_must_be_text_or_bytes(
    greeting: modelport.Model, value: Any
) -> None:
    # bytes(5) is five zero bytes: it used to be classified instead of refused.
    with pytest.raises(InvalidInput, match="str or bytes"):
        greeting.predict(np.array(["hello there", value], dtype=object))


def test_embedded_bytes_string_with_lone_surrogate(greeting: modelport.Model) -> None:
    with pytest.raises(InvalidInput, match="Unicode"):
        greeting.predict(["\udcff"])


def test_embedded_text_and_bytes_agree(greeting: modelport.Model) -> None:
    texts = ["good morning", "comment allez-vous", "qué tal", "wie geht's"]
    as_text = greeting.predict(texts)
    as_bytes = greeting.predict(np.array([t.encode() for t in texts], dtype=object))
    assert as_text["language"].tolist() == as_bytes["language"].tolist()
    assert as_text["language"].tolist() == [b"en", b"fr", b"es", b"de"]


def test_embedded_number_too_large_for_the_datatype(iris: modelport.Model) -> None:
    with pytest.raises(InvalidInput, match="FP32"):
        iris.predict([[10**400, 1.0, 1.0, 1.0]])


@pytest.fixture(scope="module")
def original_iris(demo_registry: Path) -> Iterator[modelport.Model]:
    model = modelport.load("iris", registry=demo_registry, compiled=False)
    yield model
    model.close()


def test_embedded_model_refusing_values_is_invalid_input(
    original_iris: modelport.Model, original_http: httpx.Client
) -> None:
    # scikit-learn refuses NaN: the server running the original answers invalid_input, and in
    # process it is the same error. (The compiled form refuses it too: test_rest_errors.)
    with pytest.raises(InvalidInput, match="rejected"):
        original_iris.predict(np.array([[np.nan, 1.0, 1.0, 1.0]], dtype=np.float32))
    request = {"inputs": [{**REQUEST["inputs"][0], "data": [None, 1.0, 1.0, 1.0]}]}
    assert_error(original_http.post(INFER, json=request), 400, "invalid_input", "rejected")


@pytest.mark.parametrize("version", [0, -1, 10**30, "1", True, 1.0])
def test_embedded_load_with_a_bad_version(demo_registry: Path, version: Any) -> None:
    with pytest.raises(InvalidInput, match="version"):
        modelport.load("iris", version=version, registry=demo_registry)


def test_embedded_load_with_a_numpy_version(demo_registry: Path) -> None:
    model = modelport.load("iris", version=np.int64(1), registry=demo_registry)  # type: ignore[arg-type]
    try:
        assert model.version.version == 1
    finally:
        model.close()
