"""Protobuf messages of the OIP gRPC service <-> modelport's protocol types.

Input data arrive either typed, in each input's `contents` (the field the datatype names,
INT8/INT16 widened into `int_contents`, UINT8/UINT16 into `uint_contents`), or raw, one
`raw_input_contents` entry per input in input order, in the layout of the binary tensor
extension (codec_binary). A request uses one form for all its inputs.

Outputs go raw, in `raw_output_contents`, unless the request sent every input typed: then
they mirror it and go typed (FP16 has no typed field, so a model with an FP16 output always
answers raw). tritonclient always sends raw and only decodes raw, so it always gets raw.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.codec_binary import array_from_raw, array_to_raw, element_count
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.metadata import IndexEntry, ModelMetadata
from modelport.protocol.tensor_data import shaped_input
from modelport.protocol.types import (
    InferRequest,
    InferResponse,
    Parameters,
    RequestedOutput,
    Tensor,
)
from modelport.transports.grpc_gen import inference_pb2 as pb

# The typed field of InferTensorContents for each datatype, and the dtype it holds on the wire.
_TYPED: Final[dict[str, tuple[str, np.dtype[Any]]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}
_NARROW: Final = frozenset({"INT8", "INT16", "UINT8", "UINT16"})
_SHARED_MEMORY: Final = "shared_memory_region"
_INT64_MAX: Final = 2**63 - 1


def decode_request(message: pb.ModelInferRequest) -> InferRequest:
    """The InferRequest a ModelInferRequest carries; InvalidInput says what does not add up."""
    inputs = message.inputs
    raws = message.raw_input_contents
    if raws and len(raws) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raws)} entries but the request has {len(inputs)} "
            "inputs; give one entry per input, in input order (or put every input's data in "
            "its contents)"
        )
    tensors: list[Tensor] = []
    for index, item in enumerate(inputs):
        name = item.name
        datatype = item.datatype
        shape = tuple(item.shape)
        params = parameters(item.parameters) if item.parameters else {}
        if _SHARED_MEMORY in params:
            raise Unsupported(
                f"input {name!r}: shared memory is not offered; send the data in "
                "raw_input_contents or contents"
            )
        if raws:
            if item.HasField("contents") and item.contents.ListFields():
                raise InvalidInput(
                    f"input {name!r} has data in contents while the request also has "
                    "raw_input_contents; use one form for every input"
                )
            data = array_from_raw(raws[index], datatype, shape, name)
        else:
            data = _typed_array(item, datatype, shape)
        tensors.append(Tensor(name, datatype, shape, data, params))
    outputs = None
    if message.outputs:
        outputs = []
        for out in message.outputs:
            out_params = parameters(out.parameters) if out.parameters else {}
            if _SHARED_MEMORY in out_params:
                raise Unsupported(
                    f"output {out.name!r}: shared memory is not offered; read the output from "
                    "the response"
                )
            outputs.append(RequestedOutput(out.name, None, out_params))
    return InferRequest(
        inputs=tensors,
        id=message.id or None,
        parameters=parameters(message.parameters) if message.parameters else {},
        outputs=outputs,
    )


def encode_response(response: InferResponse, *, typed: bool = False) -> pb.ModelInferResponse:
    """The ModelInferResponse for `response`: raw outputs, or typed contents when `typed`.

    `typed` is ignored (raw is used) when an output's datatype has no typed field.
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    set_parameters(message.parameters, response.parameters)
    outputs = response.outputs
    if typed and all(t.datatype in _TYPED for t in outputs):
        for tensor in outputs:
            out = message.outputs.add(name=tensor.name, datatype=tensor.datatype)
            out.shape.extend(tensor.shape)
            _fill_typed(out.contents, tensor)
        return message
    raws = []
    for tensor in outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype)
        out.shape.extend(tensor.shape)
        raws.append(array_to_raw(tensor.data, tensor.datatype))
    message.raw_output_contents.extend(raws)
    return message


def encode_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    """The ModelMetadataResponse for the dataplane's model metadata."""
    message = pb.ModelMetadataResponse(
        name=metadata.name, versions=metadata.versions, platform=metadata.platform
    )
    for specs, target in ((metadata.inputs, message.inputs), (metadata.outputs, message.outputs)):
        for spec in specs:
            target.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    set_parameters(message.parameters, metadata.parameters)
    return message


def encode_repository_index(entries: Sequence[IndexEntry]) -> pb.RepositoryIndexResponse:
    """The RepositoryIndexResponse for the dataplane's repository index."""
    message = pb.RepositoryIndexResponse()
    for e in entries:
        message.models.add(name=e.name, version=e.version, state=e.state, reason=e.reason)
    return message


def parameters(values: Mapping[str, pb.InferParameter]) -> Parameters:
    """OIP parameters from a protobuf map; entries with no value set are left out."""
    out: Parameters = {}
    for key, value in values.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def set_parameters(target: MutableMapping[str, pb.InferParameter], values: Parameters) -> None:
    """Write OIP parameters into a protobuf map, each in the field its Python type names."""
    for key, value in values.items():
        slot = target[key]
        if type(value) is str:  # provenance: the common case, checked first
            slot.string_param = value
        elif isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


def _typed_array(
    item: pb.ModelInferRequest.InferInputTensor, datatype: str, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    name = item.name
    count = element_count(shape, name)
    typed = _TYPED.get(datatype)
    if typed is None:
        try:
            numpy_dtype(datatype)
        except InvalidInput as exc:
            raise InvalidInput(f"input {name!r}: {exc.message}") from None
        raise InvalidInput(
            f"input {name!r}: {datatype} data have no typed contents field; send them in "
            "raw_input_contents"
        )
    field, wire = typed
    contents = item.contents
    wrong = [f.name for f, _ in contents.ListFields() if f.name != field]
    if wrong:
        raise InvalidInput(
            f"input {name!r}: {datatype} data go in contents.{field}, not contents.{wrong[0]}"
        )
    values = getattr(contents, field)
    if len(values) != count:
        if not values:
            raise InvalidInput(
                f"input {name!r} has no data; shape {list(shape)} needs {count} elements in "
                f"contents.{field} or one raw_input_contents entry per input"
            )
        raise InvalidInput(
            f"input {name!r}: shape {list(shape)} needs {count} elements, "
            f"contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return shaped_input(array, shape, name)
    array = np.fromiter(values, dtype=wire, count=count)
    if datatype in _NARROW:
        target = numpy_dtype(datatype)
        info = np.iinfo(target)  # type: ignore[type-var]
        if count and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise InvalidInput(
                f"input {name!r}: {datatype} values must lie between {info.min} and {info.max}"
            )
        array = array.astype(target)
    return shaped_input(array, shape, name)


def _fill_typed(contents: pb.InferTensorContents, tensor: Tensor) -> None:
    field = _TYPED[tensor.datatype][0]
    values = np.asarray(tensor.data).ravel().tolist()
    if tensor.datatype == "BYTES":
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
    getattr(contents, field).extend(values)
