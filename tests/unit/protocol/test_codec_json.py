"""The OIP JSON codec: request decoding (flat, nested, every datatype), errors, responses."""

from __future__ import annotations

import json
import re
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.errors import InternalError, InvalidInput
from modelport.protocol import codec_json
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.types import InferResponse, Tensor

NUMERIC = sorted(DATATYPES - {"BYTES"})
INT_RANGES = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def tensor_json(
    data: Any, shape: list[int], datatype: str = "FP32", **extra: Any
) -> dict[str, Any]:
    return {"name": "x", "shape": shape, "datatype": datatype, "data": data, **extra}


def decode_one(data: Any, shape: list[int], datatype: str = "FP32") -> np.ndarray[Any, Any]:
    request = codec_json.decode_request(body(tensor_json(data, shape, datatype)))
    tensor = request.inputs[0]
    assert tensor.shape == tuple(shape)
    assert tensor.data.shape == tuple(shape)
    return tensor.data


def error(raw: bytes) -> str:
    with pytest.raises(InvalidInput) as info:
        codec_json.decode_request(raw)
    return info.value.message


def element_strategy(datatype: str) -> st.SearchStrategy[Any]:
    if datatype == "BYTES":
        return st.text()
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        # NaN travels as null; infinities have no JSON form at all.
        return hnp.from_dtype(dtype, allow_nan=True, allow_infinity=False)
    return hnp.from_dtype(dtype)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray[Any, Any]]:
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    array = draw(hnp.arrays(numpy_dtype(datatype), shape, elements=element_strategy(datatype)))
    return datatype, array


def expected_input(datatype: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if datatype != "BYTES":
        return array
    out = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        out[index] = value.encode()
    return out


def assert_same(got: np.ndarray[Any, Any], want: np.ndarray[Any, Any]) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want, strict=True)


# Round trips -------------------------------------------------------------------------------


@settings(deadline=None)
@given(case=tensors(), nested=st.booleans())
def test_every_datatype_decodes_flat_and_nested(
    case: tuple[str, np.ndarray[Any, Any]], nested: bool
) -> None:
    datatype, array = case
    data = array.tolist() if nested and array.ndim else array.ravel().tolist()
    got = decode_one(data, list(array.shape), datatype)
    assert_same(got, expected_input(datatype, array))


@settings(deadline=None)
@given(case=tensors())
def test_response_data_decodes_back_as_the_same_tensor(
    case: tuple[str, np.ndarray[Any, Any]],
) -> None:
    datatype, array = case
    data = expected_input(datatype, array)
    response = InferResponse("m", "3", "r1", [Tensor("x", datatype, array.shape, data)])
    document = orjson.loads(codec_json.encode_response(response))
    (output,) = document["outputs"]
    assert output["shape"] == list(array.shape)
    assert len(output["data"]) == array.size  # responses are always flat
    again = codec_json.decode_request(orjson.dumps({"inputs": document["outputs"]}))
    assert_same(again.inputs[0].data, data)


