"""The OpenAPI paths of MLflow's scoring protocol and SageMaker's container contract.

Pure data, merged into the document by `transports.openapi`. Errors on these paths have
MLflow's body, `{"error_code": "BAD_REQUEST", "message": "..."}` (`rest_invocations`).
"""

from __future__ import annotations

from typing import Final

from modelport.transports.openapi_schemas import STRING, Schema

_REQUEST_ID: Final[Schema] = {"$ref": "#/components/headers/RequestId"}
ERROR: Final[Schema] = {
    "description": "MLflow's error body.",
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {
        "error_code": {
            "type": "string",
            "description": "MLflow's error code: BAD_REQUEST, RESOURCE_DOES_NOT_EXIST, "
            "TEMPORARILY_UNAVAILABLE, NOT_IMPLEMENTED, ...",
        },
        "message": {"type": "string", "description": "What went wrong and how to fix it."},
    },
}
_DESCRIPTIONS: Final[dict[str, str]] = {
    "400": "The request is malformed or does not fit the model.",
    "401": "No valid credential (the server runs with --require-auth).",
    "403": "The credential lacks the scope this endpoint needs.",
    "404": "Unknown model, or a model that is not loaded.",
    "409": "The model is already loaded.",
    "413": "The request body is larger than the server accepts.",
    "429": "Too many requests; retry later.",
    "500": "A genuine fault; the server log has details under the x-request-id.",
    "501": "Not offered here (e.g. Avro bodies without the avro extra).",
    "503": "Not ready, or overloaded (see Retry-After).",
    "504": "The request ran past its deadline.",
}
_OPEN: Final = ("400", "500", "503", "504")
_GUARDED: Final = (*_OPEN, "401", "403", "429")
_PROVENANCE: Final[Schema] = {
    "x-request-id": _REQUEST_ID,
    "x-model-version": {"description": "The version that answered.", "schema": STRING},
    "x-model-sha256": {"description": "The sha256 digest of its artifact.", "schema": STRING},
}
_BINARY: Final[Schema] = {"type": "string", "format": "binary"}
_PREDICTIONS: Final[Schema] = {
    "type": "object",
    "required": ["predictions"],
    "properties": {
        "predictions": {
            "type": "array",
            "description": "One entry per row: the output's value when the model answers one "
            "output, else an object of every output's value.",
        }
    },
}
_FORMS: Final[Schema] = {
    "type": "object",
    "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs "
    "(instances and inputs are TF Serving's row and columnar formats); params are passed as "
    "request parameters.",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "columns": {"type": "array", "items": STRING},
                "data": {"type": "array", "items": {"type": "array"}},
                "index": {"type": "array"},
            },
        },
        "dataframe_records": {"type": "array", "items": {"type": "object"}},
        "instances": {"type": "array"},
        "inputs": {},
        "params": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
    },
}
_IRIS: Final = {
    "dataframe_split": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        "data": [[5.1, 3.5, 1.4, 0.2]],
    }
}
_TARGET: Final[Schema] = {
    "name": "X-Amzn-SageMaker-Target-Model",
    "in": "header",
    "description": "The model that answers (a trailing .tar.gz is dropped); needed when the "
    "server serves several models.",
    "schema": STRING,
}
_MODEL_NAME: Final[Schema] = {"$ref": "#/components/parameters/ModelName"}
_REQUEST_ID_PARAMETER: Final[Schema] = {"$ref": "#/components/parameters/RequestId"}
_ENTRY: Final[Schema] = {
    "type": "object",
    "required": ["modelName", "modelUrl"],
    "properties": {"modelName": STRING, "modelUrl": STRING},
}


def _errors(codes: tuple[str, ...]) -> dict[str, Schema]:
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "headers": {"x-request-id": _REQUEST_ID},
            "content": {"application/json": {"schema": ERROR}},
        }
        for code in sorted(set(codes))
    }


