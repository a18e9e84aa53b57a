"""MLflow's scoring protocol and SageMaker's container contract: `/ping`, `/invocations`, and
SageMaker's multi-model API under `/models`.

`/invocations` takes what `mlflow models serve` takes: a JSON object with one of
`dataframe_split`, `dataframe_records`, `instances` or `inputs` (and optional `params`), or a
`text/csv` body; and, beyond MLflow, an Avro object container file (`application/avro`). It
answers `{"predictions": ...}`, or CSV for a CSV body (JSON when `Accept: application/json`),
or Avro when `Accept: application/avro`. The provenance rides in `x-model-version` and
`x-model-sha256` headers. Errors have MLflow's body, `{"error_code": ..., "message": ...}`,
with the error table's status codes.

Which model answers: the `X-Amzn-SageMaker-Target-Model` header (SageMaker's TargetModel, a
trailing `.tar.gz` dropped), else the configured default, else the only model served.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from modelport.errors import (
    Conflict,
    ErrorKind,
    InvalidInput,
    ModelportError,
    NotFound,
    NotReady,
)
from modelport.protocol.types import InferRequest, Parameters
from modelport.registry.manifest import ModelVersion
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.transports.rest_instances import columnar_request, instances_request, mapping_for
from modelport.transports.rest_request import (
    JSON,
    Request,
    Response,
    json_response,
    provenance_headers,
)
from modelport.transports.rest_tables import (
    AVRO_TYPE,
    CSV_TYPE,
    JSON_TYPE,
    Tables,
    accepted,
    media_type,
    predictions_avro,
    predictions_csv,
    predictions_json,
)
from modelport.transports.routes import Handler, Route

TARGET_MODEL: Final = b"x-amzn-sagemaker-target-model"
_FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ANSWERS: Final = (JSON_TYPE, CSV_TYPE, AVRO_TYPE)
_PING: Final = orjson.dumps({"ready": True})
"""What /ping answers when ready (SageMaker reads only the status; MLflow sends a bare line
break as JSON, which is not JSON)."""
_MLFLOW: Final = "invocations"
"""The protocol label of MLflow's routes (SageMaker's multi-model ones are "sagemaker")."""
_CSV: Final = (b"content-type", b"text/csv; charset=utf-8")
_AVRO: Final = (b"content-type", AVRO_TYPE.encode())
_ERROR_CODES: Final[dict[ErrorKind, str]] = {
    ErrorKind.INVALID_INPUT: "BAD_REQUEST",
    ErrorKind.NOT_FOUND: "RESOURCE_DOES_NOT_EXIST",
    ErrorKind.NOT_READY: "TEMPORARILY_UNAVAILABLE",
    ErrorKind.OVERLOADED: "TEMPORARILY_UNAVAILABLE",
    ErrorKind.RATE_LIMITED: "REQUEST_LIMIT_EXCEEDED",
    ErrorKind.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorKind.FORBIDDEN: "PERMISSION_DENIED",
    ErrorKind.DEADLINE: "DEADLINE_EXCEEDED",
    ErrorKind.CONFLICT: "RESOURCE_CONFLICT",
    ErrorKind.UNTRUSTED_ARTIFACT: "BAD_REQUEST",
    ErrorKind.UNSUPPORTED: "NOT_IMPLEMENTED",
    ErrorKind.TOO_LARGE: "BAD_REQUEST",
    ErrorKind.INTERNAL: "INTERNAL_ERROR",
}
"""MLflow's error code for each kind (its ErrorCode names; the status stays the table's)."""


def mlflow_error(exc: ModelportError, status: int) -> bytes:
    """MLflow's error body: `{"error_code": "BAD_REQUEST", "message": "..."}`."""
    return orjson.dumps({"error_code": _ERROR_CODES[exc.kind], "message": exc.message})


