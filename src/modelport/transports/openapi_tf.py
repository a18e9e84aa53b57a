"""The OpenAPI description of the row-format protocols: TF Serving / KServe v1, Vertex AI, Azure ML.

Vertex AI's and Azure ML's routes are described at their defaults (`config.ProtocolSettings`).

`PATHS`, `SCHEMAS`, `RESPONSES` and `PARAMETERS` are merged into the document by `openapi`.
Their errors are the protocols' own `{"error": "..."}` (the `MessageError` responses), with
the status codes of the error table.
"""

from __future__ import annotations

from typing import Any, Final

from modelport.transports.openapi_schemas import COUNT, STRING, Schema, ref

_ERRORS: Final[dict[str, str]] = {
    "400": "The body is malformed or does not fit the model's signature.",
    "401": "No valid credential (the server runs with --require-auth).",
    "403": "The credential lacks the scope this endpoint needs.",
    "404": "Unknown model, version or label, or unknown method after the colon.",
    "413": "The request body (after decompression) is larger than the server accepts.",
    "429": "Too many requests; retry later.",
    "500": "A genuine fault; the server log has details under the x-request-id.",
    "501": "Not offered (:classify, :regress, :explain, a body format the server lacks).",
    "503": "Not ready (the model is loading or failed to load), or overloaded.",
    "504": "The request ran past its deadline.",
}
_COMMON: Final = ("400", "500", "503", "504")
_GUARDED: Final = ("401", "403", "429")
_REQUEST_ID: Final[Schema] = {"$ref": "#/components/headers/RequestId"}
_PROVENANCE: Final[dict[str, Schema]] = {
    "x-request-id": _REQUEST_ID,
    "x-model-version": {
        "description": "The model version that answered.",
        "required": True,
        "schema": STRING,
    },
    "x-model-sha256": {
        "description": "The SHA-256 digest of that version's artifact.",
        "required": True,
        "schema": STRING,
    },
}

_ANY: Final[Schema] = {}
_VALUES: Final[Schema] = {"type": "array"}
_STATUS_ENTRY: Final[Schema] = {
    "type": "object",
    "required": ["version", "state", "status"],
    "properties": {
        "version": STRING,
        "state": STRING,
        "status": {
            "type": "object",
            "properties": {"error_code": STRING, "error_message": STRING},
        },
    },
}
SCHEMAS: Final[dict[str, Schema]] = {
    "MessageError": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "What went wrong and how to fix it."}
        },
    },
    "TfModelStatus": {
        "type": "object",
        "required": ["model_version_status"],
        "properties": {"model_version_status": {"type": "array", "items": _STATUS_ENTRY}},
    },
    "TfModelMetadata": {
        "type": "object",
        "required": ["model_spec", "metadata"],
        "properties": {
            "model_spec": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": STRING, "signature_name": STRING, "version": STRING},
            },
            "metadata": {"type": "object"},
        },
    },
    "TfPredictRequest": {
        "type": "object",
        "description": 'The row format ("instances": one entry per row) or the columnar '
        'format ("inputs": a tensor, or an object of tensors by input name). BYTES values '
        'may be {"b64": "<base64>"}.',
        "properties": {
            "signature_name": STRING,
            "instances": _VALUES,
            "inputs": _ANY,
        },
    },
    "TfPredictResponse": {
        "type": "object",
        "description": '"predictions" for the row format (per row: the single output, or an '
        'object by output name); "outputs" for the columnar format.',
        "properties": {"predictions": _VALUES, "outputs": _ANY},
    },
}

RESPONSES: Final[dict[str, Schema]] = {
    f"MessageError{code}": {
        "description": description,
        "headers": {
            "x-request-id": _REQUEST_ID,
            "Retry-After": {
                "description": "Seconds to wait before retrying (overloaded, rate limited).",
                "schema": COUNT,
            },
        },
        "content": {"application/json": {"schema": ref("MessageError")}},
    }
    for code, description in _ERRORS.items()
}

