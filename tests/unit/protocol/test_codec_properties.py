"""Hostile input to the JSON and binary request codecs: decode, or refuse as the client's fault.

Whatever bytes arrive, decoding either gives tensors that agree with their declared shape and
datatype, or raises a ModelportError whose kind is a client error; never another exception,
and never memory out of proportion to the body (a tiny body claiming a giant shape is refused
before anything that size is allocated). Memory is measured with tracemalloc, which numpy
reports its buffers to. Hangs are left to the suite's per-test timeout rather than to a
wall-clock deadline here, which a busy machine would trip.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from modelport.errors import ErrorKind, InvalidInput, ModelportError, Unsupported
from modelport.protocol import codec_binary, codec_json
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.signature import RequestValidator, Signature, TensorSpec
from modelport.protocol.types import InferRequest

CLIENT_ERRORS = {ErrorKind.INVALID_INPUT, ErrorKind.TOO_LARGE}
MEMORY_SLACK = 4 * 1024 * 1024
"""Bytes any decode may use regardless of the body (decoders built on first use, ...)."""
MEMORY_PER_BODY_BYTE = 64
"""Most bytes of memory a decode may use per byte of body."""
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DATATYPE_NAMES = sorted(DATATYPES)
HUGE_DIMS = [2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64]
HUGE_SHAPES = [
    [2**31, 2**31],
    [2**63 - 1, 2**63 - 1],
    [2**62, 4],
    [2**40],
    [1] * 31 + [2**40],
]
NEGATIVE_SHAPES = [[-1], [2, -2], [-(2**63)], [3, 0, -1]]
EMPTY_HUGE_SHAPES = [[2, 0, 2**63 - 1], [0, 2**63 - 1, 2**63 - 1], [3, 0, 2**62, 4]]
"""No elements, yet dimensions whose product overflows what numpy can describe."""


@contextmanager
def memory_bounded(body_size: int) -> Iterator[None]:
    """Fail if the block's peak traced memory is out of proportion to `body_size`."""
    tracemalloc.start()
    try:
        yield
    finally:
        # Checked on the way out of a refusal too: allocating first and refusing later is
        # exactly what must not happen.
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        limit = MEMORY_SLACK + MEMORY_PER_BODY_BYTE * body_size
        assert peak <= limit, f"decoding {body_size} bytes peaked at {peak} bytes of memory"


