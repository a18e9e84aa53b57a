"""Hostile ModelInferRequest messages: grpc_codec decodes them or refuses them as client errors.

Messages are built field by field (typed contents, raw contents, both, neither; shapes that
are negative, giant or of too many dimensions; datatypes that do not exist) and also parsed
from arbitrary bytes. Decoding either gives tensors that agree with their declared shape and
datatype, or raises a ModelportError of a client-error kind, using memory in proportion to
the message (measured with tracemalloc, which numpy reports its buffers to).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from modelport.errors import ErrorKind, InvalidInput, ModelportError
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.types import InferRequest
from modelport.transports import grpc_codec
from modelport.transports.grpc_gen import inference_pb2 as pb

# Shared memory is a feature refused as not offered (UNIMPLEMENTED), not a client mistake.
ALLOWED = {ErrorKind.INVALID_INPUT, ErrorKind.TOO_LARGE, ErrorKind.UNSUPPORTED}
MEMORY_SLACK = 4 * 1024 * 1024
MEMORY_PER_MESSAGE_BYTE = 64
HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = (-(2**63), 2**63 - 1)
HUGE_SHAPES = [[2**31, 2**31], [2**63 - 1, 2**63 - 1], [2**62, 4], [2**40], [1] * 31 + [2**40]]
EMPTY_HUGE_SHAPES = [[2, 0, 2**63 - 1], [0, 2**63 - 1, 2**63 - 1]]
NEGATIVE_SHAPES = [[-1], [2, -2], [-(2**63)]]
FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(*INT64),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@contextmanager
def memory_bounded(message_size: int) -> Iterator[None]:
    """Fail if the block's peak traced memory is out of proportion to `message_size`."""
    tracemalloc.start()
    try:
        yield
    finally:
        # Checked on the way out of a refusal too: allocating first and refusing later is
        # exactly what must not happen.
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        limit = MEMORY_SLACK + MEMORY_PER_MESSAGE_BYTE * message_size
        assert peak <= limit, f"decoding {message_size} bytes peaked at {peak} bytes of memory"


def decode_or_refuse(message: pb.ModelInferRequest) -> InferRequest | None:
    """The decoded request, or None when grpc_codec refused it with an allowed error."""
    refusal: ModelportError | None = None
    try:
        with memory_bounded(message.ByteSize()):
            request = grpc_codec.decode_request(message)
    except ModelportError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.kind in ALLOWED, (refusal.kind, refusal.message)
        event(f"refused: {refusal.kind.value}")
        return None
    event("decoded")
    for tensor in request.inputs:
        assert tensor.data.shape == tensor.shape
        assert tensor.data.dtype == numpy_dtype(tensor.datatype)
        if tensor.datatype == "BYTES":
            assert all(type(v) is bytes for v in tensor.data.ravel().tolist())
    return request


# Strategies ---------------------------------------------------------------------------------

small_dims = st.integers(0, 3)
dims = st.one_of(small_dims, small_dims, small_dims, st.integers(*INT64))
shapes = st.one_of(
    st.lists(dims, max_size=4),
    st.lists(st.integers(0, 1), min_size=30, max_size=40),
    st.sampled_from(HUGE_SHAPES + EMPTY_HUGE_SHAPES + NEGATIVE_SHAPES),
)
datatypes = st.sampled_from(sorted(DATATYPES)) | st.sampled_from(["BF16", "int32", ""])
names = st.sampled_from(["a", "b"]) | st.text(max_size=4)
parameter_values = st.one_of(
    st.booleans().map(lambda v: pb.InferParameter(bool_param=v)),
    st.integers(*INT64).map(lambda v: pb.InferParameter(int64_param=v)),
    st.text(max_size=4).map(lambda v: pb.InferParameter(string_param=v)),
    st.floats().map(lambda v: pb.InferParameter(double_param=v)),
    st.integers(0, 2**64 - 1).map(lambda v: pb.InferParameter(uint64_param=v)),
    st.just(pb.InferParameter()),
)
parameters = st.dictionaries(
    st.sampled_from(["shared_memory_region", "binary_data_size", "x"]) | st.text(max_size=4),
    parameter_values,
    max_size=2,
)


def small_count(shape: list[int]) -> int | None:
    """The element count of `shape` when it is small enough to fill, else None."""
    if len(shape) > 32 or any(not 0 <= d <= 3 for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


@st.composite
def messages(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id=draw(st.text(max_size=4)))
    form = draw(st.sampled_from(["typed", "raw", "both", "neither"]))
    raws: list[bytes] = []
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(shapes)
        datatype = draw(datatypes)
        item = message.inputs.add(name=draw(names), datatype=datatype, shape=shape)
        for key, value in draw(parameters).items():
            item.parameters[key].CopyFrom(value)
        count = small_count(shape)
        # Huge shapes mostly come with no elements at all: the zero-element edge of numpy.
        size = draw(st.sampled_from([0, 0, 0, 1, 4])) if count is None else count
        if form in ("typed", "both"):
            # Mostly the field the datatype names, now and then another one.
            right = TYPED_FIELD.get(datatype, "fp32_contents")
            field = draw(st.sampled_from([right, right, right, *sorted(FIELDS)]))
            values = draw(st.lists(FIELDS[field], min_size=size, max_size=size + 1))
            getattr(item.contents, field).extend(values)
        if form in ("raw", "both"):
            width = numpy_dtype(datatype).itemsize if datatype in DATATYPES else 4
            if datatype == "BYTES":
                parts = draw(st.lists(st.binary(max_size=4), min_size=size, max_size=size))
                fitting = b"".join(len(p).to_bytes(4, "little") + p for p in parts)
            else:
                fitting = draw(st.binary(min_size=size * width, max_size=size * width))
            raws.append(draw(st.just(fitting) | st.binary(max_size=16)))
    if raws and draw(st.integers(0, 4)) == 0:
        raws.append(b"")  # one entry too many
    message.raw_input_contents.extend(raws)
    for name in draw(st.lists(names, max_size=2)):
        output = message.outputs.add(name=name)
        for key, value in draw(parameters).items():
            output.parameters[key].CopyFrom(value)
    for key, value in draw(parameters).items():
        message.parameters[key].CopyFrom(value)
    return message


# Properties ---------------------------------------------------------------------------------


@HOSTILE
@given(message=messages())
def test_built_messages_decode_or_are_refused(message: pb.ModelInferRequest) -> None:
    decode_or_refuse(message)


@HOSTILE
@given(raw=st.binary(max_size=512))
def test_messages_parsed_from_arbitrary_bytes_decode_or_are_refused(raw: bytes) -> None:
    # Bytes that do not parse never reach the codec: grpc's deserializer refuses them.
    try:
        message = pb.ModelInferRequest.FromString(raw)
    except DecodeError:
        event("not a message")
        return
    decode_or_refuse(message)


@HOSTILE
@given(message=messages(), data=st.data())
def test_mutated_wire_bytes_decode_or_are_refused(
    message: pb.ModelInferRequest, data: st.DataObject
) -> None:
    raw = bytearray(message.SerializeToString())
    for _ in range(data.draw(st.integers(1, 3))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed = pb.ModelInferRequest.FromString(bytes(raw))
    except DecodeError:
        return
    decode_or_refuse(parsed)


# The cases the issue names, one by one ------------------------------------------------------


FIELDS_ONE = {dt: (b"a" if dt == "BYTES" else True if dt == "BOOL" else 1) for dt in TYPED_FIELD}
"""One valid typed element per datatype."""


def one_input(datatype: str, shape: list[int]) -> tuple[pb.ModelInferRequest, Any]:
    message = pb.ModelInferRequest(model_name="m")
    return message, message.inputs.add(name="x", datatype=datatype, shape=shape)


@pytest.mark.parametrize("datatype", sorted(TYPED_FIELD))
@pytest.mark.parametrize("shape", HUGE_SHAPES + EMPTY_HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("form", ["typed", "raw"])
def test_giant_shape_is_refused_before_allocating(
    datatype: str, shape: list[int], form: str
) -> None:
    message, item = one_input(datatype, shape)
    if form == "raw":
        message.raw_input_contents.append(b"\x01\x00\x00\x00a" * 4)
    else:
        getattr(item.contents, TYPED_FIELD[datatype]).extend([FIELDS_ONE[datatype]] * 4)
    with pytest.raises(InvalidInput), memory_bounded(message.ByteSize()):
        grpc_codec.decode_request(message)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("shape", EMPTY_HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("form", ["typed", "raw"])
def test_no_elements_in_dimensions_numpy_cannot_describe_is_refused(
    datatype: str, shape: list[int], form: str
) -> None:
    message, _ = one_input(datatype, shape)
    if form == "raw":
        message.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match=r"too large to allocate|no typed contents"):
        grpc_codec.decode_request(message)


@pytest.mark.parametrize("shape", NEGATIVE_SHAPES, ids=str)
@pytest.mark.parametrize("form", ["typed", "raw"])
def test_negative_dimensions_are_refused(shape: list[int], form: str) -> None:
    message, item = one_input("FP32", shape)
    if form == "raw":
        message.raw_input_contents.append(b"\0\0\0\0")
    else:
        item.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="negative"):
        grpc_codec.decode_request(message)


def test_too_many_dimensions_are_refused() -> None:
    message, item = one_input("FP32", [1] * 33)
    item.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="dimensions"):
        grpc_codec.decode_request(message)


def test_bytes_that_are_not_utf8_decode_intact() -> None:
    # gRPC carries arbitrary bytes, typed or raw; neither form may trip over them.
    payload = b"\xff\xfe\xed\xa0\x80"
    message, item = one_input("BYTES", [1])
    item.contents.bytes_contents.append(payload)
    assert grpc_codec.decode_request(message).inputs[0].data.tolist() == [payload]
    message, _ = one_input("BYTES", [1])
    message.raw_input_contents.append(len(payload).to_bytes(4, "little") + payload)
    assert grpc_codec.decode_request(message).inputs[0].data.tolist() == [payload]


@pytest.mark.parametrize(
    "raw",
    [b"\x05\x00\x00\x00ab", b"\xff\xff\xff\xff", b"\x00\x00", b"\x00\x00\x00\x00" * 2],
    ids=["element-past-end", "4-GiB-element", "cut-prefix", "left-over"],
)
def test_malformed_raw_bytes_are_refused(raw: bytes) -> None:
    message, _ = one_input("BYTES", [1])
    message.raw_input_contents.append(raw)
    with pytest.raises(InvalidInput, match="BYTES"):
        grpc_codec.decode_request(message)


def test_duplicate_input_names_decode_for_the_validator_to_refuse() -> None:
    message = pb.ModelInferRequest(model_name="m")
    for _ in range(2):
        item = message.inputs.add(name="x", datatype="INT32", shape=[1])
        item.contents.int_contents.append(3)
    assert [t.name for t in grpc_codec.decode_request(message).inputs] == ["x", "x"]


def test_a_huge_number_of_inputs_costs_memory_in_proportion() -> None:
    count = 20_000
    message = pb.ModelInferRequest(model_name="m")
    for _ in range(count):
        message.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(7)
    with memory_bounded(message.ByteSize()):
        request = grpc_codec.decode_request(message)
    assert len(request.inputs) == count
    assert all(t.data.tolist() == [7] for t in request.inputs)


def test_memory_check_catches_an_allocation_out_of_proportion() -> None:
    # The memory_bounded check itself, on both ways out of the block.
    size = MEMORY_SLACK + 1024 * MEMORY_PER_MESSAGE_BYTE
    with pytest.raises(AssertionError, match="peaked"), memory_bounded(16):
        np.ones(size, dtype=np.uint8)
    with pytest.raises(AssertionError, match="peaked"), memory_bounded(16):
        allocate_then_refuse(size)


def allocate_then_refuse(size: int) -> None:
    """What a naive decoder does with a giant shape: allocate first, find the problem later."""
    buffer = np.ones(size, dtype=np.uint8)
    raise InvalidInput(f"refused after allocating {buffer.nbytes} bytes")
