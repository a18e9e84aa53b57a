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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import orjson

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.tensor_data import DTYPES, MAX_DIM, decode_data
from modelport.protocol.types import (
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)

MAX_RANK: Final = 32
"""The most dimensions a tensor may have."""

_Dim = Annotated[int, msgspec.Meta(ge=0, le=MAX_DIM)]


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


# Placeholder for inputs whose bytes follow the JSON part; codec_binary replaces it.
_PENDING: Final = np.empty(0, dtype=np.uint8)
_PENDING.flags.writeable = False


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
            if item.datatype not in DTYPES:
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
    if datatype not in DTYPES:
        raise _unknown_datatype(item.name, datatype)
    shape = tuple(item.shape)
    array = decode_data(index, item.name, datatype, shape, data)
    return Tensor(item.name, datatype, shape, array, params)


def _json_data(tensor: Tensor) -> Any:
    if tensor.datatype == "BYTES":
        return [_text(tensor.name, v) for v in np.asarray(tensor.data).ravel().tolist()]
    dtype = DTYPES.get(tensor.datatype)
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
