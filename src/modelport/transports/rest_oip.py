"""The Open Inference Protocol's REST endpoints: their routes, and a handler for each.

Each handler parses what the request carries, calls the dataplane and encodes the answer;
the app has already checked the method and the permission its route names.
"""

from __future__ import annotations

from typing import Final

import orjson

from modelport.errors import InvalidInput, NotReady
from modelport.protocol import codec_binary
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.serving.requests import refuse_load_options
from modelport.transports.rest_request import (
    BINARY,
    HEADER_LENGTH,
    JSON,
    Request,
    Response,
    json_response,
)
from modelport.transports.routes import Handler, Route

_MAX_LENGTH_DIGITS: Final = 20
_LIVE: Final = orjson.dumps({"live": True})
_READY: Final = orjson.dumps({"ready": True})
_MODEL: Final = "/v2/models/{model_name}"
_VERSION: Final = "/v2/models/{model_name}/versions/{model_version}"


class OipEndpoints:
    """Health, metadata, inference, monitoring and repository endpoints under /v2."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    def routes(self) -> list[Route]:
        """The table rows of the OIP REST API."""
        return [
            Route("GET", "/v2", Endpoint.SERVER_METADATA, Action.METADATA, self.server_metadata),
            Route("GET", "/v2/health/live", Endpoint.HEALTH, None, self.live),
            Route("GET", "/v2/health/ready", Endpoint.HEALTH, None, self.ready),
            *_per_version("GET", "", Endpoint.METADATA, Action.METADATA, self.model_metadata),
            *_per_version("GET", "/ready", Endpoint.READY, Action.METADATA, self.model_ready),
            *_per_version("POST", "/infer", Endpoint.INFER, Action.INFER, self.infer),
            *_per_version("GET", "/drift", Endpoint.DRIFT, Action.LOGS, self.drift),
            Route("POST", f"{_MODEL}/feedback", Endpoint.FEEDBACK, Action.INFER, self.feedback),
            Route("POST", "/v2/repository/index", Endpoint.REPOSITORY, Action.METADATA, self.index),
            Route(
                "POST",
                "/v2/repository/models/{model_name}/load",
                Endpoint.REPOSITORY,
                Action.ADMIN,
                self.load,
            ),
            Route(
                "POST",
                "/v2/repository/models/{model_name}/unload",
                Endpoint.REPOSITORY,
                Action.ADMIN,
                self.unload,
            ),
        ]

    async def live(self, request: Request) -> Response:
        """The process answers."""
        return 200, [JSON], _LIVE

    async def ready(self, request: Request) -> Response:
        """Start-up loading has finished, or NotReady."""
        if self._dp.ready():
            return 200, [JSON], _READY
        if self._dp.stopping:
            raise NotReady("the server is stopping: it finishes the requests it has")
        raise NotReady("the server is still loading its models")

    async def server_metadata(self, request: Request) -> Response:
        """Server name, version and extensions."""
        return json_response(self._dp.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        """Inputs, outputs, versions, and provenance in `parameters`."""
        params = request.params
        return json_response(
            await self._dp.model_metadata(params["model_name"], params.get("model_version"))
        )

    async def model_ready(self, request: Request) -> Response:
        """The version is loaded, or the error an inference on it would answer."""
        name = request.params["model_name"]
        await self._dp.resolve(name, request.params.get("model_version"))
        return json_response({"name": name, "ready": True})

    async def infer(self, request: Request) -> Response:
        """One inference: JSON or binary tensor data in, the same out."""
        name = request.params["model_name"]
        version = request.params.get("model_version")
        self._dp.shed(name, version)
        body = await request.body()
        decoded = codec_binary.decode_request(body, _header_length(request.header_length))
        response = await self._dp.infer(name, version, decoded, request.request_id, request.call)
        out, json_length = codec_binary.encode_response(response, decoded)
        if json_length is None:
            return 200, [JSON], out
        return 200, [BINARY, (HEADER_LENGTH, str(json_length).encode())], out

    async def drift(self, request: Request) -> Response:
        """Drift of recent inputs from the version's reference profile."""
        params = request.params
        report = await self._dp.drift(params["model_name"], params.get("model_version"))
        return json_response(report)

    async def feedback(self, request: Request) -> Response:
        """True labels for logged predictions; the live accuracy they give."""
        model = await self._dp.resolve(request.params["model_name"], None)
        feedback = await request.json_object("feedback")
        return json_response(await self._dp.feedback(model, feedback))

    async def index(self, request: Request) -> Response:
        """The repository index; `{"ready": true}` leaves out what is not loaded."""
        options = await request.json_object("index")
        ready = options.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput('"ready" must be true or false')
        return json_response(await self._dp.repository_index(ready_only=ready))

    async def load(self, request: Request) -> Response:
        """Load the newest version, or the one in parameters.version."""
        name = request.params["model_name"]
        parameters, version = await _repository_options(request, "load")
        refuse_load_options(parameters)
        model = await self._dp.load(name, version, actor=request.call.caller)
        return json_response({"name": name, "version": str(model.number), "load": True})

    async def unload(self, request: Request) -> Response:
        """Unload every loaded version, or the one in parameters.version."""
        name = request.params["model_name"]
        _, version = await _repository_options(request, "unload")
        unloaded = await self._dp.unload(name, version, actor=request.call.caller)
        return json_response({"name": name, "versions": [str(v) for v in unloaded], "unload": True})


def _per_version(
    method: str, suffix: str, endpoint: Endpoint, action: Action, handler: Handler
) -> tuple[Route, Route]:
    """The route for a model's default version and the one naming a version or alias."""
    return (
        Route(method, _MODEL + suffix, endpoint, action, handler),
        Route(method, _VERSION + suffix, endpoint, action, handler),
    )


async def _repository_options(
    request: Request, action: str
) -> tuple[dict[str, object], str | None]:
    """The `parameters` of a load or unload body, and the version they name (None: absent)."""
    options = await request.json_object(action)
    parameters = options.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    version = parameters.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    elif version is not None and not isinstance(version, str):
        raise InvalidInput(
            f'parameters.version must be a version number such as "2", got {version!r}'
        )
    return parameters, version


def _header_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    # int() would also take "+12" and "1_2"; a byte count is ASCII digits only.
    value = value.strip(b" \t")
    if value.isdigit():
        if len(value) > _MAX_LENGTH_DIGITS:  # int() refuses thousands of digits anyway
            raise InvalidInput(f"Inference-Header-Content-Length has {len(value)} digits; too long")
        return int(value)
    raise InvalidInput(
        "Inference-Header-Content-Length must be one non-negative integer, the byte length "
        "of the JSON part of the body"
    )
