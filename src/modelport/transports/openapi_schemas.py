"""JSON Schemas of the REST API's bodies, for the OpenAPI description (see transports.openapi).

Pure data. Request schemas say what a well-formed request looks like (the server also ignores
keys it does not know); response schemas say what the server answers.
"""

from __future__ import annotations

from typing import Any, Final

from modelport.errors import ErrorKind
from modelport.protocol.codec_json import MAX_RANK
from modelport.protocol.datatypes import DATATYPES

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    """A reference to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


def _described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description}


def _object(required: list[str], open_: bool = True, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "required": required, "properties": properties}
    if not open_:
        schema["additionalProperties"] = False
    return schema


def _array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


STRING: Final[Schema] = {"type": "string"}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}
REQUEST_ID: Final[Schema] = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
_SCALAR: Final[Schema] = {"type": ["string", "number", "boolean"]}
_PARAMETERS: Final[Schema] = {"type": "object", "additionalProperties": _SCALAR}
_STATUS: Final[Schema] = {"type": "string", "enum": ["ok", "collecting"]}
_TENSOR_DATA: Final[Schema] = _array(
    {"type": ["number", "string", "boolean", "null", "array"]},
    description=(
        "Tensor elements in row-major order, flat or nested to follow the shape exactly. "
        "BOOL: true/false; integer types: integers in range; FP16/FP32/FP64: numbers, null for "
        "NaN; BYTES: strings (their UTF-8 encoding; other bytes need the binary extension)."
    ),
)
_TENSOR_METADATA: Final = _object(
    ["name", "datatype", "shape"],
    name=STRING,
    datatype=STRING,
    shape=_array(
        {"type": "integer", "minimum": -1},
        description="-1 marks a dimension of any size (the leading one is the batch).",
    ),
)
_DRIFT_FEATURE: Final = _object(
    ["name", "status"],
    name=STRING,
    input=STRING,
    column={"type": ["integer", "null"]},
    kind={"type": "string", "enum": ["numeric", "categorical"]},
    live_rows=COUNT,
    psi={"type": ["number", "null"]},
    ks={"type": ["number", "null"]},
    status=_STATUS,
)
_SCORE: Final = _object(
    ["kind", "rows"],
    kind={"type": "string", "enum": ["classification", "regression"]},
    rows=COUNT,
    accuracy={"type": ["number", "null"]},
    mae={"type": ["number", "null"]},
)

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": _object(
        ["error", "code"],
        False,
        error=_described(STRING, "What went wrong and how to fix it."),
        code={"type": "string", "enum": [kind.value for kind in ErrorKind]},
    ),
    "ServerMetadata": _object(
        ["name", "version", "extensions"], name=STRING, version=STRING, extensions=_array(STRING)
    ),
    "Live": _object(["live"], live={"const": True}),
    "Ready": _object(["ready"], ready={"const": True}),
    "ModelReady": _object(["name", "ready"], name=STRING, ready={"const": True}),
    "TensorMetadata": _TENSOR_METADATA,
    "ModelMetadata": _object(
        ["name", "platform", "inputs", "outputs"],
        name=STRING,
        versions=_array(STRING),
        platform=STRING,
        inputs=_array(ref("TensorMetadata")),
        outputs=_array(ref("TensorMetadata")),
        parameters=_described(
            _PARAMETERS, "Provenance: modelport.sha256, modelport.version, meta.KEY, ..."
        ),
    ),
    "RequestInput": _object(
        ["name", "shape", "datatype"],
        name=STRING,
        shape=_array(COUNT, maxItems=MAX_RANK),
        datatype={"type": "string", "enum": sorted(DATATYPES)},
        parameters=_described(
            _PARAMETERS,
            "binary_data_size (integer): the input's bytes follow the JSON part of the body "
            "(binary tensor data extension) and it has no data.",
        ),
        data=_TENSOR_DATA,
    ),
    "RequestOutput": _object(
        ["name"],
        name=STRING,
        parameters=_described(_PARAMETERS, "binary_data (boolean): answer it as binary."),
    ),
    "InferenceRequest": _object(
        ["inputs"],
        id=_described(STRING, "Echoed as the response's id."),
        parameters=_described(
            _PARAMETERS, "binary_data_output (boolean): answer every output as binary."
        ),
        inputs=_array(ref("RequestInput")),
        outputs=_array(
            ref("RequestOutput"),
            description="The outputs to answer with; absent or empty: all of them.",
        ),
    ),
    "ResponseOutput": _object(
        ["name", "shape", "datatype"],
        name=STRING,
        shape=_array(COUNT),
        datatype=STRING,
        parameters=_described(
            _PARAMETERS, "binary_data_size: the output's bytes follow the JSON part."
        ),
        data=_described(_TENSOR_DATA, "Flat, row-major; absent for a binary output."),
    ),
    "InferenceResponse": _object(
        ["model_name", "model_version", "id", "outputs"],
        model_name=STRING,
        model_version=STRING,
        id=_described(STRING, "The request's id, else the request id."),
        parameters=_described(
            _PARAMETERS, "Provenance: modelport.sha256 and modelport.request_id."
        ),
        outputs=_array(ref("ResponseOutput")),
    ),
    "DriftReport": _object(
        ["model", "version", "status", "features"],
        model=STRING,
        version=STRING,
        status=_STATUS,
        window=COUNT,
        window_size=COUNT,
        min_rows=COUNT,
        observed=COUNT,
        reference_rows=COUNT,
        features=_array(_DRIFT_FEATURE),
    ),
    "FeedbackRequest": _object(
        ["request_ids", "labels"],
        request_ids=_array(
            {"type": "string", "minLength": 1},
            minItems=1,
            description="The ids the predictions were answered with (x-request-id or "
            "parameters.modelport.request_id); at most 10000.",
        ),
        labels=_array({}, minItems=1, description="The true labels, in request_ids order."),
    ),
    "FeedbackResponse": _object(
        ["model", "received", "matched", "versions"],
        model=STRING,
        received=COUNT,
        matched=COUNT,
        versions={
            "type": "object",
            "additionalProperties": _SCORE,
            "description": "Per version number: accuracy (classification) or mae (regression).",
        },
    ),
    "RepositoryIndexRequest": _object(
        [], ready={"type": "boolean", "description": "true: only versions that are loaded."}
    ),
    "RepositoryIndexEntry": _object(
        ["name", "state"],
        name=STRING,
        version=STRING,
        state={"type": "string", "enum": ["READY", "UNAVAILABLE"]},
        reason=STRING,
    ),
    "RepositoryModelRequest": _object(
        [],
        parameters={
            "type": "object",
            "properties": {
                "version": {
                    "type": ["string", "integer"],
                    "description": "The version to act on (default: newest, or every loaded).",
                }
            },
            "additionalProperties": _SCALAR,
        },
    ),
    "LoadResponse": _object(
        ["name", "version", "load"], name=STRING, version=STRING, load={"const": True}
    ),
    "UnloadResponse": _object(
        ["name", "versions", "unload"],
        name=STRING,
        versions=_array(STRING),
        unload={"const": True},
    ),
}
"""Component schemas by name."""
