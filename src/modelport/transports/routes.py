"""The REST API as a table: one `Route` per method and path, compiled once into a tree.

A path pattern is literal segments and `{parameter}` segments, e.g.
`/v2/models/{model_name}/infer`. Matching splits the request path on "/" and walks the
tree one segment at a time (a dictionary lookup each), so the cost does not grow with the
number of routes. A literal segment wins over a parameter at the same place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from modelport.errors import InvalidInput, ModelportError
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.transports.rest_request import Request, Response

Handler = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[ModelportError, int], bytes]
"""A protocol's error body for an error answered with an HTTP status (JSON)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint of the REST API: what it answers and who may ask."""

    method: str
    path: str
    endpoint: Endpoint
    """The name the request is counted under in metrics, logs and traces."""
    action: Action | None
    """What the guard is asked to allow; None: open to anyone (health checks, the docs)."""
    handler: Handler
    checks_itself: bool = False
    """The handler checks the method and the permission itself, in an order of its own;
    the route then takes every method."""
    protocol: str = "rest"
    """The protocol the request is counted under (the `protocol` label and log field), e.g.
    "rest" for the OIP, "tfserving", "sagemaker"."""
    error_body: ErrorBody | None = None
    """How the protocol shapes an error's body; None: the OIP's `{"error", "code"}`."""


class MethodNotAllowed(InvalidInput):
    """The path exists but not for this HTTP method."""

    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(f"{method} is not allowed here; use {allowed}")
        self.allowed = allowed


class _Methods:
    """The routes of one path, by method."""

    __slots__ = ("allowed", "by_method", "endpoint", "first", "loose")

    def __init__(self) -> None:
        self.by_method: dict[str, Route] = {}
        self.loose: Route | None = None
        self.endpoint = Endpoint.UNKNOWN
        self.allowed = ""
        self.first: Route | None = None
        """The path's first route: its protocol answers a method the path does not take."""

    def add(self, route: Route) -> None:
        if (
            route.method in self.by_method
            or self.loose is not None
            or (route.checks_itself and self.by_method)
        ):
            raise ValueError(f"two routes for {route.method} {route.path}")
        if route.checks_itself:
            self.loose = route
        self.by_method[route.method] = route
        if not self.endpoint:
            self.endpoint = route.endpoint
        if self.first is None:
            self.first = route
        self.allowed = ", ".join(sorted(self.by_method))


class _Node:
    __slots__ = ("literals", "methods", "name", "parameter")

    def __init__(self, name: str = "") -> None:
        self.name = name
        """The parameter this node binds ("" for a literal segment)."""
        self.literals: dict[str, _Node] = {}
        self.parameter: _Node | None = None
        self.methods: _Methods | None = None


class Router:
    """Finds the routes of a request path; built once from the table."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._root = _Node()
        self.routes: tuple[Route, ...] = tuple(routes)
        for route in self.routes:
            node = self._root
            for part in route.path.strip("/").split("/"):
                node = _child(node, part, route.path)
            if node.methods is None:
                node.methods = _Methods()
            node.methods.add(route)

    def find(self, request: Request, parts: list[str]) -> Route | None:
        """The route for the request's path `parts` and method; None when no route has the path.

        Binds the path parameters in `request.params` and names the endpoint on `request.call`
        (also when the method is wrong: MethodNotAllowed names the methods the path takes).
        """
        methods = self._walk(parts, request.params)
        if methods is None:
            return None
        request.call.endpoint = methods.endpoint
        if methods.first is not None:
            # A wrong method is answered in the path's protocol, and counted under it.
            request.call.protocol = methods.first.protocol
            request.error_body = methods.first.error_body
        route = methods.loose
        if route is None:
            method: str = request.scope["method"]
            route = methods.by_method.get(method)
            if route is None:
                raise MethodNotAllowed(method, methods.allowed)
        request.call.endpoint = route.endpoint
        request.call.protocol = route.protocol
        request.error_body = route.error_body
        return route

    def methods(self, parts: list[str]) -> str | None:
        """The methods the path `parts` takes ("GET, POST"); None when no route has it."""
        methods = self._walk(parts, {})
        return None if methods is None else methods.allowed

    def _walk(self, parts: list[str], params: dict[str, str]) -> _Methods | None:
        """The routes of the path `parts`, binding its parameters in `params`."""
        node = self._root
        for part in parts:
            child = node.literals.get(part)
            if child is None:
                child = node.parameter
                if child is None:
                    return None
                params[child.name] = part
            node = child
        return node.methods


def _child(node: _Node, part: str, path: str) -> _Node:
    if part.startswith("{") and part.endswith("}"):
        name = part[1:-1]
        if node.parameter is None:
            node.parameter = _Node(name)
        elif node.parameter.name != name:
            raise ValueError(
                f"{path}: parameter {{{name}}} where others have {{{node.parameter.name}}}"
            )
        return node.parameter
    child = node.literals.get(part)
    if child is None:
        child = node.literals[part] = _Node()
    return child