class InvocationsEndpoints:
    """`/ping`, `/invocations` and SageMaker's multi-model API on the dataplane.

    `default_model` answers `/invocations` without a target-model header when the server
    serves several models (None: such a request is refused, naming them).
    """

    def __init__(self, dataplane: DataPlane, default_model: str | None = None) -> None:
        self._dp = dataplane
        self._default = default_model
        self._tables = Tables()
        self._urls: dict[str, str] = {}
        """The `url` each model was loaded with through POST /models, shown back by GET."""

    def routes(self) -> list[Route]:
        """The table rows: MLflow's and SageMaker's single-model routes, then multi-model."""
        one = "/models/{model_name}"
        return [
            _route("GET", "/ping", Endpoint.HEALTH, None, self.ping, _MLFLOW),
            _route("POST", "/invocations", Endpoint.INFER, Action.INFER, self.invoke, _MLFLOW),
            _route("GET", "/models", Endpoint.REPOSITORY, Action.METADATA, self.list_models),
            _route("POST", "/models", Endpoint.REPOSITORY, Action.ADMIN, self.load_model),
            _route("GET", one, Endpoint.REPOSITORY, Action.METADATA, self.get_model),
            _route("DELETE", one, Endpoint.REPOSITORY, Action.ADMIN, self.unload_model),
            _route("POST", f"{one}/invoke", Endpoint.INFER, Action.INFER, self.invoke),
        ]

    # -- single model ------------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        """200 once start-up loading has finished (SageMaker's health check), else 503."""
        if self._dp.ready():
            return 200, [JSON], _PING
        raise NotReady("the server is still loading its models")

    async def invoke(self, request: Request) -> Response:
        """One inference on the target model (or the path's, under /models/NAME/invoke)."""
        name = request.params.get("model_name") or await self._target(request)
        self._dp.shed(name, None)
        model = await self._dp.resolve(name, None)
        version = model.version
        kind, params = media_type(request.content_type)
        charset = params.pop("charset", "utf-8")
        if charset not in ("utf-8", "utf8"):
            raise InvalidInput(f"the body must be UTF-8, not charset {charset!r}")
        if params:
            # MLflow 1 took `format=pandas-split` and the like; MLflow 2 refuses them too.
            raise InvalidInput(
                f"Content-Type parameter(s) {', '.join(sorted(params))} are not taken (MLflow 2's "
                "protocol): send plain application/json with the rows under dataframe_split, "
                "dataframe_records, instances or inputs"
            )
        body = await request.body()
        if kind in ("", JSON_TYPE):
            infer = self._json_request(body, version)
        elif kind == CSV_TYPE:
            infer = self._tables.csv_request(body, version)
        elif kind == AVRO_TYPE:
            infer = self._tables.avro_request(body, version)
        else:
            raise InvalidInput(
                f"Content-Type {kind!r} is not taken here; send {JSON_TYPE} (MLflow's "
                f"dataframe_split, dataframe_records, instances or inputs), {CSV_TYPE} or "
                f"{AVRO_TYPE}"
            )
        number = str(model.number)
        response = await self._dp.infer(name, number, infer, request.request_id, request.call)
        answer = accepted(request.accept, _ANSWERS)
        if answer is None:
            answer = CSV_TYPE if kind == CSV_TYPE else JSON_TYPE
        headers = provenance_headers(response)
        if answer == CSV_TYPE:
            return 200, [_CSV, *headers], predictions_csv(response)
        if answer == AVRO_TYPE:
            return 200, [_AVRO, *headers], predictions_avro(response, version)
        return 200, [JSON, *headers], predictions_json(response)

    def _json_request(self, body: bytes, version: ModelVersion) -> InferRequest:
        """The request for one of MLflow's JSON forms."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the body is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidInput(
                f"the body must be a JSON object with exactly one of {', '.join(_FORMATS)}; "
                f"got {type(document).__name__}"
            )
        forms = [key for key in _FORMATS if key in document]
        if len(forms) != 1:
            raise InvalidInput(
                f"the body must have exactly one of {', '.join(_FORMATS)}; it has "
                f"{', '.join(map(repr, document)) or 'no keys'}"
            )
        parameters = _parameters(document.get("params"))
        form = forms[0]
        data = document[form]
        if form == "dataframe_records":
            return self._tables.records_request(data, version, parameters)
        if form == "dataframe_split":
            return self._split(data, version, parameters)
        return tensor_forms(form, data, version, parameters)

    def _split(self, data: Any, version: ModelVersion, parameters: Parameters) -> InferRequest:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise InvalidInput(
                'dataframe_split must be an object with "data", a list of rows (and '
                '"columns", their names; "index" is ignored)'
            )
        columns = data.get("columns")
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
        ):
            raise InvalidInput('dataframe_split "columns" must be a list of column names')
        return self._tables.rows_request(
            data["data"], columns, version, parameters, what="dataframe_split row"
        )

    async def _target(self, request: Request) -> str:
        """The model the request names in its header, the default, or the only one served."""
        for key, value in request.scope["headers"]:
            if key == TARGET_MODEL:
                target: str = value.decode("utf-8", "replace").strip().removesuffix(".tar.gz")
                if not target:
                    raise InvalidInput("the X-Amzn-SageMaker-Target-Model header is empty")
                return target
        if self._default is not None:
            return self._default
        names = sorted({m.name for m in self._dp.lifecycle.catalog})
        if not names:
            names = sorted({e.name for e in await self._dp.repository_index()})
        if len(names) == 1:
            return names[0]
        if not names:
            raise NotFound("this server serves no model; push one to its registry")
        raise InvalidInput(
            f"this server serves {len(names)} models ({', '.join(names)}); name one in the "
            "X-Amzn-SageMaker-Target-Model header, or POST to /models/NAME/invoke"
        )

    # -- multi-model -------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        """The loaded models, `{"models": [{"modelName", "modelUrl"}, ...]}`."""
        names = sorted({m.name for m in self._dp.lifecycle.catalog})
        return json_response({"models": [self._entry(name) for name in names]})

    async def get_model(self, request: Request) -> Response:
        """One loaded model's entry; 404 when it is not loaded."""
        name = request.params["model_name"]
        if self._dp.lifecycle.catalog.get(name) is None:
            await self._dp.resolve(name, None)  # unknown, loading, unloaded: its own error
        return json_response(self._entry(name))

    async def load_model(self, request: Request) -> Response:
        """Make the registry's model `model_name` ready (the `url` is kept, not fetched)."""
        document = await request.json_object("load model")
        name = document.get("model_name")
        if not isinstance(name, str) or not name:
            raise InvalidInput('the body must name the model: {"model_name": "iris", "url": ...}')
        url = document.get("url")
        if url is not None and not isinstance(url, str):
            raise InvalidInput('"url" must be a string (where the model is)')
        if self._dp.lifecycle.catalog.get(name) is not None:
            raise Conflict(f"model {name!r} is already loaded")
        model = await self._dp.load(name, None, actor=request.call.caller)
        if url:
            self._urls[name] = url
        return json_response({**self._entry(name), "modelVersion": str(model.number)})

    async def unload_model(self, request: Request) -> Response:
        """Unload every loaded version of the model; 404 when none is loaded."""
        name = request.params["model_name"]
        versions = await self._dp.unload(name, None, actor=request.call.caller)
        if not versions:
            raise NotFound(f"model {name!r} is not loaded; GET /models lists what is")
        self._urls.pop(name, None)
        return json_response({"modelName": name, "unloaded": [str(v) for v in versions]})

    def _entry(self, name: str) -> dict[str, str]:
        return {"modelName": name, "modelUrl": self._urls.get(name, f"models:/{name}")}


def _route(
    method: str,
    path: str,
    endpoint: Endpoint,
    action: Action | None,
    handler: Handler,
    protocol: str = "sagemaker",
) -> Route:
    error = mlflow_error
    return Route(method, path, endpoint, action, handler, protocol=protocol, error_body=error)


def tensor_forms(
    form: str, data: Any, version: ModelVersion, parameters: Parameters
) -> InferRequest:
    """MLflow's `instances` and `inputs` forms: TF Serving's row and columnar formats, mapped
    as TF Serving's own routes map them."""
    mapping = mapping_for(version)
    if form == "instances":
        return instances_request(data, mapping, parameters)
    return columnar_request(data, mapping, parameters)


def _parameters(value: Any) -> Parameters:
    """MLflow's `params` as request parameters: an object of strings, numbers and booleans."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f'"params" must be a JSON object, not {type(value).__name__}')
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise InvalidInput(
                f"params {key!r} must be a string, number or boolean, not {type(item).__name__}"
            )
    return dict(value)
