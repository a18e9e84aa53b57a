"""The route table: matching by segments, parameters, methods, and mistakes in the table."""

from __future__ import annotations

import pytest

from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.transports.rest_request import Request, Response
from modelport.transports.routes import MethodNotAllowed, Route, Router


async def handler(request: Request) -> Response:
    return 200, [], b""


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
    found = ROUTER.match(["v2", "models", "iris", "versions", "prod"])
    assert found is not None
    methods, params = found
    assert params == {"model_name": "iris", "model_version": "prod"}
    assert methods.route("GET").path == "/v2/models/{model_name}/versions/{model_version}"


def test_a_literal_wins_over_a_parameter() -> None:
    found = ROUTER.match(["v2", "models", "latest", "special"])
    assert found is not None
    assert found[0].endpoint is Endpoint.READY
    assert ROUTER.match(["v2", "models", "latest", "infer"]) is None


def test_no_route_is_none() -> None:
    for parts in (["v2"], [""], ["v2", "models"], ["v2", "models", "iris", "versions"]):
        assert ROUTER.match(parts) is None, parts


def test_another_method_names_the_allowed_ones() -> None:
    found = ROUTER.match(["v2", "things"])
    assert found is not None
    with pytest.raises(MethodNotAllowed) as raised:
        found[0].route("DELETE")
    assert raised.value.allowed == "GET, PUT"
    assert raised.value.message == "DELETE is not allowed here; use GET, PUT"


def test_mistakes_in_the_table_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        Router([route("GET", "/a"), route("GET", "/a")])
    with pytest.raises(ValueError, match="parameter"):
        Router([route("GET", "/a/{x}"), route("GET", "/a/{y}/b")])
