"""Azure ML online endpoints' custom-container contract on the dataplane.

A deployment names a scoring route, a liveness route and a readiness route (its
inference_config); `config.ProtocolSettings` holds them (defaults `/score`, `/` and `/ready`).
The scoring body is Azure's MLflow-style `input_data`:

- split orientation, `{"columns": [...], "index": [...], "data": [[...], ...]}`: each row of
  `data` a record of the named columns (input names, or the features of a `[-1, F]` input);
  without `columns`, each row is an instance of TF Serving's row format;
- records, `[{"column": value, ...}, ...]`, or rows, `[[...], ...]`;
- an object of named tensors (the batch first), as TF Serving's columnar format;

answered with a JSON list, one prediction per row (the single output's value, or an object
by output name). `{"instances": [...]}` is taken too and answered `{"predictions": [...]}`.
Which model answers: the one the `azureml-model-deployment` header names when it is a model
served here, else `azure_model`, else the only model served. Errors are `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from modelport.config import ProtocolSettings
from modelport.errors import InvalidInput, ModelportError, NotReady
from modelport.protocol.types import InferRequest
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.serving.record_mapping import RecordMapping
from modelport.transports.rest_instances import (
    columnar_request,
    instances_request,
    mapping_for,
    predictions,
)
from modelport.transports.rest_request import JSON, Request, Response, provenance_headers
from modelport.transports.rest_vertex import default_model
from modelport.transports.routes import Route

PROTOCOL: Final = "azureml"
DEPLOYMENT: Final = b"azureml-model-deployment"
"""The header Azure ML routes a request to a deployment by."""
_DUMP: Final = orjson.OPT_SERIALIZE_NUMPY
_LIVE: Final = orjson.dumps({"live": True})
_READY: Final = orjson.dumps({"ready": True})


def error_body(exc: ModelportError, status: int) -> bytes:
    """The scoring route's error body: `{"error": "<message>"}`."""
    return orjson.dumps({"error": exc.message})


class AzureEndpoints:
    """The scoring, liveness and readiness routes of an Azure ML custom container."""

    def __init__(self, dataplane: DataPlane, settings: ProtocolSettings) -> None:
        self._dp = dataplane
        self._settings = settings

    def routes(self) -> list[Route]:
        """The table rows, at the configured routes."""
        s = self._settings
        common: dict[str, Any] = {"protocol": PROTOCOL, "error_body": error_body}
        return [
            Route(
                "POST", s.azure_scoring_route, Endpoint.INFER, Action.INFER, self.score, **common
            ),
            Route("GET", s.azure_liveness_route, Endpoint.HEALTH, None, self.live, **common),
            Route("GET", s.azure_readiness_route, Endpoint.HEALTH, None, self.ready, **common),
        ]

    async def live(self, request: Request) -> Response:
        """The process answers."""
        return 200, [JSON], _LIVE

    async def ready(self, request: Request) -> Response:
        """Start-up loading has finished, or 503."""
        if self._dp.ready():
            return 200, [JSON], _READY
        raise NotReady("the server is still loading its models")

    async def score(self, request: Request) -> Response:
        """`input_data` (split, records, rows, named tensors) or `instances` in, predictions out."""
        name = self._model(request)
        self._dp.shed(name, None)
        model = await self._dp.resolve(name, None)
        body = await request.json_object("scoring")
        mapping = mapping_for(model.version)
        parameters = _parameters(body.get("params", body.get("parameters")))
        if "input_data" in body and "instances" in body:
            raise InvalidInput('send either "input_data" or "instances", not both')
        if "input_data" in body:
            infer = input_data_request(body["input_data"], mapping)
            wrapped = False
        elif "instances" in body:
            infer = instances_request(body["instances"], mapping)
            wrapped = True
        else:
            raise InvalidInput(
                'the body needs "input_data" (split orientation {"columns", "index", "data"}, '
                'or a list of records) or "instances" (a list of rows)'
            )
        infer.parameters.update(parameters)
        response = await self._dp.infer(name, None, infer, request.request_id, request.call)
        rows = predictions(response)
        value = {"predictions": rows} if wrapped else rows
        return 200, [JSON, *provenance_headers(response)], orjson.dumps(value, option=_DUMP)

    def _model(self, request: Request) -> str:
        for key, value in request.scope["headers"]:
            if key == DEPLOYMENT:
                named: str = value.decode("latin-1").strip()
                if any(m.name == named for m in self._dp.lifecycle.catalog):
                    return named
        return default_model(
            self._dp,
            self._settings.azure_model,
            "azure_model",
            "the azureml-model-deployment header",
        )


def input_data_request(data: Any, mapping: RecordMapping) -> InferRequest:
    """The request of Azure's `input_data`: split orientation, records, rows or named tensors."""
    if isinstance(data, dict) and "data" in data:
        unknown = sorted(set(data) - {"columns", "index", "data"})
        if unknown:
            raise InvalidInput(
                f"input_data has unknown field(s) {', '.join(map(repr, unknown))}; the split "
                'orientation has "columns", "index" and "data"'
            )
        return _split(data, mapping)
    if isinstance(data, dict):
        return columnar_request(data, mapping)
    if isinstance(data, list):
        return instances_request(data, mapping)
    raise InvalidInput(
        'input_data must be an object ({"columns", "index", "data"}, or tensors by input '
        "name) or a list of records"
    )


def _split(data: dict[str, Any], mapping: RecordMapping) -> InferRequest:
    rows = data["data"]
    if not isinstance(rows, list) or not rows:
        raise InvalidInput('input_data "data" must be a non-empty list of rows')
    index = data.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
        raise InvalidInput(f'input_data "index" must be a list of one label per row ({len(rows)})')
    columns = data.get("columns")
    if columns is None:
        return instances_request(rows, mapping)
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput('input_data "columns" must be a list of column names')
    if len(set(columns)) != len(columns):
        raise InvalidInput('input_data "columns" names a column twice')
    records = []
    for number, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInput(
                f'input_data "data" row {number} must be a list of {len(columns)} values, one '
                'per column in "columns"'
            )
        records.append(dict(zip(columns, row, strict=True)))
    return instances_request(records, mapping)


def _parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput('"params" must be a JSON object')
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise InvalidInput(f"params.{key} must be a string, number or true/false")
    return value
