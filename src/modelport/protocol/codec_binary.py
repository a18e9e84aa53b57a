"""The binary tensor data extension: raw tensor layout and JSON-plus-binary REST bodies.

Raw layout (shared with gRPC's raw contents): little-endian, row-major, no padding; BOOL is
one byte per element (any non-zero byte reads as true); BYTES is, per element, a 4-byte
little-endian length followed by that many bytes.

A request body is a JSON part (its length in the Inference-Header-Content-Length header)
followed by the raw bytes of every input that declares `parameters.binary_data_size`, in input
order. Responses carry binary outputs the same way.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from modelport.errors import InternalError, InvalidInput, Unsupported
from modelport.protocol import codec_json
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.tensor_data import shaped_input
from modelport.protocol.types import InferRequest, InferResponse

_LENGTH: Final = struct.Struct("<I")
_MAX_ELEMENT: Final = 2**32 - 1


def element_count(shape: Sequence[int], name: str) -> int:
    """Elements in a tensor of `shape`; InvalidInput for negative or too many dimensions."""
    if len(shape) > codec_json.MAX_RANK:
        raise InvalidInput(
            f"input {name!r}: shape has {len(shape)} dimensions, at most "
            f"{codec_json.MAX_RANK} are supported"
        )
    if shape and min(shape) < 0:
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} has a negative dimension; "
            "a request gives actual sizes (-1 only appears in model metadata)"
        )
    return math.prod(shape)


def array_from_raw(
    buf: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray[Any, Any]:
    """Decode raw tensor bytes into an array of `shape`; InvalidInput if the size is off.

    Numeric arrays are read-only views of `buf` when it is suitably aligned (else copies);
    BYTES gives an object array of `bytes`.
    """
    count = element_count(shape, name)
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if datatype == "BYTES":
        return _bytes_from_raw(view, shape, count, name)
    try:
        dtype = numpy_dtype(datatype)
    except InvalidInput as exc:
        raise InvalidInput(f"input {name!r}: {exc.message}") from None
    expected = count * dtype.itemsize
    if view.nbytes != expected:
        raise InvalidInput(
            f"input {name!r}: {datatype} data of shape {list(shape)} is {expected} bytes, "
            f"but {view.nbytes} bytes were given"
        )
    if datatype == "BOOL":
        # Normalises any non-zero byte to true; numpy bools must be exactly 0 or 1.
        array = np.frombuffer(view, dtype=np.uint8) != 0
    else:
        array = np.frombuffer(view, dtype=dtype)
        if not array.flags.aligned:
            array = array.copy()
    return shaped_input(array, shape, name)


def array_to_raw(array: np.ndarray[Any, Any], datatype: str) -> bytes:
    """Encode an array in the raw layout of `datatype` (row-major, little-endian)."""
    if datatype == "BYTES":
        return _bytes_to_raw(array)
    try:
        dtype = numpy_dtype(datatype)
    except InvalidInput as exc:
        raise InternalError(f"cannot encode tensor data: {exc.message}") from None
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a REST inference request body, JSON alone or JSON followed by binary inputs.

    `header_length` is the Inference-Header-Content-Length header (None when absent, and
    then the whole body is JSON). InvalidInput says what does not add up.
    """
    if header_length is None:
        return codec_json.decode_request(body)
    if header_length < 0 or header_length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} "
            "bytes; it must be the byte length of the JSON part at the start of the body"
        )
    if header_length == 0:
        raise Unsupported(
            "Inference-Header-Content-Length: 0 (a raw body without a JSON part) is not "
            "supported; send the JSON request first and give its byte length in the header"
        )
    view = memoryview(body)
    head = codec_json.decode_head(view[:header_length])
    tail = view[header_length:]
    declared = sum(b.size for b in head.binary_inputs)
    if declared != len(tail):
        raise InvalidInput(
            f"the inputs declare {declared} bytes of binary data (parameters.binary_data_size) "
            f"but {len(tail)} bytes follow the {header_length}-byte JSON part; "
            "Inference-Header-Content-Length must count the JSON part only"
        )
    inputs = head.request.inputs
    offset = 0
    for binary in head.binary_inputs:
        tensor = inputs[binary.index]
        chunk = tail[offset : offset + binary.size]
        tensor.data = array_from_raw(chunk, tensor.datatype, tensor.shape, tensor.name)
        offset += binary.size
    return head.request


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """Encode a response as the request asked: (body, JSON part length or None if all JSON).

    An output goes binary when its requested `binary` is True, or when the client did not say
    (not listed, or `binary` None) and the request set `binary_data_output`.
    """
    asked = {o.name: o.binary for o in request.outputs} if request.outputs else {}
    sizes: list[int | None] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        binary = asked.get(tensor.name)
        if binary is None:
            binary = request.binary_output
        if binary:
            raw = array_to_raw(tensor.data, tensor.datatype)
            sizes.append(len(raw))
            chunks.append(raw)
        else:
            sizes.append(None)
    if not chunks:
        return codec_json.encode_response(response), None
    head = codec_json.encode_response_head(response, sizes)
    return b"".join([head, *chunks]), len(head)


def _bytes_from_raw(
    view: memoryview, shape: tuple[int, ...], count: int, name: str
) -> np.ndarray[Any, Any]:
    given = view.nbytes
    if given < 4 * count:
        # Checked first so a huge shape cannot make us allocate before failing.
        raise InvalidInput(
            f"input {name!r}: BYTES data of shape {list(shape)} holds {count} elements, "
            f"which needs at least {4 * count} bytes of length prefixes, but {given} bytes "
            "were given"
        )
    data = view.tobytes()
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > given:
            raise InvalidInput(
                f"input {name!r}: BYTES data of shape {list(shape)} ends before element {i} "
                f"({given} bytes were given; each element is a 4-byte length and its bytes)"
            )
        (length,) = _LENGTH.unpack_from(data, offset)
        start = offset + 4
        offset = start + length
        if offset > given:
            raise InvalidInput(
                f"input {name!r}: BYTES element {i} declares {length} bytes but only "
                f"{given - start} remain of the {given} bytes given"
            )
        out[i] = data[start:offset]
    if offset != given:
        raise InvalidInput(
            f"input {name!r}: BYTES data of shape {list(shape)} ({count} elements) is "
            f"{offset} bytes, but {given} bytes were given"
        )
    return shaped_input(out, shape, name)


def _bytes_to_raw(array: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for value in np.asarray(array).ravel().tolist():
        if isinstance(value, str):
            try:
                value = value.encode()
            except UnicodeEncodeError:
                raise InternalError("a BYTES string is not valid Unicode") from None
        elif isinstance(value, bytearray | memoryview):
            value = bytes(value)
        elif not isinstance(value, bytes):
            raise InternalError(
                f"a BYTES tensor holds a {type(value).__name__}; elements must be bytes or str"
            )
        if len(value) > _MAX_ELEMENT:
            raise InternalError("a BYTES element is larger than 4 GiB and cannot be sent raw")
        parts.append(_LENGTH.pack(len(value)))
        parts.append(value)
    return b"".join(parts)