def note_outcome(outcome: str) -> None:
    """Count outcomes in Hypothesis' statistics (--hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(outcome)


def decode_or_refuse(
    decode: Callable[[], InferRequest], body_size: int, header_length: int | None = None
) -> InferRequest | None:
    """The request `decode` gives, or None when it refused with a client error.

    Header length 0 (a body with no JSON part) may also be refused as not offered.
    """
    allowed = CLIENT_ERRORS | ({ErrorKind.UNSUPPORTED} if header_length == 0 else set())
    refusal: ModelportError | None = None
    try:
        with memory_bounded(body_size):
            request = decode()
    except ModelportError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.kind in allowed, (refusal.kind, refusal.message)
        note_outcome(f"refused: {refusal.kind.value}")
        return None
    note_outcome("decoded")
    for tensor in request.inputs:
        assert_consistent(tensor.datatype, tensor.shape, tensor.data)
    return request


def assert_consistent(datatype: str, shape: tuple[int, ...], data: np.ndarray[Any, Any]) -> None:
    assert data.shape == shape
    assert data.dtype == numpy_dtype(datatype)
    if datatype == "BYTES":
        assert all(type(v) is bytes for v in data.ravel().tolist())


# Strategies ---------------------------------------------------------------------------------

small_dims = st.integers(0, 3)
bad_dims = st.sampled_from([-1, -(2**63), *HUGE_DIMS]) | st.integers()
dims = st.one_of(small_dims, small_dims, small_dims, bad_dims)
shapes = st.one_of(
    st.lists(dims, max_size=5),
    st.lists(st.integers(0, 1), min_size=30, max_size=40),
    st.sampled_from(HUGE_SHAPES + NEGATIVE_SHAPES + EMPTY_HUGE_SHAPES),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
# Small value pools make duplicates, matching counts and near-valid data likely.
names = st.sampled_from(["a", "b", "input-0"]) | st.text(max_size=6)
datatypes = st.sampled_from(DATATYPE_NAMES) | st.sampled_from(["BF16", "fp32", "", "STRING"])
junk_elements = st.one_of(
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
    st.sampled_from([1.5, -0.0, 1e308, 70000.0, 2**64, -(2**63) - 1, [], {}]),
    st.text(max_size=3),
)


def elements_for(datatype: str) -> st.SearchStrategy[Any]:
    """Mostly elements `datatype` accepts, now and then one it does not."""
    if datatype not in DATATYPES:
        return junk_elements
    valid: st.SearchStrategy[Any]
    if datatype == "BYTES":
        valid = st.text(max_size=4)
    elif datatype == "BOOL":
        valid = st.booleans()
    else:
        dtype = numpy_dtype(datatype)
        if dtype.kind == "f":
            width = 8 * dtype.itemsize
            valid = st.none() | st.floats(width=width, allow_nan=False, allow_infinity=False)
        else:
            info = np.iinfo(dtype)  # type: ignore[type-var]
            valid = st.integers(int(info.min), int(info.max))
    return st.one_of(valid, valid, valid, junk_elements)


@st.composite
def following(draw: st.DrawFn, shape: list[int], element: st.SearchStrategy[Any]) -> Any:
    """Nested lists that follow `shape` as far as it is small; huge or bad dimensions end it."""
    if not shape:
        return draw(element)
    size = shape[0]
    if not 0 <= size <= 4:
        return []
    return [draw(following(shape[1:], element)) for _ in range(size)]


@st.composite
def tensor_inputs(draw: st.DrawFn, clean: bool) -> Any:
    """One entry of "inputs", near-valid far more often than chance would make it.

    A `clean` one has the right keys with the right types; only its values are hostile.
    """
    shape = draw(shapes)
    datatype = draw(datatypes)
    element = elements_for(datatype)
    item: dict[str, Any] = {"name": draw(names), "shape": shape, "datatype": datatype}
    forms = ["nested", "flat", "binary"] if clean else ["nested", "flat", "binary", "junk", "none"]
    form = draw(st.sampled_from(forms))
    if form == "nested":
        item["data"] = draw(following(shape, element))
    elif form == "flat":
        small = all(0 <= d <= 4 for d in shape) and len(shape) <= 5
        count = math.prod(shape) if small else draw(st.integers(0, 3))
        item["data"] = draw(st.lists(element, min_size=count, max_size=count))
    elif form == "binary":
        item["parameters"] = {"binary_data_size": draw(st.integers(0, 40) | json_scalars)}
    elif form == "junk":
        item["data"] = draw(json_values)
        item["parameters"] = draw(json_values)
    if not clean and draw(st.booleans()):
        # Now and then a required key goes missing or gets the wrong type.
        key = draw(st.sampled_from(sorted(item)))
        if draw(st.booleans()):
            del item[key]
        else:
            item[key] = draw(json_values)
    return item


outputs = st.lists(
    st.fixed_dictionaries(
        {"name": names},
        optional={"parameters": st.fixed_dictionaries({"binary_data": json_scalars})},
    ),
    max_size=3,
)
clean_documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensor_inputs(clean=True), max_size=3)},
    optional={
        "id": st.text(max_size=8),
        "parameters": st.fixed_dictionaries({"binary_data_output": st.booleans()}),
        "outputs": outputs,
    },
)
documents = st.one_of(
    clean_documents,
    clean_documents,
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor_inputs(clean=False), max_size=4)},
        optional={
            "id": st.text(max_size=8) | json_values,
            "parameters": st.fixed_dictionaries({"binary_data_output": json_scalars})
            | st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
            | json_values,
            "outputs": outputs | json_values,
        },
    ),
    json_values,
)


@st.composite
def mangled(draw: st.DrawFn, raw: bytes) -> bytes:
    """`raw`, maybe cut short or with one byte replaced (often by one that is not UTF-8)."""
    choice = draw(st.sampled_from(["keep", "keep", "cut", "byte"]))
    if choice == "cut" and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if choice == "byte" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        byte = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed", b"\x00", b"\\", b'"']))
        return raw[:at] + byte + raw[at + 1 :]
    return raw


def dumps(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    return draw(mangled(dumps(draw(documents), draw(st.booleans()))))


def declared_binary_size(document: Any) -> int:
    """The bytes the document's inputs say follow it (0 when it does not say sensibly)."""
    total = 0
    items = document.get("inputs") if isinstance(document, dict) else None
    for item in items if isinstance(items, list) else []:
        params = item.get("parameters") if isinstance(item, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if type(size) is int and size > 0:
            total += size
    return total


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A JSON part, a tail of bytes, and a header length that may or may not fit them."""
    document = draw(documents)
    head = draw(mangled(dumps(document, draw(st.booleans()))))
    declared = declared_binary_size(document)
    fitting = st.binary(min_size=declared, max_size=declared) if declared <= 256 else st.nothing()
    tail = draw(fitting | st.binary(max_size=64))
    body = head + tail
    length = draw(
        st.one_of(
            st.just(len(head)),
            st.just(len(head)),
            st.integers(-2, len(body) + 2),
            st.sampled_from([None, 0, len(body), 2**63, 2**64]),
        )
    )
    return body, length


# Properties ---------------------------------------------------------------------------------


@HOSTILE
@given(body=json_bodies())
@example(body=b"[" * 100_000)
@example(body=b'{"inputs": ' + b"[" * 100_000)
@example(body=b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
@example(body=b'{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["\xff"]}]}')
@example(
    body=b'{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}'
)
@example(body=b'{"id": "\\udfff", "inputs": []}')
def test_json_bodies_decode_or_are_refused(body: bytes) -> None:
    decode_or_refuse(lambda: codec_json.decode_request(body), len(body))


@HOSTILE
@given(case=binary_bodies())
def test_binary_bodies_decode_or_are_refused(case: tuple[bytes, int | None]) -> None:
    body, length = case
    decode_or_refuse(lambda: codec_binary.decode_request(body, length), len(body), length)


@HOSTILE
@given(raw=st.binary(max_size=256), length=st.none() | st.integers(-1, 300))
def test_arbitrary_bytes_decode_or_are_refused(raw: bytes, length: int | None) -> None:
    decode_or_refuse(lambda: codec_binary.decode_request(raw, length), len(raw), length)


@HOSTILE
@given(raw=st.binary(max_size=128), datatype=datatypes, shape=shapes)
def test_raw_tensor_bytes_decode_or_are_refused(
    raw: bytes, datatype: str, shape: list[int]
) -> None:
    try:
        with memory_bounded(len(raw)):
            array = codec_binary.array_from_raw(raw, datatype, tuple(shape), "x")
    except InvalidInput:
        return
    assert_consistent(datatype, tuple(shape), array)


# The cases the issue names, one by one ------------------------------------------------------


def one_input(datatype: str, shape: list[int], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, **fields}]})


@pytest.mark.parametrize("datatype", DATATYPE_NAMES)
@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("data", [[], [0], [[0]]], ids=["empty", "one", "nested"])
def test_giant_json_shape_is_refused_before_allocating(
    datatype: str, shape: list[int], data: list[Any]
) -> None:
    body = one_input(datatype, shape, data=data)
    with pytest.raises(InvalidInput), memory_bounded(len(body)):
        codec_json.decode_request(body)


@pytest.mark.parametrize("datatype", DATATYPE_NAMES)
@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("size", [0, 4, 16])
def test_giant_binary_shape_is_refused_before_allocating(
    datatype: str, shape: list[int], size: int
) -> None:
    head = one_input(datatype, shape, parameters={"binary_data_size": size})
    body = head + b"\x01" * size
    with pytest.raises(InvalidInput), memory_bounded(len(body)):
        codec_binary.decode_request(body, len(head))


@pytest.mark.parametrize("datatype", DATATYPE_NAMES)
@pytest.mark.parametrize("shape", EMPTY_HUGE_SHAPES, ids=str)
def test_empty_nesting_claiming_giant_dimensions_is_refused(
    datatype: str, shape: list[int]
) -> None:
    # Was a 500: [[], []] passed the nested-shape check for [2, 0, 2**63 - 1] and numpy's
    # reshape then raised ValueError ("array is too big") out of the codec.
    data: list[Any] = [[] for _ in range(shape[0])]
    body = one_input(datatype, shape, data=data)
    with pytest.raises(InvalidInput, match="too large to allocate"):
        codec_json.decode_request(body)


@pytest.mark.parametrize("shape", NEGATIVE_SHAPES, ids=str)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_negative_dimensions_are_refused(shape: list[int], binary: bool) -> None:
    if binary:
        head = one_input("FP32", shape, parameters={"binary_data_size": 4})
        with pytest.raises(InvalidInput, match="shape"):
            codec_binary.decode_request(head + b"\0" * 4, len(head))
    else:
        with pytest.raises(InvalidInput, match="shape"):
            codec_json.decode_request(one_input("FP32", shape, data=[0.0]))


def binary_request() -> tuple[bytes, int]:
    head = one_input("INT32", [2], parameters={"binary_data_size": 8})
    return head + np.array([7, -7], dtype="<i4").tobytes(), len(head)


def test_binary_request_decodes() -> None:
    # The well-formed request the framing cases below break.
    body, length = binary_request()
    request = codec_binary.decode_request(body, length)
    assert request.inputs[0].data.tolist() == [7, -7]


@pytest.mark.parametrize(
    "delta", [1, 8, 9, 2**32], ids=["one-past-json", "whole-body", "past-body", "far-past-body"]
)
def test_header_length_past_the_json_part_is_refused(delta: int) -> None:
    body, length = binary_request()
    with pytest.raises(InvalidInput, match=r"Inference-Header-Content-Length|binary|JSON"):
        codec_binary.decode_request(body, length + delta)


@pytest.mark.parametrize("delta", [1, 5], ids=["one-short", "five-short"])
def test_header_length_inside_the_json_part_is_refused(delta: int) -> None:
    body, length = binary_request()
    with pytest.raises(InvalidInput, match="JSON"):
        codec_binary.decode_request(body, length - delta)


def test_header_length_zero_is_unsupported_not_a_crash() -> None:
    body, _ = binary_request()
    with pytest.raises(Unsupported):
        codec_binary.decode_request(body, 0)


def test_negative_header_length_is_refused() -> None:
    body, _ = binary_request()
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        codec_binary.decode_request(body, -1)


@pytest.mark.parametrize(
    ("tail", "shape"),
    [
        (b"\x05\x00\x00\x00ab", [1]),  # an element longer than what follows
        (b"\xff\xff\xff\xff", [1]),  # a 4 GiB element in four bytes
        (b"\x00\x00", [1]),  # a cut length prefix
        (b"\x00\x00\x00\x00" * 2, [1]),  # bytes left over
    ],
)
def test_malformed_binary_bytes_elements_are_refused(tail: bytes, shape: list[int]) -> None:
    head = one_input("BYTES", shape, parameters={"binary_data_size": len(tail)})
    with pytest.raises(InvalidInput, match="BYTES"):
        codec_binary.decode_request(head + tail, len(head))


def test_invalid_utf8_travels_as_binary_bytes() -> None:
    # JSON cannot carry such bytes (refused above); the binary extension carries them intact.
    payload = b"\xff\xfe\xed\xa0\x80"
    tail = len(payload).to_bytes(4, "little") + payload
    head = one_input("BYTES", [1], parameters={"binary_data_size": len(tail)})
    request = codec_binary.decode_request(head + tail, len(head))
    assert request.inputs[0].data.tolist() == [payload]


@pytest.mark.parametrize(
    "element", [b'"\xff"', b'"\xed\xa0\x80"', b'"\\ud800"', b'"\\udc00x"'], ids=str
)
def test_invalid_utf8_in_json_bytes_is_refused(element: bytes) -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [%s]}]}' % element
    with pytest.raises(InvalidInput):
        codec_json.decode_request(body)


@pytest.mark.parametrize("depth", [64, 10_000, 200_000])
def test_deeply_nested_data_is_refused(depth: int) -> None:
    body = one_input("FP32", [1, 1], data=[]).replace(b"[]", b"[" * depth + b"]" * depth, 1)
    with pytest.raises(InvalidInput):
        codec_json.decode_request(body)


def test_duplicate_input_names_decode_and_the_validator_refuses_them() -> None:
    item = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    request = codec_json.decode_request(orjson.dumps({"inputs": [item, item]}))
    assert [t.name for t in request.inputs] == ["x", "x"]
    validator = RequestValidator(
        Signature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1,)),))
    )
    with pytest.raises(InvalidInput, match="more than once"):
        validator.inputs(request)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_huge_number_of_inputs_costs_memory_in_proportion(binary: bool) -> None:
    count = 20_000
    if binary:
        item = {
            "name": "x",
            "shape": [1],
            "datatype": "INT8",
            "parameters": {"binary_data_size": 1},
        }
        head = orjson.dumps({"inputs": [item] * count})
        body, length = head + b"\x07" * count, len(head)
    else:
        item = {"name": "x", "shape": [1], "datatype": "INT8", "data": [7]}
        body, length = orjson.dumps({"inputs": [item] * count}), None
    request = decode_or_refuse(lambda: codec_binary.decode_request(body, length), len(body))
    assert request is not None
    assert len(request.inputs) == count
    assert all(t.data.tolist() == [7] for t in request.inputs)


def allocate_then_refuse() -> None:
    """What a naive decoder does with a giant shape: allocate first, find the problem later."""
    buffer = np.ones(MEMORY_SLACK + 1024 * MEMORY_PER_BODY_BYTE, dtype=np.uint8)
    raise InvalidInput(f"refused after allocating {buffer.nbytes} bytes")


def test_memory_check_catches_an_allocation_out_of_proportion() -> None:
    # The memory_bounded check itself, on both ways out of the block.
    with pytest.raises(AssertionError, match="peaked"), memory_bounded(16):
        np.ones(MEMORY_SLACK + 1024 * MEMORY_PER_BODY_BYTE, dtype=np.uint8)
    with pytest.raises(AssertionError, match="peaked"), memory_bounded(16):
        allocate_then_refuse()
    with pytest.raises(AssertionError, match="peaked"):
        decode_or_refuse(allocate_then_refuse, 16)
