"""The route table: matching by segments, parameters, methods, and mistakes in the table."""

from __future__ import annotations

import pytest

from modelport.errors import ModelportError
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.transports.rest_request import Request, Response
from modelport.transports.routes import MethodNotAllowed, Route, Router


async def handler(request: Request) -> Response:
    return 200, [], b""


async def receive() -> dict[str, object]:
    return {"type": "http.request"}


def find(router: Router, method: str, parts: list[str]) -> tuple[Route | None, Request]:
    """The route `router` finds for a `method` request to `parts`, and the request."""
    request = Request({"method": method, "headers": []}, receive, 0)
    return router.find(request, parts), request


def route(method: str, path: str, endpoint: Endpoint = Endpoint.METADATA) -> Route:
    return Route(method, path, endpoint, Action.METADATA, handler)


ROUTER = Router(
    [
        route("GET", "/v2/models/{model_name}"),
        route("POST", "/v2/models/{model_name}/infer", Endpoint.INFER),
        route("GET", "/v2/models/{model_name}/versions/{model_version}"),
        route("GET", "/v2/models/latest/special", Endpoint.READY),
        route("GET", "/v2/things"),
        route("PUT", "/v2/things"),
    ]
)


def test_parameters_are_bound_by_name() -> None:
    found, request = find(ROUTER, "GET", ["v2", "models", "iris", "versions", "prod"])
    assert found is not None
    assert found.path == "/v2/models/{model_name}/versions/{model_version}"
    assert request.params == {"model_name": "iris", "model_version": "prod"}
    assert request.call.endpoint is Endpoint.METADATA


def test_a_literal_wins_over_a_parameter() -> None:
    found, request = find(ROUTER, "GET", ["v2", "models", "latest", "special"])
    assert found is not None
    assert request.call.endpoint is Endpoint.READY
    assert find(ROUTER, "POST", ["v2", "models", "latest", "infer"])[0] is None


def test_no_route_is_none() -> None:
    for parts in (["v2"], [""], ["v2", "models"], ["v2", "models", "iris", "versions"]):
        found, request = find(ROUTER, "GET", parts)
        assert found is None, parts
        assert request.call.endpoint is Endpoint.UNKNOWN


def test_another_method_names_the_allowed_ones() -> None:
    request = Request({"method": "DELETE", "headers": []}, receive, 0)
    with pytest.raises(MethodNotAllowed) as raised:
        ROUTER.find(request, ["v2", "things"])
    assert raised.value.allowed == "GET, PUT"
    assert raised.value.message == "DELETE is not allowed here; use GET, PUT"
    assert request.call.endpoint is Endpoint.METADATA


def test_mistakes_in_the_table_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        Router([route("GET", "/a"), route("GET", "/a")])
    with pytest.raises(ValueError, match="parameter"):
        Router([route("GET", "/a/{x}"), route("GET", "/a/{y}/b")])


def test_each_method_of_a_path_names_its_own_endpoint_protocol_and_errors() -> None:
    def shaped(error: ModelportError, status: int) -> bytes:
        return b"%d %s" % (status, error.message.encode())

    router = Router(
        [
            Route(
                "GET", "/v1/models/{m}", Endpoint.METADATA, Action.METADATA, handler, protocol="tf"
            ),
            Route(
                "POST", "/v1/models/{m}", Endpoint.INFER, Action.INFER, handler, protocol="tf",
                error_body=shaped,
            ),
        ]
    )  # fmt: skip
    found, request = find(router, "POST", ["v1", "models", "iris:predict"])
    assert found is not None
    assert (request.call.endpoint, request.call.protocol) == (Endpoint.INFER, "tf")
    assert request.error_body is shaped
    found, request = find(router, "GET", ["v1", "models", "iris"])
    assert (request.call.endpoint, request.call.protocol, request.error_body) == (
        Endpoint.METADATA, "tf", None,
    )  # fmt: skip
