"""Open Inference Protocol JSON: decode inference requests, encode inference responses.

Tensor data in requests may be the flat row-major list or nested lists that follow the shape
exactly. Element rules, per datatype:

* BOOL: JSON `true`/`false` only (numbers are rejected, so a 0/1 mix-up is not guessed at).
* integer types: JSON integers inside the datatype's range; floats (even `1.0`) and
  out-of-range values are rejected rather than truncated or wrapped.
* FP16/FP32/FP64: JSON numbers (integers allowed) that fit the datatype; `null` stands for NaN,
  mirroring what responses carry for NaN and infinities (JSON has no literal for them).
* BYTES: JSON strings, stored as their UTF-8 encoding; arbitrary bytes need the binary
  tensor data extension (see codec_binary).

Keys the protocol does not define are ignored. The binary-extension parameters
(`binary_data_size`, `binary_data`, `binary_data_output`) are consumed here: they become
typed fields and are removed from the decoded `parameters`. An empty `outputs` list means
"every output", as it must on gRPC where empty and absent cannot be told apart.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, cast

import msgspec
import numpy as np
import orjson

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.datatypes import DATATYPES, numpy_dtype
from modelport.protocol.types import (
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)

MAX_RANK: Final = 32
"""The most dimensions a tensor may have."""

_MAX_DIM: Final = 2**63 - 1
_Dim = Annotated[int, msgspec.Meta(ge=0, le=_MAX_DIM)]


class _InputHead(msgspec.Struct):
    name: str
    shape: Annotated[list[_Dim], msgspec.Meta(max_length=MAX_RANK)]
    datatype: str
    # Kept raw: the element type depends on `datatype`, a sibling key that may come later.
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    parameters: dict[str, Any] | None = None


class _OutputHead(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _RequestHead(msgspec.Struct):
    inputs: list[_InputHead]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_OutputHead] | None = None


_REQUEST: Final = msgspec.json.Decoder(_RequestHead)


def _int_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _fp_bound(datatype: str) -> float:
    # Exclusive bound: everything below max + half an ulp rounds to a finite value, so the
    # shortest text of the largest float (e.g. 3.4028235e38 for FP32) still decodes.
    info = np.finfo(cast("np.dtype[np.floating[Any]]", numpy_dtype(datatype)))
    return float(info.max) + 2.0 ** (int(info.maxexp) - int(info.nmant) - 2)


def _element_type(datatype: str) -> Any:
    if datatype == "BOOL":
        return bool
    if datatype == "BYTES":
        return str
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        lo, hi = _int_range(dtype.itemsize * 8, dtype.kind == "i")
        if hi > _MAX_DIM:
            # msgspec bounds must fit an int64; numpy rejects UINT64 overflow instead.
            return Annotated[int, msgspec.Meta(ge=lo)]
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if datatype == "FP64":
        return float | None
    bound = _fp_bound(datatype)
    return Annotated[float, msgspec.Meta(gt=-bound, lt=bound)] | None


def _hint(datatype: str) -> str:
    if datatype == "BOOL":
        return "BOOL data are JSON true/false"
    if datatype == "BYTES":
        return "BYTES data are JSON strings (send other bytes with the binary tensor extension)"
    dtype = numpy_dtype(datatype)
    if dtype.kind in "iu":
        lo, hi = _int_range(dtype.itemsize * 8, dtype.kind == "i")
        return f"{datatype} data are JSON integers from {lo} to {hi}"
    return f"{datatype} data are JSON numbers within the {datatype} range (null for NaN)"


_ELEMENT: Final[dict[str, Any]] = {dt: _element_type(dt) for dt in DATATYPES}
_HINT: Final[dict[str, str]] = {dt: _hint(dt) for dt in DATATYPES}
_DTYPE: Final[dict[str, np.dtype[np.generic]]] = {dt: numpy_dtype(dt) for dt in DATATYPES}
_FLAT: Final[dict[str, msgspec.json.Decoder[list[Any]]]] = {
    dt: msgspec.json.Decoder(types.GenericAlias(list, (elem,))) for dt, elem in _ELEMENT.items()
}
# Placeholder for inputs whose bytes follow the JSON part; codec_binary replaces it.
_PENDING: Final = np.empty(0, dtype=np.uint8)
_PENDING.flags.writeable = False


@functools.cache
def _nested_decoder(datatype: str, depth: int) -> msgspec.json.Decoder[list[Any]]:
    element = _ELEMENT[datatype]
    for _ in range(depth):
        element = types.GenericAlias(list, (element,))
    return msgspec.json.Decoder(element)


@dataclass(slots=True)
class BinaryInput:
    """An input whose data follow the JSON part: its position in `inputs` and its byte count."""

    index: int
    size: int


@dataclass(slots=True)
class RequestHead:
    """A decoded JSON request part; inputs listed in `binary_inputs` still await their data."""

    request: InferRequest
    binary_inputs: list[BinaryInput]


def decode_request(body: bytes | memoryview) -> InferRequest:
    """Decode an all-JSON inference request; InvalidInput says what is wrong and where."""
    head = decode_head(body)
    if head.binary_inputs:
        name = head.request.inputs[head.binary_inputs[0].index].name
        raise InvalidInput(
            f"input {name!r} declares parameters.binary_data_size but the request has no "
            "Inference-Header-Content-Length header; send the header with the byte length of "
            'the JSON part, or put the values in "data"'
        )
    return head.request


def decode_head(body: bytes | memoryview) -> RequestHead:
    """Decode the JSON part of a request; inputs with `binary_data_size` are left to fill."""
    try:
        head = _REQUEST.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _request_error(exc, body) from None
    inputs: list[Tensor] = []
    pending: list[BinaryInput] = []
    for index, item in enumerate(head.inputs):
        params = item.parameters if item.parameters is not None else {}
        size = _binary_size(item.name, params) if "binary_data_size" in params else None
        data = item.data
        if data is msgspec.UNSET:
            if size is None:
                raise InvalidInput(
                    f'input {item.name!r} has no "data"; give the values in "data" or send '
                    "them as binary data with parameters.binary_data_size"
                )
            if item.datatype not in _DTYPE:
                raise _unknown_datatype(item.name, item.datatype)
            shape = tuple(item.shape)
            inputs.append(Tensor(item.name, item.datatype, shape, _PENDING, params))
            pending.append(BinaryInput(index, size))
        else:
            if size is not None:
                raise InvalidInput(
                    f'input {item.name!r} has both "data" and parameters.binary_data_size; '
                    "send its values one way only"
                )
            inputs.append(_tensor(index, item, data, params))
    params = head.parameters if head.parameters is not None else {}
    binary_output = False
    if "binary_data_output" in params:
        binary_output = _flag(params.pop("binary_data_output"), "parameters.binary_data_output")
    outputs = [_requested(o) for o in head.outputs] if head.outputs else None
    request = InferRequest(inputs, head.id, params, outputs, binary_output)
    return RequestHead(request, pending)


def encode_response(response: InferResponse) -> bytes:
    """Encode a response as JSON with flat data; BYTES outputs must be UTF-8 text."""
    return encode_response_head(response, None)


def encode_response_head(
    response: InferResponse, binary_sizes: Sequence[int | None] | None
) -> bytes:
    """Encode a response's JSON part; an output with a size in `binary_sizes` is sent as binary.

    A binary output gets `parameters.binary_data_size` and no `data`; its bytes are the
    caller's to append. `binary_sizes` is None or has one entry per output.
    """
    outputs: list[dict[str, Any]] = []
    for index, tensor in enumerate(response.outputs):
        size = None if binary_sizes is None else binary_sizes[index]
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if size is None:
            entry["data"] = _json_data(tensor)
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
        else:
            entry["parameters"] = {**tensor.parameters, "binary_data_size": size}
        outputs.append(entry)
    document = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "parameters": response.parameters,
        "outputs": outputs,
    }
    try:
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise InternalError(f"the response cannot be encoded as JSON: {exc}") from None


def _request_error(exc: Exception, body: bytes | memoryview) -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput(f"the request body is not valid UTF-8 JSON ({exc.reason})")
    message = str(exc)
    if "UTF-8" in message:
        # msgspec 0.23 reports bad UTF-8 as a decode error rather than UnicodeDecodeError.
        return InvalidInput(f"the request body is not valid UTF-8 JSON ({message})")
    if not bytes(body).strip():
        return InvalidInput('the request body is empty; send a JSON object with an "inputs" list')
    if not isinstance(exc, msgspec.ValidationError):
        return InvalidInput(f"the request body is not valid JSON: {message}")
    if message.startswith("Expected `object`") and " - at " not in message:
        got = message.rpartition("got ")[2].strip("`")
        return InvalidInput(
            f'the request body must be a JSON object with an "inputs" list, not {got}'
        )
    return InvalidInput(f"invalid inference request: {message}")


def _unknown_datatype(name: str, datatype: str) -> InvalidInput:
    try:
        numpy_dtype(datatype)
    except InvalidInput as exc:
        return InvalidInput(f"input {name!r}: {exc.message}")
    return InvalidInput(f"input {name!r}: datatype {datatype!r} cannot be sent as JSON")


def _binary_size(name: str, params: Parameters) -> int:
    size = params.pop("binary_data_size")
    if type(size) is not int or size < 0:
        raise InvalidInput(
            f"input {name!r}: parameters.binary_data_size must be a non-negative integer "
            f"byte count, got {size!r}"
        )
    return size


def _flag(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


def _requested(item: _OutputHead) -> RequestedOutput:
    params = item.parameters if item.parameters is not None else {}
    binary = None
    if "binary_data" in params:
        binary = _flag(params.pop("binary_data"), f"output {item.name!r}: parameters.binary_data")
    return RequestedOutput(item.name, binary, params)


def _tensor(index: int, item: _InputHead, data: msgspec.Raw, params: Parameters) -> Tensor:
    datatype = item.datatype
    decoder = _FLAT.get(datatype)
    if decoder is None:
        raise _unknown_datatype(item.name, datatype)
    shape = tuple(item.shape)
    count = math.prod(shape)
    try:
        values = decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        array = _nested(index, item, bytes(data), shape, count, exc)
    else:
        if len(values) != count:
            raise InvalidInput(
                f"input {item.name!r}: shape {list(shape)} needs {count} elements, "
                f"data has {len(values)}"
            )
        array = _flat_array(item.name, values, datatype, shape)
    return Tensor(item.name, datatype, shape, array, params)


def _flat_array(name: str, values: list[Any], datatype: str, shape: tuple[int, ...]) -> Any:
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = _utf8(name, values)
    else:
        try:
            array = np.array(values, dtype=_DTYPE[datatype])
        except OverflowError:
            raise InvalidInput(f"input {name!r}: {_HINT[datatype]}") from None
    return shaped_input(array, shape, name)


def shaped_input(
    array: np.ndarray[Any, Any], shape: tuple[int, ...], name: str
) -> np.ndarray[Any, Any]:
    """Input `name`'s flat elements in `shape`; InvalidInput when the shape cannot be allocated.

    The caller has checked that `array` holds as many elements as `shape` does.
    """
    try:
        return array.reshape(shape)
    except ValueError:
        # Only a zero-element tensor with absurd dimensions gets here.
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} is too large to allocate"
        ) from None


def _utf8(name: str, values: list[str]) -> list[bytes]:
    try:
        return [v.encode() for v in values]
    except UnicodeEncodeError:
        raise InvalidInput(f"input {name!r}: a BYTES string is not valid Unicode") from None


def _data_error(index: int, item: _InputHead, exc: Exception, prefix: str = "") -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        detail = f"a string is not valid UTF-8 ({exc.reason}) - at `$.inputs[{index}].data`"
    elif not isinstance(exc, msgspec.ValidationError) and "UTF-8" in str(exc):
        # msgspec 0.23 reports bad UTF-8 as a decode error rather than UnicodeDecodeError.
        detail = f"a string is not valid UTF-8 ({exc}) - at `$.inputs[{index}].data`"
    else:
        detail = str(exc)
        where = f"`$.inputs[{index}].data"
        # msgspec names no path when the data value itself is wrong.
        detail = (
            detail.replace("`$", where, 1) if " - at `$" in detail else f"{detail} - at {where}`"
        )
    return InvalidInput(f"input {item.name!r}: {prefix}{detail}; {_HINT[item.datatype]}")


def _nested(
    index: int,
    item: _InputHead,
    raw: bytes,
    shape: tuple[int, ...],
    count: int,
    flat_error: Exception,
) -> Any:
    """Decode data given as nested lists; they must follow `shape` exactly."""
    text = raw.lstrip()
    looks_nested = text[:1] == b"[" and text[1:].lstrip()[:1] == b"["
    if len(shape) < 2 or not looks_nested:
        raise _data_error(index, item, flat_error)
    mismatch = f"nested data must follow shape {list(shape)} exactly (or send a flat list): "
    try:
        nested = _nested_decoder(item.datatype, len(shape)).decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _data_error(index, item, exc, mismatch) from None
    dtype = _DTYPE[item.datatype]
    try:
        array = np.array(nested, dtype=dtype)
    except ValueError:
        raise InvalidInput(f"input {item.name!r}: {mismatch}got ragged lists") from None
    except OverflowError:
        raise InvalidInput(f"input {item.name!r}: {_HINT[item.datatype]}") from None
    # A zero-element tensor may stop nesting early ([[], []] for shape [2, 0, 3]).
    empty_prefix = count == 0 and array.shape == shape[: array.ndim]
    if array.shape != shape and not empty_prefix:
        # numpy keeps ragged lists of strings as an object array of lists instead of failing.
        ragged = array.size > 0 and isinstance(array.flat[0], list)
        got = "ragged lists" if ragged else f"shape {list(array.shape)}"
        raise InvalidInput(f"input {item.name!r}: {mismatch}got {got}")
    if item.datatype == "BYTES":
        return _flat_array(item.name, array.ravel().tolist(), "BYTES", shape)
    # Not a plain reshape: an empty prefix such as [[], []] may claim dimensions too large
    # for numpy ([2, 0, 2**63 - 1]), which must be the client's error rather than a crash.
    return shaped_input(array, shape, item.name)


def _json_data(tensor: Tensor) -> Any:
    if tensor.datatype == "BYTES":
        return [_text(tensor.name, v) for v in np.asarray(tensor.data).ravel().tolist()]
    dtype = _DTYPE.get(tensor.datatype)
    if dtype is None:
        raise InternalError(f"output {tensor.name!r} has unknown datatype {tensor.datatype!r}")
    # orjson writes C-contiguous native arrays directly; this is a view when already so.
    return np.ascontiguousarray(tensor.data, dtype=dtype).reshape(-1)


def _text(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise InvalidInput(
                f"output {name!r} holds bytes that are not UTF-8 text, which JSON cannot "
                'carry; request it as binary data (output parameter "binary_data": true)'
            ) from None
    if isinstance(value, str):
        return str(value)
    raise InternalError(
        f"output {name!r} is BYTES but holds a {type(value).__name__}; "
        "BYTES elements must be bytes or str"
    )