def _ok(description: str, content: dict[str, Schema], headers: Schema | None = None) -> Schema:
    return {
        "200": {
            "description": description,
            "headers": headers or {"x-request-id": _REQUEST_ID},
            "content": content,
        }
    }


def _operation(
    operation_id: str,
    summary: str,
    ok: Schema,
    *,
    scope: str | None,
    errors: tuple[str, ...] = (),
    parameters: tuple[Schema, ...] = (),
    body: Schema | None = None,
) -> Schema:
    if scope is None:
        access = "Open to everyone, even with --require-auth."
    else:
        access = f"Needs the `{scope}` scope when the server runs with --require-auth."
    operation: Schema = {
        "operationId": operation_id,
        "tags": ["mlflow-sagemaker"],
        "summary": summary,
        "description": f"{summary} {access}",
        "parameters": [*parameters, _REQUEST_ID_PARAMETER],
        "responses": {**ok, **_errors((*(_OPEN if scope is None else _GUARDED), *errors))},
    }
    if scope is None:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    return operation


def _invoke(operation_id: str, parameters: tuple[Schema, ...]) -> Schema:
    return _operation(
        operation_id,
        "Predict on rows: MLflow's JSON forms, CSV (a header line optional) or an Avro object "
        "container file; answered in JSON, CSV or Avro by Accept.",
        _ok(
            "The predictions (CSV: one line per row; Avro: one answer record per row).",
            {
                "application/json": {"schema": _PREDICTIONS},
                "text/csv": {"schema": STRING},
                "application/avro": {"schema": _BINARY},
            },
            _PROVENANCE,
        ),
        scope="infer",
        errors=("404", "413", "501"),
        parameters=parameters,
        body={
            "application/json": {"schema": _FORMS, "example": _IRIS},
            "text/csv": {"schema": STRING, "example": "5.1,3.5,1.4,0.2\n"},
            "application/avro": {"schema": _BINARY},
        },
    )


PATHS: Final[dict[str, Schema]] = {
    "/ping": {
        "get": _operation(
            "ping",
            "SageMaker's and MLflow's health check: 200 once the start-up models are loaded.",
            _ok("Ready.", {"application/json": {"schema": {"type": "object"}}}),
            scope=None,
        )
    },
    "/invocations": {"post": _invoke("invocations", (_TARGET,))},
    "/models": {
        "get": _operation(
            "sagemakerListModels",
            "SageMaker multi-model: the loaded models.",
            _ok(
                "The loaded models.",
                {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["models"],
                            "properties": {"models": {"type": "array", "items": _ENTRY}},
                        }
                    }
                },
            ),
            scope="metadata",
        ),
        "post": _operation(
            "sagemakerLoadModel",
            "SageMaker multi-model: make the registry's model `model_name` ready (the url is "
            "kept and shown back, not fetched).",
            _ok("Loaded.", {"application/json": {"schema": _ENTRY}}),
            scope="admin",
            errors=("404", "409", "413", "501"),
            body={
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["model_name"],
                        "properties": {"model_name": STRING, "url": STRING},
                    },
                    "example": {"model_name": "iris", "url": "/opt/ml/models/iris/model"},
                }
            },
        ),
    },
    "/models/{model_name}": {
        "get": _operation(
            "sagemakerGetModel",
            "SageMaker multi-model: one loaded model.",
            _ok("The model.", {"application/json": {"schema": _ENTRY}}),
            scope="metadata",
            errors=("404",),
            parameters=(_MODEL_NAME,),
        ),
        "delete": _operation(
            "sagemakerUnloadModel",
            "SageMaker multi-model: unload every loaded version of the model.",
            _ok("Unloaded.", {"application/json": {"schema": {"type": "object"}}}),
            scope="admin",
            errors=("404", "501"),
            parameters=(_MODEL_NAME,),
        ),
    },
    "/models/{model_name}/invoke": {
        "post": _invoke("sagemakerInvokeModel", (_MODEL_NAME, _TARGET)),
    },
}
"""The paths of rest_invocations, for the OpenAPI document."""