PARAMETERS: Final[dict[str, Schema]] = {
    "TfModelName": {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": STRING,
        "example": "iris",
    },
    "TfModelNameVerb": {
        "name": "model_name",
        "in": "path",
        "required": True,
        "description": "The model name and the method: NAME:predict.",
        "schema": STRING,
        "example": "iris:predict",
    },
    "TfModelVersion": {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": STRING,
        "example": "1",
    },
    "TfModelVersionVerb": {
        "name": "model_version",
        "in": "path",
        "required": True,
        "description": "The version number and the method: V:predict.",
        "schema": STRING,
        "example": "1:predict",
    },
    "TfModelLabel": {
        "name": "model_label",
        "in": "path",
        "required": True,
        "description": "A label: a registry alias.",
        "schema": STRING,
        "example": "stable",
    },
    "TfModelLabelVerb": {
        "name": "model_label",
        "in": "path",
        "required": True,
        "description": "A label (a registry alias) and the method: LABEL:predict.",
        "schema": STRING,
        "example": "stable:predict",
    },
}


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    ok: Schema,
    *,
    scope: str | None,
    errors: tuple[str, ...] = (),
    path: tuple[str, ...] = (),
    body: Schema | None = None,
    example: Any = None,
    headers: dict[str, Schema] | None = None,
) -> Schema:
    """One operation answering JSON, with `MessageError` errors; `scope` None: open."""
    if scope is None:
        access = "Open to everyone, even with --require-auth."
        codes = {*_COMMON, *errors}
    else:
        access = f"Needs the `{scope}` scope when the server runs with --require-auth."
        codes = {*_COMMON, *_GUARDED, *errors}
    result: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{summary} {access}",
        "parameters": [
            {"$ref": f"#/components/parameters/{name}"} for name in (*path, "RequestId")
        ],
        "responses": {
            "200": {
                "description": "The answer.",
                "headers": headers or {"x-request-id": _REQUEST_ID},
                "content": {"application/json": {"schema": ok}},
            },
            **{c: {"$ref": f"#/components/responses/MessageError{c}"} for c in sorted(codes)},
        },
    }
    if scope is None:
        result["security"] = []
    if body is not None:
        media: Schema = {"schema": body}
        if example is not None:
            media["example"] = example
        result["requestBody"] = {"required": True, "content": {"application/json": media}}
    return result


_IRIS_ROWS: Final = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
_PLACES: Final = (
    ("", "/v1/models/{model_name}", ("TfModelName",), ("TfModelNameVerb",)),
    (
        "Version",
        "/v1/models/{model_name}/versions/{model_version}",
        ("TfModelName", "TfModelVersion"),
        ("TfModelName", "TfModelVersionVerb"),
    ),
    (
        "Label",
        "/v1/models/{model_name}/labels/{model_label}",
        ("TfModelName", "TfModelLabel"),
        ("TfModelName", "TfModelLabelVerb"),
    ),
)


def _tf_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for infix, place, names, verbs in _PLACES:
        paths[place] = {
            "get": operation(
                f"tfServingStatus{infix}",
                "tfserving",
                "TF Serving model status: each loaded version, AVAILABLE.",
                ref("TfModelStatus"),
                scope="metadata",
                errors=("404",),
                path=names,
            ),
            "post": operation(
                f"tfServingPredict{infix}",
                "tfserving",
                "TF Serving / KServe v1 predict (the path ends in :predict; :classify, "
                ":regress and :explain answer 501).",
                ref("TfPredictResponse"),
                scope="infer",
                errors=("404", "413", "501"),
                path=verbs,
                body=ref("TfPredictRequest"),
                example=_IRIS_ROWS,
                headers=_PROVENANCE,
            ),
        }
        paths[f"{place}/metadata"] = {
            "get": operation(
                f"tfServingMetadata{infix}",
                "tfserving",
                "TF Serving model metadata: the model spec and its signature_def.",
                ref("TfModelMetadata"),
                scope="metadata",
                errors=("404",),
                path=names,
            )
        }
    return paths


