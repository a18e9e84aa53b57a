"""TensorFlow Serving's JSON request formats as inference requests, and answers back to them.

The row format is `{"instances": [...]}`: one instance per row, either the value of the
model's only input (`[5.1, 3.5, 1.4, 0.2]` for a `[-1, 4]` input, `"hello"` for a `[-1]` text
input) or an object naming inputs (`{"input-0": [5.1, ...]}`, or one field per feature as
record mapping takes them). The columnar format is `{"inputs": ...}`: the tensor of the only
input, or an object of named tensors, each with the batch first. A BYTES value may be
`{"b64": "<base64>"}`. Both map onto the model's signature through `RecordMapping`, the same
rules batch jobs and stream consumers follow, so the dataplane then validates them as any
request.

Answers: the row format's `predictions` is one entry per row, the bare value when the model
has one output and an object by output name otherwise; the columnar format's `outputs` is the
bare tensor of a single output, else an object of tensors. BYTES outputs that are not UTF-8
come back as `{"b64": ...}`.

TF Serving, KServe v1, Vertex AI and MLflow's `instances`/`inputs` forms all use these:

- `instances_request(instances, mapping)` and `columnar_request(inputs, mapping)` build the
  `InferRequest`; `predict_request(body, mapping)` picks the format from a body's keys;
- `predictions(response)` and `columnar_outputs(response)` give the JSON values back;
- `mapping_for(version)` is the (cached) `RecordMapping` of a model version.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.types import InferRequest, InferResponse, Parameters, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.serving.record_mapping import RecordMapping, output_records

_CACHE_SIZE: Final = 256
_mappings: dict[tuple[str, int, str], RecordMapping] = {}


def mapping_for(version: ModelVersion) -> RecordMapping:
    """The record mapping of `version` (resolved once per version and digest)."""
    key = (version.name, version.version, version.digest)
    mapping = _mappings.get(key)
    if mapping is None:
        if len(_mappings) >= _CACHE_SIZE:
            _mappings.clear()
        mapping = _mappings[key] = RecordMapping.for_model(version)
    return mapping


def predict_request(
    body: Mapping[str, Any], mapping: RecordMapping, parameters: Parameters | None = None
) -> tuple[InferRequest, bool]:
    """The request of a body in either format, and whether it was the columnar one.

    Exactly one of `instances` and `inputs` must be there; InvalidInput says what to send.
    """
    has_rows = "instances" in body
    has_columns = "inputs" in body
    if has_rows and has_columns:
        raise InvalidInput(
            'send either "instances" (the row format) or "inputs" (the columnar format), not both'
        )
    if has_rows:
        return instances_request(body["instances"], mapping, parameters), False
    if has_columns:
        return columnar_request(body["inputs"], mapping, parameters), True
    raise InvalidInput(
        'the body needs "instances" (a list of rows) or "inputs" (a tensor, or an object of '
        "named tensors)"
    )


def instances_request(
    instances: Any, mapping: RecordMapping, parameters: Parameters | None = None
) -> InferRequest:
    """The request of the row format's `instances`: a list of rows or of objects naming inputs."""
    if not isinstance(instances, list):
        raise InvalidInput(
            f'"instances" must be a list (one entry per row), not {_kind(instances)}'
        )
    if not instances:
        raise InvalidInput('"instances" is empty; give at least one row')
    version = mapping.version
    inputs = version.signature.inputs
    has_bytes = any(s.datatype == "BYTES" for s in inputs)
    objects = [_is_object(i) for i in instances]
    if all(objects):
        records: list[Mapping[str, Any]] = instances
        if has_bytes:
            records = [
                {k: _decoded(v, f"instances[{n}].{k}") for k, v in r.items()}
                for n, r in enumerate(instances)
            ]
    elif any(objects):
        raise InvalidInput(
            "instance 0 and instance "
            f"{objects.index(not objects[0])} differ: either every instance is an object "
            "naming inputs or none is"
        )
    elif len(inputs) != 1:
        names = ", ".join(repr(s.name) for s in inputs)
        raise InvalidInput(
            f"model {version.name!r} has {len(inputs)} inputs ({names}); each instance must be "
            "an object naming them"
        )
    else:
        name = inputs[0].name
        if has_bytes:
            records = [{name: _decoded(v, f"instances[{n}]")} for n, v in enumerate(instances)]
        else:
            records = [{name: v} for v in instances]
    return mapping.request(records, parameters=parameters)