def test_one_row_fp32_request() -> None:
    raw = (
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
    )
    request = codec_json.decode_request(raw)
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("input-0", "FP32", (1, 4))
    assert_same(tensor.data, np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    assert request.outputs is None
    assert request.id is None
    assert request.binary_output is False
    assert request.parameters == {}


def test_memoryview_body_is_accepted() -> None:
    raw = body(tensor_json([1, 2], [2], "INT32"))
    request = codec_json.decode_request(memoryview(raw))
    assert_same(request.inputs[0].data, np.array([1, 2], dtype="<i4"))


def test_nested_and_flat_give_the_same_array() -> None:
    flat = decode_one([1, 2, 3, 4, 5, 6], [2, 3])
    nested = decode_one([[1, 2, 3], [4, 5, 6]], [2, 3])
    assert_same(nested, flat)
    assert nested[1, 0] == 4  # row-major


def test_fp_accepts_integers_and_null_as_nan() -> None:
    got = decode_one([1, None, 2.5], [3], "FP64")
    np.testing.assert_array_equal(got, np.array([1.0, np.nan, 2.5]))


def test_largest_finite_floats_survive_their_shortest_text() -> None:
    assert decode_one([3.4028235e38, -3.4028235e38], [2], "FP32")[0] == np.finfo(np.float32).max
    assert decode_one([65504, -65504], [2], "FP16")[0] == np.finfo(np.float16).max


@pytest.mark.parametrize("datatype", sorted(INT_RANGES))
def test_integer_types_accept_their_whole_range(datatype: str) -> None:
    lo, hi = INT_RANGES[datatype]
    got = decode_one([lo, hi], [2], datatype)
    assert got.tolist() == [lo, hi]


def test_zero_element_tensors() -> None:
    assert decode_one([], [0, 4]).shape == (0, 4)
    assert decode_one([[], []], [2, 0]).shape == (2, 0)
    # Nested lists may stop at an empty level.
    assert decode_one([[], []], [2, 0, 3]).shape == (2, 0, 3)


def test_scalar_shape_takes_a_one_element_list() -> None:
    got = decode_one([7], [], "INT64")
    assert got.shape == ()
    assert int(got) == 7


def test_bytes_are_utf8_encoded() -> None:
    got = decode_one(["héllo", "", "ünï"], [3], "BYTES")
    assert got.dtype == object
    assert got.tolist() == ["héllo".encode(), b"", "ünï".encode()]


# Request-level fields ----------------------------------------------------------------------


def test_unknown_keys_and_parameters_are_ignored_and_id_is_kept() -> None:
    raw = body(
        tensor_json([1.0], [1], parameters={"content_type": "np", "shape_hint": [1]}, extra=1),
        id="req-17",
        model_name="iris",  # the kserve client adds this
        something={"deep": [1, 2]},
        parameters={"sequence_id": 0, "priority": 0, "timeout": 5, "binary_data_output": False},
    )
    request = codec_json.decode_request(raw)
    assert request.id == "req-17"
    assert request.parameters == {"sequence_id": 0, "priority": 0, "timeout": 5}
    assert request.binary_output is False
    assert request.inputs[0].parameters == {"content_type": "np", "shape_hint": [1]}


def test_duplicate_keys_are_fine_last_wins() -> None:
    raw = (
        b'{"id":"a","inputs":[{"name":"x","shape":[1],"datatype":"INT8","datatype":"FP32",'
        b'"data":[1.5]}],"id":"b"}'
    )
    request = codec_json.decode_request(raw)
    assert request.id == "b"
    assert request.inputs[0].datatype == "FP32"


def test_null_optionals_mean_absent() -> None:
    raw = body(tensor_json([1.0], [1], parameters=None), id=None, outputs=None, parameters=None)
    request = codec_json.decode_request(raw)
    assert request.id is None
    assert request.outputs is None
    assert request.parameters == {}
    assert request.inputs[0].parameters == {}


def test_requested_outputs_and_binary_flags() -> None:
    raw = body(
        tensor_json([1.0], [1]),
        outputs=[
            {"name": "a", "parameters": {"binary_data": True, "classification": 0}},
            {"name": "b", "parameters": {"binary_data": False}},
            {"name": "c"},
        ],
        parameters={"binary_data_output": True},
    )
    request = codec_json.decode_request(raw)
    assert request.binary_output is True
    assert request.outputs is not None
    assert [(o.name, o.binary, o.parameters) for o in request.outputs] == [
        ("a", True, {"classification": 0}),
        ("b", False, {}),
        ("c", None, {}),
    ]


def test_empty_outputs_list_means_every_output() -> None:
    assert codec_json.decode_request(body(tensor_json([1.0], [1]), outputs=[])).outputs is None


def test_decode_head_leaves_binary_inputs_pending() -> None:
    raw = body(
        tensor_json([1.0], [1]),
        {"name": "y", "shape": [2], "datatype": "INT16", "parameters": {"binary_data_size": 4}},
    )
    head = codec_json.decode_head(raw)
    assert [(b.index, b.size) for b in head.binary_inputs] == [(1, 4)]
    pending = head.request.inputs[1]
    assert (pending.name, pending.datatype, pending.shape) == ("y", "INT16", (2,))
    assert pending.parameters == {}  # binary_data_size is consumed


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_empty_body(raw: bytes) -> None:
    assert error(raw) == 'the request body is empty; send a JSON object with an "inputs" list'


@pytest.mark.parametrize(
    ("raw", "got"), [(b"[1]", "array"), (b'"x"', "str"), (b"3", "int"), (b"null", "null")]
)
def test_non_object_body(raw: bytes, got: str) -> None:
    assert error(raw) == f'the request body must be a JSON object with an "inputs" list, not {got}'


@pytest.mark.parametrize("raw", [b'{"inputs": [', b"{inputs: []}", b'{"inputs": []} x'])
def test_malformed_json(raw: bytes) -> None:
    assert error(raw).startswith("the request body is not valid JSON: ")


def test_body_that_is_not_utf8() -> None:
    assert error(b'{"id": "\xff", "inputs": []}').startswith("the request body is not valid UTF-8")


def test_missing_inputs() -> None:
    assert error(b'{"outputs": []}') == (
        "invalid inference request: Object missing required field `inputs`"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("shape", "2", "Expected `array`, got `str` - at `$.inputs[0].shape`"),
        ("shape", [2, -1], "Expected `int` >= 0 - at `$.inputs[0].shape[1]`"),
        ("shape", [1.5], "Expected `int`, got `float` - at `$.inputs[0].shape[0]`"),
        ("name", 3, "Expected `str`, got `int` - at `$.inputs[0].name`"),
        ("datatype", None, "Expected `str`, got `null` - at `$.inputs[0].datatype`"),
        ("parameters", [], "Expected `object | null`, got `array` - at `$.inputs[0].parameters`"),
    ],
)
def test_schema_errors_carry_the_path(field: str, value: Any, message: str) -> None:
    item = tensor_json([1.0, 2.0], [2])
    item[field] = value
    assert error(body(item)) == f"invalid inference request: {message}"


