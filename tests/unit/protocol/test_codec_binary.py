"""The binary tensor data extension: raw layout, JSON-plus-binary requests and responses."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InternalError, InvalidInput, Unsupported
from modelport.protocol import codec_binary
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor


def element_strategy(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BYTES":
        return st.binary(max_size=40)
    # The raw layout carries every value, NaN and infinities included.
    return hnp.from_dtype(numpy_dtype(datatype))


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray[Any, Any]]:
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    array = draw(hnp.arrays(numpy_dtype(datatype), shape, elements=element_strategy(datatype)))
    return datatype, array


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want, strict=True)


def binary_input(
    name: str, datatype: str, array: np.ndarray[Any, Any]
) -> tuple[dict[str, Any], bytes]:
    raw = codec_binary.array_to_raw(array, datatype)
    entry = {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    return entry, raw


def request_body(inputs: list[dict[str, Any]], tail: bytes, **extra: Any) -> tuple[bytes, int]:
    head = orjson.dumps({"inputs": inputs, **extra})
    return head + tail, len(head)


def split(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return json.loads(body), b""
    return json.loads(body[:header_length]), body[header_length:]


def error(body: bytes, header_length: int | None) -> str:
    with pytest.raises(InvalidInput) as info:
        codec_binary.decode_request(body, header_length)
    return info.value.message


# Raw layout --------------------------------------------------------------------------------


@settings(deadline=None)
@given(case=tensors())
def test_raw_round_trip_for_every_datatype(case: tuple[str, np.ndarray[Any, Any]]) -> None:
    datatype, array = case
    raw = codec_binary.array_to_raw(array, datatype)
    got = codec_binary.array_from_raw(raw, datatype, array.shape, "x")
    assert_same(got, array)


@pytest.mark.parametrize(
    ("datatype", "values", "raw"),
    [
        ("BOOL", [True, False], b"\x01\x00"),
        ("UINT16", [1, 258], b"\x01\x00\x02\x01"),
        ("INT32", [-2], b"\xfe\xff\xff\xff"),
        ("FP32", [1.0], b"\x00\x00\x80\x3f"),
        ("FP16", [1.0], b"\x00\x3c"),
        ("FP64", [-2.0], b"\x00\x00\x00\x00\x00\x00\x00\xc0"),
        ("INT64", [1], b"\x01" + b"\x00" * 7),
    ],
)
def test_raw_layout_is_little_endian(datatype: str, values: list[Any], raw: bytes) -> None:
    array = np.array(values, dtype=numpy_dtype(datatype))
    assert codec_binary.array_to_raw(array, datatype) == raw
    # Big-endian arrays are written little-endian too.
    assert codec_binary.array_to_raw(array.astype(array.dtype.newbyteorder(">")), datatype) == raw


def test_raw_is_row_major() -> None:
    array = np.arange(6, dtype="<i2").reshape(2, 3)
    assert codec_binary.array_to_raw(array.T, "INT16") == array.T.copy(order="C").tobytes()
    got = codec_binary.array_from_raw(array.tobytes(), "INT16", (2, 3), "x")
    assert got[1, 0] == 3


def test_raw_bytes_layout() -> None:
    array = np.array([[b"ab", b""], [b"\x00\xff", "é"]], dtype=object)
    raw = codec_binary.array_to_raw(array, "BYTES")
    assert raw == (
        b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\x00\xff"
        b"\x02\x00\x00\x00\xc3\xa9"
    )
    got = codec_binary.array_from_raw(raw, "BYTES", (2, 2), "x")
    assert got.tolist() == [[b"ab", b""], [b"\x00\xff", "é".encode()]]


def test_raw_bytes_from_fixed_width_numpy_strings() -> None:
    raw = codec_binary.array_to_raw(np.array(["a", "bc"]), "BYTES")
    assert raw == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


def test_raw_bool_reads_any_non_zero_byte_as_true() -> None:
    got = codec_binary.array_from_raw(b"\x00\x01\x02\xff", "BOOL", (4,), "x")
    assert got.tolist() == [False, True, True, True]
    assert codec_binary.array_to_raw(got, "BOOL") == b"\x00\x01\x01\x01"


def test_raw_numeric_array_views_the_buffer_read_only() -> None:
    raw = np.arange(4, dtype="<f4").tobytes()
    got = codec_binary.array_from_raw(raw, "FP32", (2, 2), "x")
    assert not got.flags.writeable
    assert got.flags.aligned


def test_raw_unaligned_buffer_gives_an_aligned_copy() -> None:
    buffer = b"\x00" + np.arange(3, dtype="<f8").tobytes()
    got = codec_binary.array_from_raw(memoryview(buffer)[1:], "FP64", (3,), "x")
    assert got.flags.aligned
    assert got.tolist() == [0.0, 1.0, 2.0]


def test_raw_accepts_a_typed_memoryview() -> None:
    view = memoryview(np.arange(3, dtype="<i4"))  # format "i", not bytes
    got = codec_binary.array_from_raw(view, "INT32", (3,), "x")
    assert got.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("datatype", "shape", "given"),
    [("FP32", (2, 2), 12), ("FP32", (2, 2), 20), ("INT8", (3,), 0), ("BOOL", (), 2)],
)
def test_raw_size_must_match_exactly(datatype: str, shape: tuple[int, ...], given: int) -> None:
    expected = int(np.prod(shape)) * numpy_dtype(datatype).itemsize
    with pytest.raises(InvalidInput) as info:
        codec_binary.array_from_raw(b"\x00" * given, datatype, shape, "feat")
    assert info.value.message == (
        f"input 'feat': {datatype} data of shape {list(shape)} is {expected} bytes, "
        f"but {given} bytes were given"
    )


def test_raw_huge_shape_is_a_size_error_without_allocating() -> None:
    big = 2**62
    with pytest.raises(InvalidInput, match=r"is \d+ bytes, but 4 bytes were given"):
        codec_binary.array_from_raw(b"\x00" * 4, "FP32", (big, big), "x")
    with pytest.raises(InvalidInput, match="needs at least"):
        codec_binary.array_from_raw(b"\x00" * 4, "BYTES", (big, big), "x")
    with pytest.raises(InvalidInput, match="too large to allocate"):
        codec_binary.array_from_raw(b"", "FP32", (0, big, big), "x")


@pytest.mark.parametrize("shape", [(2, -1), (-2,)])
def test_raw_negative_dimension(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"input 'x': shape \[.*\] has a negative dimension"):
        codec_binary.array_from_raw(b"", "FP32", shape, "x")


def test_raw_too_many_dimensions() -> None:
    with pytest.raises(InvalidInput, match="33 dimensions, at most 32"):
        codec_binary.array_from_raw(b"\x00", "BOOL", (1,) * 33, "x")


def test_raw_unknown_datatype() -> None:
    with pytest.raises(InvalidInput, match="input 'x': unknown datatype 'BF16'; use one of "):
        codec_binary.array_from_raw(b"\x00\x00", "BF16", (1,), "x")


@pytest.mark.parametrize(
    ("raw", "shape", "message"),
    [
        (
            b"\x01\x00\x00\x00a" + b"\x01\x00\x00",
            (2,),
            "BYTES data of shape [2] ends before element 1 (8 bytes were given; "
            "each element is a 4-byte length and its bytes)",
        ),
        (
            b"\x05\x00\x00\x00abc",
            (1,),
            "BYTES element 0 declares 5 bytes but only 3 remain of the 7 bytes given",
        ),
        (
            b"\x01\x00\x00\x00a\x00\x00\x00\x00xyz",
            (2,),
            "BYTES data of shape [2] (2 elements) is 9 bytes, but 12 bytes were given",
        ),
        (
            b"\x00\x00\x00\x00",
            (2,),
            "BYTES data of shape [2] holds 2 elements, which needs at least 8 bytes of "
            "length prefixes, but 4 bytes were given",
        ),
    ],
)
def test_raw_bytes_errors(raw: bytes, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        codec_binary.array_from_raw(raw, "BYTES", shape, "s")
    assert info.value.message == f"input 's': {message}"


def test_raw_bytes_elements_must_be_bytes_or_str() -> None:
    with pytest.raises(InternalError, match="holds a int"):
        codec_binary.array_to_raw(np.array([b"a", 3], dtype=object), "BYTES")


# Requests ----------------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(cases=st.lists(tensors(), min_size=1, max_size=4), json_first=st.booleans())
def test_binary_request_round_trip(
    cases: list[tuple[str, np.ndarray[Any, Any]]], json_first: bool
) -> None:
    entries, tail = [], b""
    if json_first:
        entries.append({"name": "j", "shape": [2], "datatype": "INT8", "data": [1, -1]})
    for index, (datatype, array) in enumerate(cases):
        entry, raw = binary_input(f"in{index}", datatype, array)
        entries.append(entry)
        tail += raw
    body, header_length = request_body(entries, tail, id="r9")
    request = codec_binary.decode_request(body, header_length)
    assert request.id == "r9"
    tensors_by_name = {t.name: t for t in request.inputs}
    assert list(tensors_by_name) == [e["name"] for e in entries]
    for index, (datatype, array) in enumerate(cases):
        tensor = tensors_by_name[f"in{index}"]
        assert (tensor.datatype, tensor.shape, tensor.parameters) == (datatype, array.shape, {})
        assert_same(tensor.data, array)
    if json_first:
        assert tensors_by_name["j"].data.tolist() == [1, -1]


def test_binary_inputs_mixed_with_json_inputs_fill_in_order() -> None:
    a, raw_a = binary_input("a", "FP32", np.array([1.5, 2.5], dtype="<f4"))
    b, raw_b = binary_input("b", "BYTES", np.array([b"\xffz"], dtype=object))
    middle = {"name": "m", "shape": [1], "datatype": "BOOL", "data": [True]}
    body, header_length = request_body([a, middle, b], raw_a + raw_b)
    request = codec_binary.decode_request(body, header_length)
    assert [t.name for t in request.inputs] == ["a", "m", "b"]
    assert request.inputs[0].data.tolist() == [1.5, 2.5]
    assert request.inputs[1].data.tolist() == [True]
    assert request.inputs[2].data.tolist() == [b"\xffz"]


def test_without_the_header_the_body_is_plain_json() -> None:
    raw = b'{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[7]}]}'
    request = codec_binary.decode_request(raw, None)
    assert request.inputs[0].data.tolist() == [7]


def test_header_with_no_binary_inputs_and_no_tail_is_fine() -> None:
    raw = b'{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[7]}]}'
    request = codec_binary.decode_request(raw, len(raw))
    assert request.inputs[0].data.tolist() == [7]


def test_binary_input_without_the_header() -> None:
    entry, raw = binary_input("x", "FP32", np.zeros(1, dtype="<f4"))
    body, _ = request_body([entry], raw)
    # Without the header the whole body is JSON, so the tail makes it malformed.
    assert error(body, None).startswith("the request body is not valid JSON")
    head, _ = request_body([entry], b"")
    assert "no Inference-Header-Content-Length header" in error(head, None)


@pytest.mark.parametrize("header_length", [-1, 10_000])
def test_header_length_outside_the_body(header_length: int) -> None:
    entry, raw = binary_input("x", "FP32", np.zeros(1, dtype="<f4"))
    body, _ = request_body([entry], raw)
    assert error(body, header_length) == (
        f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} "
        "bytes; it must be the byte length of the JSON part at the start of the body"
    )


def test_header_length_zero_is_the_unsupported_raw_variant() -> None:
    with pytest.raises(Unsupported, match="without a JSON part"):
        codec_binary.decode_request(b"\x00\x00\x80\x3f", 0)


def test_header_length_cutting_the_json() -> None:
    entry, raw = binary_input("x", "FP32", np.zeros(1, dtype="<f4"))
    body, header_length = request_body([entry], raw)
    assert error(body, header_length - 1).startswith("the request body is not valid JSON")
    # A header that swallows binary bytes makes the JSON part malformed as well.
    assert error(body, header_length + 2).startswith("the request body is not valid JSON")


@pytest.mark.parametrize(("declared", "extra"), [(4, b"\x00"), (8, b"")])
def test_binary_sizes_must_add_up_to_the_tail(declared: int, extra: bytes) -> None:
    entry = {"name": "x", "shape": [1], "datatype": "FP32"}
    entry["parameters"] = {"binary_data_size": declared}
    tail = b"\x00" * 4 + extra
    body, header_length = request_body([entry], tail)
    assert error(body, header_length) == (
        f"the inputs declare {declared} bytes of binary data (parameters.binary_data_size) but "
        f"{len(tail)} bytes follow the {header_length}-byte JSON part; "
        "Inference-Header-Content-Length must count the JSON part only"
    )


def test_tail_without_binary_inputs() -> None:
    head = b'{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[7]}]}'
    assert error(head + b"\x01", len(head)).startswith("the inputs declare 0 bytes")


def test_binary_size_that_disagrees_with_the_shape() -> None:
    a = {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
    b = {"name": "b", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
    body, header_length = request_body([a, b], b"\x00" * 12)
    assert error(body, header_length) == (
        "input 'a': FP32 data of shape [2] is 8 bytes, but 4 bytes were given"
    )


@pytest.mark.parametrize("size", [-4, 4.0, "4", None])
def test_binary_size_must_be_a_non_negative_integer(size: Any) -> None:
    entry = {
        "name": "x",
        "shape": [1],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    body, header_length = request_body([entry], b"\x00" * 4)
    assert error(body, header_length) == (
        "input 'x': parameters.binary_data_size must be a non-negative integer byte count, "
        f"got {size!r}"
    )


def test_input_with_both_data_and_binary_size() -> None:
    entry = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    entry["parameters"] = {"binary_data_size": 4}
    body, header_length = request_body([entry], b"\x00" * 4)
    assert error(body, header_length) == (
        "input 'x' has both \"data\" and parameters.binary_data_size; send its values one way only"
    )


def test_input_with_neither_data_nor_binary_size() -> None:
    entry = {"name": "x", "shape": [1], "datatype": "FP32"}
    body, header_length = request_body([entry], b"")
    assert error(body, header_length).startswith("input 'x' has no \"data\"")


# Responses ---------------------------------------------------------------------------------


def response_with(*outputs: Tensor) -> InferResponse:
    return InferResponse("m", "4", "r1", list(outputs), {"modelport.sha256": "ff"})


def request_for(
    outputs: list[RequestedOutput] | None = None, binary_output: bool = False
) -> InferRequest:
    return InferRequest(inputs=[], outputs=outputs, binary_output=binary_output)


PREDICT = Tensor("predict", "INT64", (2,), np.array([0, 2], dtype=np.int64))
PROBA = Tensor("proba", "FP32", (2, 2), np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32))
NAMES = Tensor("names", "BYTES", (2,), np.array([b"\x00\xff", b"ok"], dtype=object), {"k": 1})


@settings(deadline=None, max_examples=60)
@given(cases=st.lists(tensors(), min_size=1, max_size=4))
def test_binary_response_round_trip(cases: list[tuple[str, np.ndarray[Any, Any]]]) -> None:
    outputs = [Tensor(f"o{i}", dt, a.shape, a) for i, (dt, a) in enumerate(cases)]
    body, header_length = codec_binary.encode_response(
        response_with(*outputs), request_for(binary_output=True)
    )
    assert header_length is not None
    head, tail = split(body, header_length)
    offset = 0
    for entry, (datatype, array) in zip(head["outputs"], cases, strict=True):
        assert "data" not in entry
        size = entry["parameters"]["binary_data_size"]
        chunk = tail[offset : offset + size]
        offset += size
        assert_same(codec_binary.array_from_raw(chunk, datatype, tuple(entry["shape"]), "o"), array)
    assert offset == len(tail)


def test_all_json_when_nothing_asks_for_binary() -> None:
    body, header_length = codec_binary.encode_response(
        response_with(PREDICT, PROBA), request_for([RequestedOutput("predict")])
    )
    assert header_length is None
    head, _ = split(body, header_length)
    assert [o["data"] for o in head["outputs"]] == [[0, 2], [0.5, 0.5, 0.25, 0.75]]


def test_request_level_binary_applies_to_outputs_that_did_not_say() -> None:
    outputs = [RequestedOutput("predict", binary=False), RequestedOutput("proba")]
    body, header_length = codec_binary.encode_response(
        response_with(PREDICT, PROBA, NAMES), request_for(outputs, binary_output=True)
    )
    head, tail = split(body, header_length)
    predict, proba, names = head["outputs"]
    assert predict["data"] == [0, 2]
    assert proba["parameters"] == {"binary_data_size": 16}
    # Not listed, so the request-level default applies; own parameters are kept.
    assert names["parameters"] == {"k": 1, "binary_data_size": 12}
    assert tail == PROBA.data.tobytes() + b"\x02\x00\x00\x00\x00\xff\x02\x00\x00\x00ok"
    assert head["id"] == "r1"
    assert head["parameters"] == {"modelport.sha256": "ff"}


def test_per_output_binary_without_request_level_default() -> None:
    body, header_length = codec_binary.encode_response(
        response_with(PREDICT, PROBA), request_for([RequestedOutput("proba", binary=True)])
    )
    head, tail = split(body, header_length)
    assert head["outputs"][0]["data"] == [0, 2]
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 16}
    assert tail == PROBA.data.tobytes()


def test_non_utf8_bytes_need_binary() -> None:
    with pytest.raises(InvalidInput, match="binary_data"):
        codec_binary.encode_response(response_with(NAMES), request_for())
    body, header_length = codec_binary.encode_response(
        response_with(NAMES), request_for([RequestedOutput("names", binary=True)])
    )
    assert header_length is not None
    assert body.endswith(b"\x02\x00\x00\x00\x00\xff\x02\x00\x00\x00ok")


# A real peer: tritonclient's own request builder and response parser -------------------------


def test_tritonclient_binary_request_decodes() -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    first = httpclient.InferInput("input-0", [2, 4], "FP32")
    first.set_data_from_numpy(x)  # binary by default
    second = httpclient.InferInput("text", [2], "BYTES")
    second.set_data_from_numpy(np.array([b"\xff\x00", b"hi"], dtype=object))
    third = httpclient.InferInput("flags", [3], "BOOL")
    third.set_data_from_numpy(np.array([True, False, True]), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [first, second, third],
        outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)],
        request_id="42",
        parameters={"custom": 1},
    )
    request = codec_binary.decode_request(body, json_size)
    assert request.id == "42"
    assert request.parameters == {"custom": 1}
    assert_same(request.inputs[0].data, x)
    assert request.inputs[1].data.tolist() == [b"\xff\x00", b"hi"]
    assert request.inputs[2].data.tolist() == [True, False, True]
    assert request.outputs == [RequestedOutput("predict", binary=False)]


def test_tritonclient_default_request_asks_for_binary_outputs() -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    first = httpclient.InferInput("input-0", [1, 4], "FP32")
    first.set_data_from_numpy(np.ones((1, 4), dtype=np.float32), binary_data=False)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([first])
    request = codec_binary.decode_request(body, json_size)
    assert request.binary_output is True
    assert request.outputs is None


@pytest.mark.parametrize("binary_output", [True, False])
def test_tritonclient_parses_our_response(binary_output: bool) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    names = Tensor("names", "BYTES", (2,), np.array([b"caf\xc3\xa9", b"ok"], dtype=object))
    flags = Tensor("flags", "BOOL", (2,), np.array([True, False]))
    response = response_with(PREDICT, PROBA, names, flags)
    body, header_length = codec_binary.encode_response(
        response, request_for(binary_output=binary_output)
    )
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert_same(result.as_numpy("predict"), PREDICT.data)
    assert_same(result.as_numpy("proba"), PROBA.data)
    assert result.as_numpy("flags").tolist() == [True, False]
    text = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("names").tolist()]
    assert text == [b"caf\xc3\xa9", b"ok"]
    assert result.get_response()["id"] == "r1"
