"""TensorFlow Serving's REST API (and KServe v1, its `:predict` subset) on the dataplane.

Paths: `/v1/models/NAME`, `/v1/models/NAME/versions/V` and `/v1/models/NAME/labels/LABEL`
(registry aliases are TF Serving labels); GET on each gives the version status, GET on
`.../metadata` the signature, POST on `...:predict` an inference in the row or columnar format
(`rest_instances`). `:classify`, `:regress` and `:explain` answer 501. Errors are TF Serving's
`{"error": "..."}`; the version and artifact digest ride in `x-model-version` and
`x-model-sha256`, since the body has no place for them.

A predict body is decoded by its Content-Type in one table, `BODY_DECODERS`: JSON (the row and
columnar formats), CSV rows and Avro container files of records (as on /invocations,
`rest_tables`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from modelport.errors import InvalidInput, ModelportError, NotFound, Unsupported
from modelport.protocol.types import InferRequest, InferResponse
from modelport.registry.manifest import ModelVersion
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.serving.record_mapping import RecordMapping
from modelport.transports.rest_instances import (
    columnar_outputs,
    mapping_for,
    predict_request,
    predictions,
)
from modelport.transports.rest_request import JSON, Request, Response, provenance_headers
from modelport.transports.rest_tables import (
    AVRO_TYPE,
    CSV_TYPE,
    JSON_TYPE,
    Tables,
    accepted,
    predictions_avro,
    predictions_csv,
)
from modelport.transports.routes import Handler, Route

PROTOCOL: Final = "tfserving"
SIGNATURE: Final = "serving_default"
"""The one signature each model offers (TF Serving's default name)."""
_MODEL: Final = "/v1/models/{model_name}"
_PLACES: Final = (
    _MODEL,
    f"{_MODEL}/versions/{{model_version}}",
    f"{_MODEL}/labels/{{model_label}}",
)
_DUMP: Final = orjson.OPT_SERIALIZE_NUMPY
_INSTEAD: Final = {
    "classify": "use :predict, whose answer holds the model's outputs (labels and scores)",
    "regress": "use :predict, whose answer holds the model's outputs",
    "explain": "use :predict; modelport serves no explainers",
}
_DT: Final = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BF16": "DT_BFLOAT16",
    "BYTES": "DT_STRING",
}
"""OIP datatypes as TensorFlow's DataType names."""

Answer = Callable[[InferResponse], Response]
"""Encodes the dataplane's response in the format the request came in."""
BodyDecoder = Callable[[bytes, RecordMapping, Request], tuple[InferRequest, Answer]]
"""A predict body of one Content-Type: the inference request, and how to answer it."""


def error_body(exc: ModelportError, status: int) -> bytes:
    """TF Serving's error body: `{"error": "<message>"}`."""
    return orjson.dumps({"error": exc.message})


def json_body(body: bytes, mapping: RecordMapping, request: Request) -> tuple[InferRequest, Answer]:
    """A JSON predict body: the row or the columnar format, answered in the same one."""
    document = _json(body)
    signature = document.get("signature_name")
    if signature not in (None, "", SIGNATURE):
        raise InvalidInput(
            f"signature_name {signature!r} does not exist; model {mapping.version.name!r} "
            f"has one signature, {SIGNATURE!r}"
        )
    infer, columnar = predict_request(document, mapping)
    if columnar:
        return infer, lambda r: _json_answer(r, {"outputs": columnar_outputs(r)})
    return infer, lambda r: _json_answer(r, {"predictions": predictions(r)})


_TABLES: Final = Tables()
_CSV: Final = (b"content-type", b"text/csv; charset=utf-8")
_AVRO: Final = (b"content-type", AVRO_TYPE.encode())


def csv_body(body: bytes, mapping: RecordMapping, request: Request) -> tuple[InferRequest, Answer]:
    """A CSV predict body (rows, with or without a header line): a CSV answer unless Accept
    asks for JSON or Avro."""
    version = mapping.version
    return _TABLES.csv_request(body, version), lambda r: _table_answer(
        r, version, request, CSV_TYPE
    )


def avro_body(body: bytes, mapping: RecordMapping, request: Request) -> tuple[InferRequest, Answer]:
    """An Avro object container file of records: a JSON answer unless Accept asks for Avro
    or CSV."""
    version = mapping.version
    infer = _TABLES.avro_request(body, version)
    return infer, lambda r: _table_answer(r, version, request, JSON_TYPE)


def _table_answer(
    response: InferResponse, version: ModelVersion, request: Request, default: str
) -> Response:
    answer = accepted(request.accept, (JSON_TYPE, CSV_TYPE, AVRO_TYPE)) or default
    headers = provenance_headers(response)
    if answer == CSV_TYPE:
        return 200, [_CSV, *headers], predictions_csv(response)
    if answer == AVRO_TYPE:
        return 200, [_AVRO, *headers], predictions_avro(response, version)
    return _json_answer(response, {"predictions": predictions(response)})