@pytest.mark.parametrize("missing", ["name", "shape", "datatype"])
def test_input_missing_a_required_key(missing: str) -> None:
    item = tensor_json([1.0], [1])
    del item[missing]
    assert error(body(item)) == (
        f"invalid inference request: Object missing required field `{missing}` - at `$.inputs[0]`"
    )


def test_too_many_dimensions() -> None:
    message = error(body(tensor_json([1.0], [1] * 33)))
    assert message == (
        "invalid inference request: Expected `array` of length <= 32 - at `$.inputs[0].shape`"
    )


def test_id_must_be_a_string() -> None:
    assert error(body(tensor_json([1.0], [1]), id=5)) == (
        "invalid inference request: Expected `str | null`, got `int` - at `$.id`"
    )


def test_unknown_datatype_lists_the_valid_ones() -> None:
    message = error(body(tensor_json([1.0], [1], "FLOAT32")))
    assert message.startswith("input 'x': unknown datatype 'FLOAT32'; use one of ")
    assert set(message.rpartition("use one of ")[2].split(", ")) == DATATYPES


def test_unknown_datatype_of_a_binary_input_is_reported_too() -> None:
    item = {"name": "x", "shape": [1], "datatype": "BF16", "parameters": {"binary_data_size": 2}}
    assert error(body(item)).startswith("input 'x': unknown datatype 'BF16'; use one of ")


def test_element_count_must_match_the_shape() -> None:
    assert error(body(tensor_json([1.0, 2.0, 3.0], [2, 2]))) == (
        "input 'x': shape [2, 2] needs 4 elements, data has 3"
    )


def test_huge_shape_with_few_elements_is_a_count_error() -> None:
    big = 2**62
    assert error(body(tensor_json([1.0], [big, big]))) == (
        f"input 'x': shape [{big}, {big}] needs {big * big} elements, data has 1"
    )


def test_zero_elements_with_absurd_dimensions() -> None:
    big = 2**62
    assert error(body(tensor_json([], [0, big, big]))) == (
        f"input 'x': shape [0, {big}, {big}] is too large to allocate"
    )


def test_data_must_be_a_list() -> None:
    message = error(body(tensor_json(5, [1])))
    assert message.startswith("input 'x': Expected `array`, got `int` - at `$.inputs[0].data`; ")


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ([[1, 2], [3]], [2, 2], "got ragged lists"),
        ([[1, 2, 3], [4, 5, 6]], [3, 2], "got shape [2, 3]"),
        (
            [[1, 2], 3],
            [2, 2],
            "Expected `array`, got `int` - at `$.inputs[0].data[1]`; FP32 data are JSON numbers "
            "within the FP32 range (null for NaN)",
        ),
        (
            [[[1], [2]], [[3], [4]]],
            [2, 2],
            "Expected `float | null`, got `array` - at `$.inputs[0].data[0][0]`; FP32 data are "
            "JSON numbers within the FP32 range (null for NaN)",
        ),
    ],
)
def test_nested_data_must_follow_the_shape(data: Any, shape: list[int], message: str) -> None:
    assert error(body(tensor_json(data, shape))) == (
        f"input 'x': nested data must follow shape {shape} exactly (or send a flat list): {message}"
    )


@pytest.mark.parametrize(
    ("data", "got"),
    [([["a", "b"], ["c"]], "ragged lists"), ([["a"], ["b"], ["c"]], "shape [3, 1]")],
)
def test_nested_bytes_must_follow_the_shape(data: Any, got: str) -> None:
    assert error(body(tensor_json(data, [2, 2], "BYTES"))) == (
        f"input 'x': nested data must follow shape [2, 2] exactly (or send a flat list): got {got}"
    )


def test_nesting_a_one_dimensional_tensor_is_an_element_error() -> None:
    message = error(body(tensor_json([[1.0]], [1])))
    assert message.startswith("input 'x': Expected `float | null`, got `array` - at ")
    assert "`$.inputs[0].data[0]`" in message


@pytest.mark.parametrize(
    ("datatype", "value", "detail"),
    [
        ("UINT8", 300, "Expected `int` <= 255"),
        ("UINT8", -1, "Expected `int` >= 0"),
        ("INT8", 128, "Expected `int` <= 127"),
        ("INT64", 2**63, f"Expected `int` <= {2**63 - 1}"),
        ("INT32", 1.5, "Expected `int`, got `float`"),
        ("INT32", 2.0, "Expected `int`, got `float`"),
        ("INT16", "1", "Expected `int`, got `str`"),
        ("INT16", True, "Expected `int`, got `bool`"),
        ("BOOL", 1, "Expected `bool`, got `int`"),
        ("BOOL", "true", "Expected `bool`, got `str`"),
        ("FP32", "1.5", "Expected `float | null`, got `str`"),
        ("FP32", True, "Expected `float | null`, got `bool`"),
        ("FP16", 70000.0, "Expected `float` < 65520.0"),
        ("FP32", 1e39, "Expected `float` < 3.4028235677973366e+38"),
        ("BYTES", 5, "Expected `str`, got `int`"),
        ("BYTES", None, "Expected `str`, got `null`"),
    ],
)
def test_element_errors_name_the_position_and_the_rule(
    datatype: str, value: Any, detail: str
) -> None:
    valid = {"BOOL": True, "BYTES": "a"}.get(datatype, 1)
    message = error(body(tensor_json([valid, value], [2], datatype)))
    assert message.startswith(f"input 'x': {detail} - at `$.inputs[0].data[1]`; ")
    assert datatype in message  # the hint names the datatype's rule


def test_uint64_overflow_is_rejected_not_wrapped() -> None:
    # orjson refuses integers beyond 64 bits; the standard library writes them.
    message = error(json.dumps({"inputs": [tensor_json([2**64], [1], "UINT64")]}).encode())
    assert message == f"input 'x': UINT64 data are JSON integers from 0 to {2**64 - 1}"


def test_fp64_out_of_range_number() -> None:
    message = error(b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1e400]}]}')
    assert message.startswith("input 'x': Number out of range - at `$.inputs[0].data[0]`")


def test_bytes_element_that_is_not_utf8() -> None:
    raw = b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["\xff"]}]}'
    message = error(raw)
    assert message.startswith("input 'x': a string is not valid UTF-8")
    assert "binary tensor extension" in message


def test_input_without_data() -> None:
    item = {"name": "x", "shape": [1], "datatype": "FP32"}
    assert error(body(item)) == (
        'input \'x\' has no "data"; give the values in "data" or send them as binary data '
        "with parameters.binary_data_size"
    )


