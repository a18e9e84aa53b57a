"""Every OIP datatype numpy can hold, through JSON and binary tensors, round-trips unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from modelport.protocol.datatypes import DATATYPES, numpy_dtype

pytestmark = pytest.mark.integration

KINDS = sorted(DATATYPES)


def extremes(datatype: str) -> np.ndarray[Any, Any]:
    """Two rows of values at the edges of `datatype`, as the numpy dtype that holds it."""
    if datatype == "BYTES":
        return np.array([[b"plain", "ünïcødé".encode()], [b"", b"with \x00 nul"]], dtype=object)
    dtype = numpy_dtype(datatype)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.array([[info.max, info.min], [info.tiny, -0.5]], dtype=dtype)
    iinfo = np.iinfo(dtype)
    return np.array([[iinfo.max, iinfo.min], [0, 1]], dtype=dtype)


@pytest.fixture(scope="module")
def echo(extra_server: Any) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(extra_server.hostport, network_timeout=30.0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def api(extra_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extra_server.url, timeout=30.0) as client:
        yield client


def inputs(binary: bool, skip: frozenset[str] = frozenset()) -> list[triton.InferInput]:
    tensors = []
    for kind in KINDS:
        tensor = triton.InferInput(f"in-{kind.lower()}", [2, 2], kind)
        # JSON cannot hold arbitrary bytes; those go binary in every mode.
        tensor.set_data_from_numpy(extremes(kind), binary_data=binary or kind in skip)
        tensors.append(tensor)
    return tensors


def check(result: Any, kind: str) -> None:
    got = result.as_numpy(f"out-{kind.lower()}")
    want = extremes(kind)
    assert got.shape == want.shape
    if kind == "BYTES":
        assert [v if isinstance(v, bytes) else v.encode() for v in got.ravel()] == list(
            want.ravel()
        )
    else:
        assert got.dtype == want.dtype
        assert got.tolist() == want.tolist()


def test_metadata_lists_every_datatype(echo: triton.InferenceServerClient) -> None:
    metadata = echo.get_model_metadata("echo")
    assert sorted(t["datatype"] for t in metadata["inputs"]) == KINDS
    assert metadata["platform"] == "modelport_python"


def test_every_datatype_binary(echo: triton.InferenceServerClient) -> None:
    result = echo.infer("echo", inputs(binary=True))
    for kind in KINDS:
        check(result, kind)


def test_every_datatype_json(echo: triton.InferenceServerClient) -> None:
    # BYTES with a NUL is legal UTF-8, so everything here goes as JSON.
    outputs = [triton.InferRequestedOutput(f"out-{k.lower()}", binary_data=False) for k in KINDS]
    result = echo.infer("echo", inputs(binary=False), outputs=outputs)
    for out in result.get_response()["outputs"]:
        assert "data" in out
    for kind in KINDS:
        check(result, kind)


def json_body(nested: bool = False, **replace: Any) -> dict[str, Any]:
    """An echo request with every input as JSON data; `replace` sets a first element by type."""
    body: dict[str, Any] = {"inputs": []}
    for kind in KINDS:
        values = extremes(kind)
        if kind == "BYTES":
            values = np.array([[v.decode() for v in row] for row in values], dtype=object)
        data = values.tolist() if nested else values.ravel().tolist()
        if kind in replace:
            data[0] = replace[kind]
        body["inputs"].append(
            {"name": f"in-{kind.lower()}", "shape": [2, 2], "datatype": kind, "data": data}
        )
    return body


def test_bytes_strings_round_trip_as_json(api: httpx.Client) -> None:
    body = json_body() | {"outputs": [{"name": "out-bytes"}]}
    response = api.post("/v2/models/echo/infer", json=body)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["data"] == ["plain", "ünïcødé", "", "with \x00 nul"]


def test_json_values_as_written(api: httpx.Client) -> None:
    response = api.post("/v2/models/echo/infer", json=json_body(nested=True))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert all(o["shape"] == [2, 2] for o in outputs.values())
    assert outputs["out-bool"]["data"] == [True, False, False, True]
    assert outputs["out-uint64"]["data"] == [2**64 - 1, 0, 0, 1]
    assert outputs["out-int64"]["data"] == [2**63 - 1, -(2**63), 0, 1]
    assert outputs["out-int8"]["data"] == [127, -128, 0, 1]
    assert outputs["out-fp64"]["data"][3] == -0.5


def test_non_utf8_bytes_cannot_be_json_output(echo: triton.InferenceServerClient) -> None:
    tensors = inputs(binary=True)
    raw = np.array([[b"\xff\xfe", b"ok"], [b"a", b"b"]], dtype=object)
    tensors[KINDS.index("BYTES")].set_data_from_numpy(raw)
    binary = echo.infer("echo", tensors, outputs=[triton.InferRequestedOutput("out-bytes")])
    assert binary.as_numpy("out-bytes").tolist() == raw.tolist()
    as_json = [triton.InferRequestedOutput("out-bytes", binary_data=False)]
    with pytest.raises(InferenceServerException) as caught:
        echo.infer("echo", tensors, outputs=as_json)
    assert caught.value.status() == "400"
    assert "out-bytes" in caught.value.message()
    assert "binary" in caught.value.message()


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("UINT8", 256),
        ("INT8", -129),
        ("UINT64", -1),
        ("UINT64", 2**64),
        ("INT64", 2**63),
        ("BOOL", 1),
        ("INT32", 1.5),
        ("FP32", "1.0"),
        ("BYTES", 7),
    ],
)
def test_json_values_of_the_wrong_kind_are_400(api: httpx.Client, kind: str, value: Any) -> None:
    response = api.post("/v2/models/echo/infer", json=json_body(**{kind: value}))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"
    assert f"in-{kind.lower()}" in response.json()["error"]