BODY_DECODERS: Final[dict[bytes, BodyDecoder]] = {
    b"application/json": json_body,
    # What `curl -d` labels any body, as in TF Serving's own examples (which it reads as JSON).
    b"application/x-www-form-urlencoded": json_body,
    CSV_TYPE.encode(): csv_body,
    AVRO_TYPE.encode(): avro_body,
}
"""Predict body decoders by media type (without parameters); no Content-Type means JSON."""


class TfServingEndpoints:
    """Model status, metadata and predict under /v1/models, as TF Serving answers them."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    def routes(self) -> list[Route]:
        """The table rows of TF Serving's REST API."""
        routes: list[Route] = []
        for place in _PLACES:
            routes += [
                _route("GET", place, Endpoint.READY, Action.METADATA, self.status),
                _route("POST", place, Endpoint.INFER, Action.INFER, self.predict),
                _route("GET", f"{place}/metadata", Endpoint.METADATA, Action.METADATA, self.meta),
            ]
        return routes

    async def status(self, request: Request) -> Response:
        """The state of each loaded version (or of the one named): TF Serving's model status."""
        name, version = _target(request, verb=False)
        model = await self._dp.resolve(name, version)
        models = [model] if version is not None else self._dp.lifecycle.catalog.versions(name)
        return _ok(
            {
                "model_version_status": [
                    {
                        "version": str(m.number),
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                    for m in models
                ]
            }
        )

    async def meta(self, request: Request) -> Response:
        """The model spec and its one signature_def, from the registry signature."""
        name, version = _target(request, verb=False)
        model = await self._dp.resolve(name, version)
        signature = model.version.signature
        return _ok(
            {
                "model_spec": {
                    "name": model.name,
                    "signature_name": "",
                    "version": str(model.number),
                },
                "metadata": {
                    "signature_def": {
                        "signature_def": {
                            SIGNATURE: {
                                "inputs": {s.name: _tensor_info(s) for s in signature.inputs},
                                "outputs": {s.name: _tensor_info(s) for s in signature.outputs},
                                "method_name": "tensorflow/serving/predict",
                            }
                        }
                    }
                },
            }
        )

    async def predict(self, request: Request) -> Response:
        """`...:predict`: one inference in the row or columnar format."""
        name, version = _target(request, verb=True)
        self._dp.shed(name, version)
        model = await self._dp.resolve(name, version)
        decoder = _decoder(request.content_type)
        body = await request.body()
        infer, answer = decoder(body, mapping_for(model.version), request)
        response = await self._dp.infer(name, version, infer, request.request_id, request.call)
        return answer(response)


def _route(method: str, path: str, endpoint: Endpoint, action: Action, handler: Handler) -> Route:
    return Route(method, path, endpoint, action, handler, protocol=PROTOCOL, error_body=error_body)


def _target(request: Request, *, verb: bool) -> tuple[str, str | None]:
    """The model and version (or label) the path names; for POST, checks the `:verb`."""
    params = request.params
    name = params["model_name"]
    last = "model_name"
    for key in ("model_version", "model_label"):
        if key in params:
            last = key
    version = None if last == "model_name" else params[last]
    head, colon, action = params[last].rpartition(":")
    if verb:
        if not colon:
            raise NotFound(
                f"POST {request.scope['path']!r} names no method; add :predict to the path"
            )
        if action in _INSTEAD:
            raise Unsupported(f":{action} is not offered; {_INSTEAD[action]}")
        if action != "predict":
            raise NotFound(f"unknown method :{action}; use :predict")
        if last == "model_name":
            name = head
        else:
            version = head
    elif colon and action:
        raise InvalidInput(f"GET takes no :{action} method; POST to :{action} instead")
    if last == "model_version" and version is not None and not version.isdigit():
        raise InvalidInput(
            f"version {version!r} is not a version number; name a label with "
            f"/v1/models/{name}/labels/{version}"
        )
    return name, version


def _decoder(content_type: bytes | None) -> BodyDecoder:
    if content_type is None:
        return json_body
    media = content_type.partition(b";")[0].strip().lower()
    decoder = BODY_DECODERS.get(media)
    if decoder is None:
        known = ", ".join(m.decode() for m in BODY_DECODERS)
        raise Unsupported(
            f"Content-Type {media.decode('latin-1')!r} is not accepted on :predict; send {known}"
        )
    return decoder


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the predict request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(
            'the predict request body must be a JSON object with "instances" or "inputs"'
        )
    return value


def _json_answer(response: InferResponse, value: dict[str, Any]) -> Response:
    return 200, [JSON, *provenance_headers(response)], orjson.dumps(value, option=_DUMP)


def _ok(value: dict[str, Any]) -> Response:
    return 200, [JSON], orjson.dumps(value)


def _tensor_info(spec: Any) -> dict[str, Any]:
    return {
        "dtype": _DT.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": spec.name,
    }
