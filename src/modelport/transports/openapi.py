"""The OpenAPI 3.1 description of the REST API.

Pure data, built once at import: `OPENAPI` is the JSON document served at /openapi.json;
`openapi_document()` gives a fresh copy of the document to read or adjust (tests, tools). The
body shapes live in `openapi_schemas`; the page at /docs that renders it lives in `swagger_ui`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

import orjson

from modelport._version import __version__
from modelport.transports import openapi_tf
from modelport.transports.openapi_invocations import PATHS as INVOCATIONS_PATHS
from modelport.transports.openapi_schemas import COUNT, REQUEST_ID, SCHEMAS, STRING, Schema, ref

HEADER_LENGTH: Final = "Inference-Header-Content-Length"

_ERRORS: Final[dict[str, str]] = {
    "400": "The request is malformed or does not fit the model (code invalid_input), or the "
    "artifact is not trusted (untrusted_artifact).",
    "401": "No valid credential (the server runs with --require-auth).",
    "403": "The credential lacks the scope this endpoint needs.",
    "404": "Unknown model, version or alias, a version an operator unloaded, or the feature is "
    "off on this server.",
    "409": "The action contradicts the current state.",
    "413": "The request body (after decompression) is larger than the server accepts.",
    "429": "Too many requests; retry later.",
    "500": "A genuine fault; the server log has details under the x-request-id.",
    "501": "The server does not offer this feature.",
    "503": "Not ready (model or server still loading, or the model failed to load), or "
    "overloaded (see Retry-After).",
    "504": "The request ran past its deadline.",
}
# Any request may be malformed, shed, late or meet a genuine fault; every one but the open
# ones (health) may also meet authentication and rate limits.
_COMMON: Final = ("400", "500", "503", "504")
_GUARDED: Final = ("401", "403", "429")
_MODEL: Final = ("404",)
_BODY: Final = ("413",)

_REQUEST_ID_HEADER: Final[Schema] = {"$ref": "#/components/headers/RequestId"}
_RESPONSES: Final[dict[str, Schema]] = {
    f"Error{code}": {
        "description": description,
        "headers": {
            "x-request-id": _REQUEST_ID_HEADER,
            "Retry-After": {
                "description": "Seconds to wait before retrying (overloaded, rate limited).",
                "schema": COUNT,
            },
        },
        "content": {"application/json": {"schema": ref("Error")}},
    }
    for code, description in _ERRORS.items()
}

_PARAMETERS: Final[dict[str, Schema]] = {
    "ModelName": {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": STRING,
        "example": "iris",
    },
    "ModelVersion": {
        "name": "model_version",
        "in": "path",
        "required": True,
        "description": "A version number or an alias name.",
        "schema": STRING,
        "example": "1",
    },
    "RequestId": {
        "name": "x-request-id",
        "in": "header",
        "description": "Names the request in the response, logs and traces (else a new id).",
        "schema": REQUEST_ID,
    },
    "ContentEncoding": {
        "name": "Content-Encoding",
        "in": "header",
        "description": "The body is compressed (tritonclient's request compression).",
        "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]},
    },
    "HeaderLength": {
        "name": HEADER_LENGTH,
        "in": "header",
        "description": "Binary tensor data extension: the byte length of the JSON part at the "
        "start of the body; the inputs' raw bytes follow it. (0, a body without a JSON part, "
        "is not offered: 501.)",
        "schema": {"type": "integer", "minimum": 1},
    },
}


def _ok(description: str, content: dict[str, Schema]) -> dict[str, Schema]:
    return {
        "200": {
            "description": description,
            "headers": {"x-request-id": _REQUEST_ID_HEADER},
            "content": content,
        }
    }


def _json(schema: Schema | str, example: Any = None) -> dict[str, Schema]:
    media: Schema = {"schema": ref(schema) if isinstance(schema, str) else schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


# What the demo's iris model takes: one row of four features.
_IRIS: Final = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    ok: dict[str, Schema],
    *,
    scope: str | None,
    errors: tuple[str, ...] = (),
    path: tuple[str, ...] = (),
    body: dict[str, Schema] | None = None,
    body_required: bool = False,
    headers: tuple[str, ...] = (),
) -> Schema:
    """One operation; `scope` is what --require-auth asks of it (None: open to everyone)."""
    if scope is None:
        access = "Open to everyone, even with --require-auth."
        codes = {*_COMMON, *errors}
    else:
        access = f"Needs the `{scope}` scope when the server runs with --require-auth."
        codes = {*_COMMON, *_GUARDED, *errors}
    operation: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{summary} {access}",
        "parameters": [
            {"$ref": f"#/components/parameters/{name}"} for name in (*path, "RequestId", *headers)
        ],
        "responses": {
            **ok,
            **{c: {"$ref": f"#/components/responses/Error{c}"} for c in sorted(codes)},
        },
    }
    if scope is None:
        operation["security"] = []
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": body}
    return operation


Make = Callable[[tuple[str, ...], str], Schema]


def _model_paths(suffix: str, make: Make) -> dict[str, Schema]:
    """The unversioned and versioned forms of a /v2/models/{model_name}... path."""
    versioned = ("ModelName", "ModelVersion")
    return {
        f"/v2/models/{{model_name}}{suffix}": make(("ModelName",), ""),
        f"/v2/models/{{model_name}}/versions/{{model_version}}{suffix}": make(versioned, "Version"),
    }


def _metadata(path: tuple[str, ...], infix: str) -> Schema:
    return {
        "get": _operation(
            f"model{infix}Metadata",
            "metadata",
            "Model metadata: inputs, outputs, versions and provenance.",
            _ok("The model's metadata.", _json("ModelMetadata")),
            scope="metadata",
            errors=_MODEL,
            path=path,
        )
    }


def _ready(path: tuple[str, ...], infix: str) -> Schema:
    return {
        "get": _operation(
            f"model{infix}Ready",
            "health",
            "Whether the model is loaded (200), unloaded by an operator (404), or loading, failed "
            "to load or not loaded (503).",
            _ok("The model is ready.", _json("ModelReady")),
            scope="metadata",
            errors=_MODEL,
            path=path,
        )
    }


def _infer(path: tuple[str, ...], infix: str) -> Schema:
    binary = {
        "type": "string",
        "format": "binary",
        "description": "The JSON part followed by the raw bytes of every tensor that declares "
        f"parameters.binary_data_size, in order; {HEADER_LENGTH} gives the JSON length.",
    }
    ok = _ok(
        "The outputs; binary ones follow the JSON part (application/octet-stream).",
        {**_json("InferenceResponse"), "application/octet-stream": {"schema": binary}},
    )
    ok["200"]["headers"][HEADER_LENGTH] = {
        "description": "Present when binary outputs follow the JSON part: its byte length.",
        "schema": COUNT,
    }
    return {
        "post": _operation(
            f"model{infix}Infer",
            "inference",
            "Run the model on the request's inputs.",
            ok,
            scope="infer",
            errors=(*_MODEL, *_BODY, "501"),
            path=path,
            body={
                **_json("InferenceRequest", _IRIS),
                "application/octet-stream": {"schema": binary},
            },
            body_required=True,
            headers=("ContentEncoding", "HeaderLength"),
        )
    }


def _drift(path: tuple[str, ...], infix: str) -> Schema:
    return {
        "get": _operation(
            f"model{infix}Drift",
            "monitoring",
            "Drift of this process's recent inputs from the version's reference profile.",
            _ok("The drift report.", _json("DriftReport")),
            scope="logs",
            errors=(*_MODEL, "501"),
            path=path,
        )
    }


def _repository(action: str, response: str) -> Schema:
    verb = action.capitalize()
    return {
        "post": _operation(
            f"repositoryModel{verb}",
            "repository",
            f"{verb} a model version (model repository extension).",
            _ok(f"The model was {action}ed.", _json(response)),
            scope="admin",
            errors=(*_MODEL, *_BODY, "409", "501"),
            path=("ModelName",),
            body=_json("RepositoryModelRequest", {"parameters": {"version": "1"}}),
            headers=("ContentEncoding",),
        )
    }


def _get(
    operation_id: str, tag: str, summary: str, ok: dict[str, Schema], scope: str | None
) -> Schema:
    return {"get": _operation(operation_id, tag, summary, ok, scope=scope)}


_PATHS: Final[dict[str, Schema]] = {
    "/v2": _get(
        "serverMetadata",
        "metadata",
        "Server name, version and the protocol extensions offered.",
        _ok("Server metadata.", _json("ServerMetadata")),
        "metadata",
    ),
    "/v2/health/live": _get(
        "serverLive", "health", "Liveness: the process answers.", _ok("Live.", _json("Live")), None
    ),
    "/v2/health/ready": _get(
        "serverReady",
        "health",
        "Readiness: the start-up models are loaded (503 until then).",
        _ok("Ready.", _json("Ready")),
        None,
    ),
    **_model_paths("", _metadata),
    **_model_paths("/ready", _ready),
    **_model_paths("/infer", _infer),
    **_model_paths("/drift", _drift),
    "/v2/models/{model_name}/feedback": {
        "post": _operation(
            "modelFeedback",
            "monitoring",
            "Record true labels for logged predictions; answers the live accuracy per version.",
            _ok("The labels were stored.", _json("FeedbackResponse")),
            scope="infer",
            errors=(*_MODEL, *_BODY, "501"),
            path=("ModelName",),
            body=_json("FeedbackRequest", {"request_ids": ["a1b2c3"], "labels": [0]}),
            body_required=True,
            headers=("ContentEncoding",),
        )
    },
    "/v2/repository/index": {
        "post": _operation(
            "repositoryIndex",
            "repository",
            "Every registered model: its loaded versions, or why nothing is loaded.",
            _ok("The index.", _json({"type": "array", "items": ref("RepositoryIndexEntry")})),
            scope="metadata",
            errors=_BODY,
            body=_json("RepositoryIndexRequest", {"ready": True}),
            headers=("ContentEncoding",),
        )
    },
    "/v2/repository/models/{model_name}/load": _repository("load", "LoadResponse"),
    "/v2/repository/models/{model_name}/unload": _repository("unload", "UnloadResponse"),
    "/metrics": {
        "get": _operation(
            "metrics",
            "monitoring",
            "Prometheus metrics in the text exposition format (404 when off or on another port).",
            _ok("The metrics.", {"text/plain": {"schema": STRING}}),
            scope="metrics",
            errors=("404",),
        )
    },
    "/openapi.json": _get(
        "openapi",
        "documentation",
        "This OpenAPI description.",
        _ok("The OpenAPI document.", _json({"type": "object"})),
        None,
    ),
    "/docs": _get(
        "docs",
        "documentation",
        "An interactive page for this API (Swagger UI, which the browser loads from a CDN).",
        _ok("The HTML page.", {"text/html": {"schema": STRING}}),
        None,
    ),
}

_TAGS: Final = (
    "health",
    "metadata",
    "inference",
    "monitoring",
    "repository",
    "documentation",
    "mlflow-sagemaker",
)
_DOCUMENT: Final[Schema] = {
    "openapi": "3.1.0",
    "info": {
        "title": "modelport",
        "version": __version__,
        "description": "The Open Inference Protocol (KServe v2) over REST, with the binary "
        "tensor data and model repository extensions, plus drift, feedback and Prometheus "
        'metrics. Every error is {"error": "<what to fix>", "code": "<kind>"}.',
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "tags": [{"name": name} for name in (*_TAGS, *openapi_tf.TAGS)],
    "paths": {**_PATHS, **openapi_tf.PATHS, **INVOCATIONS_PATHS},
    "components": {
        "schemas": {**SCHEMAS, **openapi_tf.SCHEMAS},
        "responses": {**_RESPONSES, **openapi_tf.RESPONSES},
        "parameters": {**_PARAMETERS, **openapi_tf.PARAMETERS},
        "headers": {
            "RequestId": {
                "description": "The request id: the client's x-request-id if safe, else new.",
                "required": True,
                "schema": REQUEST_ID,
            }
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`modelport keys create`) or a JWT.",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
    },
    # `{}`: a server without --require-auth takes anonymous requests.
    "security": [{"bearer": []}, {"apiKey": []}, {}],
}

OPENAPI: Final[bytes] = orjson.dumps(_DOCUMENT)
"""The OpenAPI document as served at /openapi.json."""


def openapi_document() -> dict[str, Any]:
    """A fresh, mutable copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
