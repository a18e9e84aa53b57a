"""The REST app against web pages, in process: Host and Origin refused first, CORS served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from modelport.serving.dataplane import DataPlane
from modelport.serving.guard import Action
from modelport.transports.browser import BrowserPolicy
from modelport.transports.rest import RestApp

from .conftest import KeyGuard

DataPlaneFactory = Callable[..., DataPlane]
"""`make_dataplane` (tests/unit/transports/conftest.py)."""

HOST = b"localhost:8080"
APP = "https://app.example:8443"
UNLOAD = "/v2/repository/models/iris/unload"
INFER = "/v2/models/iris/infer"
IRIS = orjson.dumps(
    {
        "inputs": [
            {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    body_read: bool
    """Whether the app asked for the request body."""

    def json(self) -> Any:
        return orjson.loads(self.body)


def send(
    app: RestApp,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    host: bytes | None = HOST,
    body: bytes = b"",
    server: tuple[str, int] = ("127.0.0.1", 8080),
) -> Answer:
    """One request to `app` through its ASGI interface, with exactly these headers."""
    raw = [] if host is None else [(b"host", host)]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": raw,
        "server": server,
        "client": ("10.0.0.7", 5000),
        "scheme": "http",
    }
    read = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, collect))
    start, content = sent
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], answer_headers, content["body"], read)


@pytest.fixture
def app(make_dataplane: DataPlaneFactory) -> RestApp:
    return RestApp(make_dataplane(), max_body_bytes=1 << 16)


@pytest.fixture
def cors_app(make_dataplane: DataPlaneFactory) -> RestApp:
    browser = BrowserPolicy(cors_origins=[APP])
    return RestApp(make_dataplane(), max_body_bytes=1 << 16, browser=browser)


def forbidden(answer: Answer) -> str:
    assert answer.status == 403, answer.body
    assert answer.json()["code"] == "forbidden"
    assert not answer.body_read
    message: str = answer.json()["error"]
    return message


def test_a_cross_site_simple_request_cannot_unload(app: RestApp) -> None:
    # What any page open in a browser can send without a preflight.
    page = {"origin": "http://evil.example", "content-type": "text/plain"}
    message = forbidden(send(app, "POST", UNLOAD, page, body=b"{}"))
    assert "--cors-origin http://evil.example" in message
    assert send(app, "GET", "/v2/models/iris/ready").status == 200


def test_a_rebound_name_cannot_load(app: RestApp) -> None:
    answer = send(app, "POST", UNLOAD, host=b"evil.example:8080", body=b"{}")
    assert forbidden(answer) == (
        "Host 'evil.example:8080' is not one of this server's names; to serve it under that "
        "name, start it with --allowed-host evil.example"
    )
    assert send(app, "GET", "/v2/models/iris/ready").status == 200


def test_refusals_come_before_the_guard_and_the_body(make_dataplane: DataPlaneFactory) -> None:
    guard = KeyGuard()  # refuses these requests: none sends its key
    app = RestApp(make_dataplane(), max_body_bytes=1 << 16, guard=guard)
    forbidden(send(app, "POST", UNLOAD, {"origin": "http://evil.example"}, body=b"{}"))
    forbidden(send(app, "POST", UNLOAD, host=b"evil.example", body=b"{}"))
    # Routing too: an unknown path is refused, not a 404.
    forbidden(send(app, "GET", "/nowhere", host=b"evil.example"))
    assert guard.actions == []
    assert send(app, "POST", UNLOAD, body=b"{}").status == 401
    assert guard.actions == [Action.ADMIN]


def test_clients_that_are_not_browsers_are_unaffected(app: RestApp) -> None:
    assert send(app, "GET", "/v2/health/ready", host=None).status == 200  # HTTP/1.0
    assert send(app, "GET", "/v2/health/ready", host=b"127.0.0.1:8080").status == 200
    # The address the connection reached, as clients of a server on every address dial it.
    reached = send(app, "GET", "/v2/health/ready", host=b"10.1.2.3:8080", server=("10.1.2.3", 8080))
    assert reached.status == 200
    assert "vary" not in reached.headers
    assert "access-control-allow-origin" not in reached.headers


def test_the_servers_own_pages_may_call_it(app: RestApp) -> None:
    answer = send(app, "POST", INFER, {"origin": "http://localhost:8080"}, body=IRIS)
    assert answer.status == 200, answer.body
    assert "access-control-allow-origin" not in answer.headers
    assert answer.headers["vary"] == "origin"


def test_allowed_hosts(make_dataplane: DataPlaneFactory) -> None:
    named = RestApp(
        make_dataplane(), max_body_bytes=1 << 16, browser=BrowserPolicy(["evil.example"])
    )
    assert send(named, "GET", "/v2/health/ready", host=b"evil.example:8080").status == 200
    forbidden(send(named, "GET", "/v2/health/ready", host=b"other.example"))
    anyone = RestApp(make_dataplane(), max_body_bytes=1 << 16, browser=BrowserPolicy(["*"]))
    assert send(anyone, "GET", "/v2/health/ready", host=b"other.example").status == 200


def test_an_allowed_origin_gets_cors_headers(cors_app: RestApp) -> None:
    answer = send(cors_app, "POST", INFER, {"origin": APP}, body=IRIS)
    assert answer.status == 200, answer.body
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["vary"] == "origin"
    exposed = answer.headers["access-control-expose-headers"]
    assert {h.strip() for h in exposed.split(",")} == {
        "x-request-id",
        "inference-header-content-length",
        "retry-after",
    }
    assert "access-control-allow-credentials" not in answer.headers
    # Errors too, so the page can read what to fix.
    missing = send(cors_app, "GET", "/v2/models/nope", {"origin": APP})
    assert missing.status == 404
    assert missing.headers["access-control-allow-origin"] == APP
    forbidden(send(cors_app, "POST", INFER, {"origin": "https://app.example"}, body=IRIS))


def test_preflight_names_the_paths_methods_and_the_headers_read(cors_app: RestApp) -> None:
    asking = {"origin": APP, "access-control-request-method": "POST"}
    answer = send(cors_app, "OPTIONS", INFER, asking)
    assert answer.status == 204
    assert answer.body == b""
    assert answer.headers["access-control-allow-origin"] == APP
    assert answer.headers["access-control-allow-methods"] == "POST"
    allowed = {h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {
        "content-type",
        "authorization",
        "x-api-key",
        "inference-header-content-length",
        "x-request-id",
        "content-encoding",
    } <= allowed
    assert int(answer.headers["access-control-max-age"]) > 0
    assert answer.headers["vary"] == "origin"
    model = send(cors_app, "OPTIONS", "/v2/models/iris", asking)
    assert model.headers["access-control-allow-methods"] == "GET"
    assert send(cors_app, "OPTIONS", "/v2/nowhere", asking).status == 404


def test_a_preflight_from_a_refused_origin_is_refused(cors_app: RestApp) -> None:
    asking = {"origin": "http://evil.example", "access-control-request-method": "POST"}
    answer = send(cors_app, "OPTIONS", UNLOAD, asking)
    assert "--cors-origin" in forbidden(answer)
    assert "access-control-allow-origin" not in answer.headers


def test_an_options_that_is_not_a_preflight_is_routed(cors_app: RestApp) -> None:
    assert send(cors_app, "OPTIONS", INFER, {"origin": APP}).status == 405


def test_the_metrics_port_checks_the_same(make_dataplane: DataPlaneFactory) -> None:
    app = RestApp(
        make_dataplane(),
        max_body_bytes=1 << 16,
        metrics_port=9100,
        browser=BrowserPolicy(cors_origins=[APP]),
    )
    port = ("127.0.0.1", 9100)
    # Past the checks (this dataplane counts no metrics).
    assert send(app, "GET", "/metrics", server=port).json()["code"] == "not_found"
    forbidden(send(app, "GET", "/metrics", host=b"evil.example:9100", server=port))
    forbidden(send(app, "GET", "/metrics", {"origin": "http://evil.example"}, server=port))
    asking = {"origin": APP, "access-control-request-method": "GET"}
    preflight = send(app, "OPTIONS", "/metrics", asking, server=port)
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-methods"] == "GET"
    assert send(app, "OPTIONS", "/v2", asking, server=port).status == 404