_VERTEX_PREDICT: Final = operation(
    "vertexPredict",
    "vertex",
    'Vertex AI prediction: {"instances": [...], "parameters": {...}} in, predictions and the '
    "deployed model's ids out. Answered at $AIP_PREDICT_ROUTE when set (by the only model "
    "served, or vertex_model).",
    ref("VertexPredictResponse"),
    scope="infer",
    errors=("404", "413"),
    body=ref("VertexPredictRequest"),
    example=_IRIS_ROWS,
    headers=_PROVENANCE,
)
_VERTEX: Final[dict[str, Schema]] = {
    "/vertex/health": {
        "get": operation(
            "vertexHealth",
            "vertex",
            "Vertex AI health check ($AIP_HEALTH_ROUTE when set): 200 once the models are loaded.",
            {"type": "object"},
            scope=None,
        )
    },
    "/vertex/predict": {"post": _VERTEX_PREDICT},
    "/vertex/models/{model_name}": {
        "post": {
            **_VERTEX_PREDICT,
            "operationId": "vertexPredictNamed",
            "summary": "Vertex AI prediction by the model named in the path (NAME:predict).",
            "description": "Vertex AI prediction by the model named in the path "
            "(NAME:predict). Needs the `infer` scope when the server runs with --require-auth.",
            "parameters": [
                {"$ref": "#/components/parameters/TfModelNameVerb"},
                {"$ref": "#/components/parameters/RequestId"},
            ],
        }
    },
}
SCHEMAS["VertexPredictRequest"] = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": _VALUES, "parameters": {"type": "object"}},
}
SCHEMAS["VertexPredictResponse"] = {
    "type": "object",
    "required": ["predictions", "deployedModelId", "model", "modelDisplayName", "modelVersionId"],
    "properties": {
        "predictions": _VALUES,
        "deployedModelId": STRING,
        "model": STRING,
        "modelDisplayName": STRING,
        "modelVersionId": STRING,
    },
}

_DEPLOYMENT: Final[Schema] = {
    "name": "azureml-model-deployment",
    "in": "header",
    "description": "Azure ML's deployment header; when it names a model served here, that "
    "model answers.",
    "schema": STRING,
}
PARAMETERS["AzureDeployment"] = _DEPLOYMENT
SCHEMAS["AzureScoringRequest"] = {
    "type": "object",
    "description": '"input_data": the split orientation {"columns", "index", "data"}, a list '
    'of records or rows, or tensors by input name; or "instances" (a list of rows). '
    '"params": parameters of the inference request.',
    "properties": {
        "input_data": {"type": ["object", "array"]},
        "instances": _VALUES,
        "params": {"type": "object"},
    },
}
SCHEMAS["AzureScoringResponse"] = {
    "description": 'One prediction per row (a list) for "input_data"; {"predictions": [...]} '
    'for "instances".',
    "type": ["array", "object"],
}
_AZURE_SCORE: Final = operation(
    "azureScore",
    "azureml",
    "Azure ML scoring (the deployment's scoring_route, azure_scoring_route): by the model the "
    "azureml-model-deployment header names, else azure_model, else the only one served.",
    ref("AzureScoringResponse"),
    scope="infer",
    errors=("404", "413"),
    body=ref("AzureScoringRequest"),
    example={
        "input_data": {
            "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            "index": [0],
            "data": [[5.1, 3.5, 1.4, 0.2]],
        }
    },
    headers=_PROVENANCE,
)
_AZURE_SCORE["parameters"].insert(0, {"$ref": "#/components/parameters/AzureDeployment"})
SCHEMAS["AzureLive"] = {
    "type": "object",
    "required": ["live"],
    "properties": {"live": {"const": True}},
}
SCHEMAS["AzureReady"] = {
    "type": "object",
    "required": ["ready"],
    "properties": {"ready": {"const": True}},
}
_AZURE: Final[dict[str, Schema]] = {
    "/score": {"post": _AZURE_SCORE},
    "/": {
        "get": operation(
            "azureLive",
            "azureml",
            "Azure ML liveness probe (azure_liveness_route): the process answers.",
            ref("AzureLive"),
            scope=None,
        )
    },
    "/ready": {
        "get": operation(
            "azureReady",
            "azureml",
            "Azure ML readiness probe (azure_readiness_route): 200 once the models are loaded.",
            ref("AzureReady"),
            scope=None,
        )
    },
}

PATHS: Final[dict[str, Schema]] = {**_tf_paths(), **_VERTEX, **_AZURE}
TAGS: Final = ("tfserving", "vertex", "azureml")