def test_binary_input_without_the_header() -> None:
    item = {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
    assert error(body(item)).startswith(
        "input 'x' declares parameters.binary_data_size but the request has no "
        "Inference-Header-Content-Length header"
    )


def test_input_with_data_and_binary_size() -> None:
    item = tensor_json([1.0], [1], parameters={"binary_data_size": 4})
    assert error(body(item)) == (
        "input 'x' has both \"data\" and parameters.binary_data_size; send its values one way only"
    )


@pytest.mark.parametrize("size", [-1, 1.0, "4", None, True])
def test_binary_data_size_must_be_a_non_negative_integer(size: Any) -> None:
    item = {"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    assert error(body(item)) == (
        "input 'x': parameters.binary_data_size must be a non-negative integer byte count, "
        f"got {size!r}"
    )


@pytest.mark.parametrize("flag", [1, "true", None])
def test_binary_flags_must_be_booleans(flag: Any) -> None:
    raw = body(tensor_json([1.0], [1]), parameters={"binary_data_output": flag})
    assert error(raw) == f"parameters.binary_data_output must be true or false, got {flag!r}"
    output = {"name": "y", "parameters": {"binary_data": flag}}
    raw = body(tensor_json([1.0], [1]), outputs=[output])
    assert error(raw) == f"output 'y': parameters.binary_data must be true or false, got {flag!r}"


# Responses ---------------------------------------------------------------------------------


def iris_response(**parameters: Any) -> InferResponse:
    return InferResponse(
        model_name="iris",
        model_version="2",
        id="req-1",
        outputs=[
            Tensor("predict", "INT64", (2,), np.array([0, 2], dtype=np.int64)),
            Tensor(
                "predict_proba",
                "FP32",
                (2, 3),
                np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7]], dtype=np.float32),
                {"content_type": "np"},
            ),
        ],
        parameters=parameters,
    )


def test_response_layout() -> None:
    raw = codec_json.encode_response(iris_response(**{"modelport.sha256": "ab12"}))
    document = json.loads(raw)
    assert list(document) == ["model_name", "model_version", "id", "parameters", "outputs"]
    assert document["model_name"] == "iris"
    assert document["model_version"] == "2"
    assert document["id"] == "req-1"
    assert document["parameters"] == {"modelport.sha256": "ab12"}
    predict, proba = document["outputs"]
    assert predict == {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert proba["shape"] == [2, 3]
    assert proba["parameters"] == {"content_type": "np"}
    np.testing.assert_array_equal(
        np.array(proba["data"], dtype=np.float32),
        np.array([0.9, 0.05, 0.05, 0.1, 0.2, 0.7], dtype=np.float32),
    )
    # float32 values are written at float32 precision, not widened to float64 noise.
    assert b"0.9," in raw


def test_response_data_is_flat_even_for_non_contiguous_arrays() -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T  # Fortran-ordered view
    response = InferResponse("m", "1", "i", [Tensor("y", "INT32", (3, 2), array)])
    (output,) = json.loads(codec_json.encode_response(response))["outputs"]
    assert output["data"] == [0, 3, 1, 4, 2, 5]


def test_response_casts_to_the_declared_datatype() -> None:
    response = InferResponse("m", "1", "i", [Tensor("y", "FP16", (2,), np.array([0.5, 2.0]))])
    (output,) = json.loads(codec_json.encode_response(response))["outputs"]
    assert output["data"] == [0.5, 2.0]


def test_response_nan_becomes_null() -> None:
    response = InferResponse("m", "1", "i", [Tensor("y", "FP32", (2,), np.array([np.nan, 1.0]))])
    (output,) = json.loads(codec_json.encode_response(response))["outputs"]
    assert output["data"] == [None, 1.0]


def test_response_bytes_as_text() -> None:
    data = np.array([b"caf\xc3\xa9", "plain"], dtype=object)
    response = InferResponse("m", "1", "i", [Tensor("y", "BYTES", (2,), data)])
    (output,) = json.loads(codec_json.encode_response(response))["outputs"]
    assert output["data"] == ["café", "plain"]


def test_response_bytes_that_are_not_utf8_ask_for_binary() -> None:
    data = np.array([b"\xff\xfe"], dtype=object)
    response = InferResponse("m", "1", "i", [Tensor("y", "BYTES", (1,), data)])
    with pytest.raises(InvalidInput, match=re.escape('"binary_data": true')):
        codec_json.encode_response(response)


def test_response_bytes_of_the_wrong_type_is_a_server_fault() -> None:
    data = np.array([1, 2], dtype=object)
    response = InferResponse("m", "1", "i", [Tensor("y", "BYTES", (2,), data)])
    with pytest.raises(InternalError, match="BYTES but holds a int"):
        codec_json.encode_response(response)


def test_response_head_announces_binary_outputs() -> None:
    response = iris_response()
    head = json.loads(codec_json.encode_response_head(response, [None, 24]))
    predict, proba = head["outputs"]
    assert predict["data"] == [0, 2]
    assert "data" not in proba
    assert proba["parameters"] == {"content_type": "np", "binary_data_size": 24}


def test_scalar_shape_needs_exactly_one_element() -> None:
    assert error(body(tensor_json([1, 2], [], "INT8"))) == (
        "input 'x': shape [] needs 1 elements, data has 2"
    )
