"""Vertex AI's custom-container contract on the dataplane.

Vertex AI sends health checks (GET) to $AIP_HEALTH_ROUTE and prediction requests (POST) to
$AIP_PREDICT_ROUTE on $AIP_HTTP_PORT; `config.ProtocolSettings` holds them (defaults
/vertex/health and /vertex/predict when the variables are unset). The predict body is
`{"instances": [...], "parameters": {...}}`, instances as in TF Serving's row format
(`rest_instances`); the answer is `{"predictions": [...], "deployedModelId", "model",
"modelDisplayName", "modelVersionId"}`. The predict route answers with the one model served
(or `vertex_model`); `/vertex/models/NAME:predict` names one. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from modelport.config import ProtocolSettings
from modelport.errors import InvalidInput, ModelportError, NotFound, NotReady
from modelport.protocol.types import InferResponse
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.transports.rest_instances import instances_request, mapping_for, predictions
from modelport.transports.rest_request import JSON, Request, Response, provenance_headers
from modelport.transports.routes import Route

PROTOCOL: Final = "vertex"
NAMED_PREDICT: Final = "/vertex/models/{model_name}"
"""POST NAME:predict here: a prediction from the model it names."""
_SCALARS: Final = (str, int, float, bool)


def error_body(exc: ModelportError, status: int) -> bytes:
    """Vertex AI's error body for custom containers: `{"error": "<message>"}`."""
    return orjson.dumps({"error": exc.message})


def default_model(dataplane: DataPlane, configured: str, setting: str, named: str) -> str:
    """The model a route that names none answers with: `configured`, else the only one served.

    InvalidInput when several are served, saying to set `setting` or to use the `named` route.
    """
    if configured:
        return configured
    names = sorted({m.name for m in dataplane.lifecycle.catalog})
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotReady("no model is loaded yet; retry shortly")
    raise InvalidInput(
        f"this server serves {len(names)} models ({', '.join(names)}); name one with {named}, "
        f"or set {setting} in the server's [serve] settings"
    )


class VertexEndpoints:
    """The health and predict routes of a Vertex AI custom container."""

    def __init__(self, dataplane: DataPlane, settings: ProtocolSettings) -> None:
        self._dp = dataplane
        self._settings = settings

    def routes(self) -> list[Route]:
        """The table rows: the configured health and predict routes, and the named predict."""
        s = self._settings
        return [
            Route(
                "GET",
                s.vertex_health_route,
                Endpoint.HEALTH,
                None,
                self.health,
                protocol=PROTOCOL,
                error_body=error_body,
            ),
            Route(
                "POST",
                s.vertex_predict_route,
                Endpoint.INFER,
                Action.INFER,
                self.predict,
                protocol=PROTOCOL,
                error_body=error_body,
            ),
            Route(
                "POST",
                NAMED_PREDICT,
                Endpoint.INFER,
                Action.INFER,
                self.predict,
                protocol=PROTOCOL,
                error_body=error_body,
            ),
        ]

    async def health(self, request: Request) -> Response:
        """200 once the start-up models are loaded (Vertex then sends traffic), else 503."""
        if self._dp.ready():
            return 200, [JSON], b"{}"
        raise NotReady("the server is still loading its models")

    async def predict(self, request: Request) -> Response:
        """`{"instances", "parameters"}` in, predictions and the deployed model's ids out."""
        name = self._model(request)
        self._dp.shed(name, None)
        model = await self._dp.resolve(name, None)
        body = await request.json_object("predict")
        unknown = sorted(set(body) - {"instances", "parameters"})
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(map(repr, unknown))}; a Vertex AI prediction "
                'request has "instances" and, optionally, "parameters"'
            )
        if "instances" not in body:
            raise InvalidInput('the body needs "instances": a list of rows, one per prediction')
        parameters = _parameters(body.get("parameters"))
        infer = instances_request(body["instances"], mapping_for(model.version), parameters)
        response = await self._dp.infer(name, None, infer, request.request_id, request.call)
        return self._answer(response)

    def _model(self, request: Request) -> str:
        named = request.params.get("model_name")
        if named is None:
            return default_model(
                self._dp, self._settings.vertex_model, "vertex_model", "/vertex/models/NAME:predict"
            )
        name, colon, verb = named.rpartition(":")
        if not colon or verb != "predict":
            raise NotFound(f"POST /vertex/models/NAME:predict, not {request.scope['path']!r}")
        return name

    def _answer(self, response: InferResponse) -> Response:
        deployed = self._settings.vertex_deployed_model_id or response.model_name
        value: dict[str, Any] = {
            "predictions": predictions(response),
            "deployedModelId": deployed,
            "model": response.model_name,
            "modelDisplayName": response.model_name,
            "modelVersionId": response.model_version,
        }
        body = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        return 200, [JSON, *provenance_headers(response)], body


def _parameters(value: Any) -> dict[str, Any]:
    """Vertex's `parameters`: OIP parameters (e.g. `timeout`) when scalar; others refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    for key, item in value.items():
        if not isinstance(item, _SCALARS):
            raise InvalidInput(
                f"parameters.{key} must be a string, number or true/false (modelport passes "
                "parameters on to the inference request)"
            )
    return value