def columnar_request(
    inputs: Any, mapping: RecordMapping, parameters: Parameters | None = None
) -> InferRequest:
    """The request of the columnar format's `inputs`: a tensor, or an object of named tensors.

    Every tensor has the batch first, and all the same number of rows.
    """
    version = mapping.version
    specs = version.signature.inputs
    if _is_object(inputs):
        named: Mapping[str, Any] = inputs
    elif len(specs) == 1:
        named = {specs[0].name: inputs}
    else:
        names = ", ".join(repr(s.name) for s in specs)
        raise InvalidInput(
            f'model {version.name!r} has {len(specs)} inputs ({names}); "inputs" must be an '
            "object of tensors by name"
        )
    if not named:
        raise InvalidInput('"inputs" is empty; name each input with its tensor')
    rows: int | None = None
    for name, tensor in named.items():
        if not isinstance(tensor, list):
            raise InvalidInput(
                f'"inputs" {name!r} must be a list with the batch first, not {_kind(tensor)}'
            )
        if rows is None:
            rows = len(tensor)
        elif len(tensor) != rows:
            raise InvalidInput(
                f'"inputs" tensors differ in their first (batch) dimension: {rows} rows and '
                f"{len(tensor)} in {name!r}"
            )
    if not rows:
        raise InvalidInput('"inputs" has no rows; give at least one')
    has_bytes = any(s.datatype == "BYTES" for s in specs)
    columns = [
        (name, [_decoded(v, f"inputs.{name}") for v in tensor] if has_bytes else tensor)
        for name, tensor in named.items()
    ]
    records = [{name: values[i] for name, values in columns} for i in range(rows)]
    return mapping.request(records, parameters=parameters)


def predictions(response: InferResponse) -> Any:
    """The row format's `predictions`: per row, the single output's value or an object.

    A list, or (one numeric output) the output's array, which orjson writes as one.
    """
    outputs = response.outputs
    if len(outputs) == 1:
        return _values(outputs[0])
    records = output_records(outputs, native=True)
    if any(t.datatype == "BYTES" for t in outputs):
        return [{k: _encoded(v) for k, v in r.items()} for r in records]
    return records


def columnar_outputs(response: InferResponse) -> Any:
    """The columnar format's `outputs`: the single output's tensor, or an object by name."""
    outputs = response.outputs
    if len(outputs) == 1:
        return _values(outputs[0])
    return {t.name: _values(t) for t in outputs}


def _values(tensor: Tensor) -> Any:
    """A tensor as JSON values (numeric ones as the array, which orjson writes natively)."""
    if tensor.datatype == "BYTES":
        return _encoded(np.asarray(tensor.data).tolist())
    return np.ascontiguousarray(tensor.data)


def _is_object(value: Any) -> bool:
    """An object naming inputs (not a `{"b64": ...}` value)."""
    return isinstance(value, dict) and not (len(value) == 1 and "b64" in value)


def _decoded(value: Any, where: str) -> Any:
    """`value` with each `{"b64": ...}` in it replaced by its bytes."""
    if isinstance(value, dict) and len(value) == 1 and "b64" in value:
        text = value["b64"]
        if not isinstance(text, str):
            raise InvalidInput(f'{where}: "b64" must be a base64 string, not {_kind(text)}')
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(
                f'{where}: "b64" is not valid base64 (standard alphabet, padded with "=")'
            ) from None
    if isinstance(value, list):
        return [_decoded(v, where) for v in value]
    return value


def _encoded(value: Any) -> Any:
    """Text stays text; bytes that are not UTF-8 become `{"b64": ...}`."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_encoded(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "a list"
    return {dict: "an object", str: "a string", bool: "true/false"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )
