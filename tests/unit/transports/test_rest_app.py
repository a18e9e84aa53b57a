"""The REST app in process, driven through its ASGI callable: routing, errors, the endpoints."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import httpx
import orjson
import pytest

from modelport import __version__
from modelport.errors import Overloaded
from modelport.registry.manifest import ModelVersion
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.serving.reports import NoReports
from modelport.serving.telemetry import Call, NoTelemetry
from modelport.transports.rest import RestApp

from .conftest import KeyGuard

IRIS_ROW = {
    "inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}

DataPlaneFactory = Callable[..., DataPlane]
"""`make_dataplane` (tests/unit/transports/conftest.py)."""


class Recorder(NoTelemetry, NoReports):
    """Telemetry that keeps each answered call; its drift report fails like a bug would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Call, str]] = []
        self.shed = False

    def finished(self, call: Call, code: str) -> None:
        self.calls.append((call, code))

    def admit(self, model: str) -> None:
        if self.shed:
            raise Overloaded("the inference log is full", retry_after=0.2)

    def drift(self, version: ModelVersion) -> dict[str, Any]:
        raise RuntimeError("a bug")


def ask(app: RestApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to `app` over its ASGI interface."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(make_dataplane: DataPlaneFactory, recorder: Recorder) -> RestApp:
    return RestApp(make_dataplane(recorder, recorder), max_body_bytes=1 << 16, telemetry=recorder)


def error(response: httpx.Response, status: int, code: str) -> str:
    """The error message of a failed response, after checking its status, code and headers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == code
    message: str = body["error"]
    return message


def test_health_is_open_and_answers(app: RestApp, recorder: Recorder) -> None:
    assert ask(app, "GET", "/v2/health/live").json() == {"live": True}
    assert ask(app, "GET", "/v2/health/ready").json() == {"ready": True}
    assert [(call.endpoint, code) for call, code in recorder.calls] == [
        (Endpoint.HEALTH, "200"),
        (Endpoint.HEALTH, "200"),
    ]


def test_server_metadata(app: RestApp) -> None:
    response = ask(app, "GET", "/v2")
    assert response.json() == {
        "name": "modelport",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository"],
    }
    assert ask(app, "GET", "/v2/").json() == response.json()


def test_model_metadata_is_the_dataplanes_typed_metadata(
    app: RestApp, make_dataplane: DataPlaneFactory
) -> None:
    response = ask(app, "GET", "/v2/models/iris")
    assert response.status_code == 200
    body = response.json()
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in body["outputs"]] == ["predict", "predict_proba"]
    assert body["versions"] == ["1"]
    assert ask(app, "GET", "/v2/models/iris/versions/1").json() == body
    typed = asyncio.run(make_dataplane().model_metadata("iris", None))
    assert list(body) == list(asdict(typed))
    assert body == orjson.loads(orjson.dumps(typed))


def test_infer_on_a_real_model_keeps_the_request_id(app: RestApp, recorder: Recorder) -> None:
    response = ask(
        app, "POST", "/v2/models/iris/infer", json=IRIS_ROW, headers={"x-request-id": "r-1"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "r-1"
    body = response.json()
    assert body["model_name"] == "iris"
    assert body["model_version"] == "1"
    assert body["parameters"]["modelport.request_id"] == "r-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["data"] == [0]
    ((call, code),) = recorder.calls
    assert (call.endpoint, code, call.model, call.caller) == (
        Endpoint.INFER,
        "200",
        "iris",
        "10.0.0.7",
    )


def test_infer_by_version_and_gzip(app: RestApp) -> None:
    body = gzip.compress(orjson.dumps(IRIS_ROW))
    response = ask(
        app,
        "POST",
        "/v2/models/iris/versions/1/infer",
        content=body,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"


def test_an_unsafe_request_id_is_replaced(app: RestApp) -> None:
    response = ask(app, "GET", "/v2/health/live", headers={"x-request-id": "no spaces"})
    assert response.headers["x-request-id"] != "no spaces"
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("/nothing", True),
        ("/v1/models", True),
        ("/v2/models", False),
        ("/v2/models/iris/versions", False),
        ("/v2/models/iris/versions/1/feedback", False),
        ("/v2/models/iris/predict", False),
        ("/v2/health/sick", False),
        ("/v2/repository/models/iris/reload", False),
    ],
)
def test_unknown_paths_are_404(app: RestApp, recorder: Recorder, path: str, hint: bool) -> None:
    message = error(ask(app, "GET", path), 404, "not_found")
    assert message.startswith(f"no such endpoint {path!r}")
    assert message.endswith("the API lives under /v2") is hint
    assert recorder.calls[0][0].endpoint == Endpoint.UNKNOWN == ""


@pytest.mark.parametrize(
    ("method", "path", "allowed", "endpoint"),
    [
        ("GET", "/v2/models/iris/infer", "POST", Endpoint.INFER),
        ("PUT", "/v2/models/iris/versions/1/infer", "POST", Endpoint.INFER),
        ("POST", "/v2", "GET", Endpoint.SERVER_METADATA),
        ("POST", "/v2/health/live", "GET", Endpoint.HEALTH),
        ("DELETE", "/v2/models/iris", "GET", Endpoint.METADATA),
        ("GET", "/v2/repository/index", "POST", Endpoint.REPOSITORY),
        ("GET", "/v2/models/iris/feedback", "POST", Endpoint.FEEDBACK),
        ("POST", "/docs", "GET", Endpoint.DOCS),
        ("POST", "/metrics", "GET", Endpoint.METRICS),
    ],
)
def test_a_known_path_with_another_method_is_405(
    app: RestApp, recorder: Recorder, method: str, path: str, allowed: str, endpoint: Endpoint
) -> None:
    response = ask(app, method, path)
    message = error(response, 405, "invalid_input")
    assert response.headers["allow"] == allowed
    assert message == f"{method} is not allowed here; use {allowed}"
    ((call, code),) = recorder.calls
    assert (call.endpoint, code) == (endpoint, "405")


def test_client_mistakes(app: RestApp) -> None:
    assert "not valid JSON" in error(
        ask(app, "POST", "/v2/models/iris/infer", content=b"{"), 400, "invalid_input"
    )
    error(ask(app, "POST", "/v2/models/nope/infer", json=IRIS_ROW), 404, "not_found")
    error(ask(app, "GET", "/v2/models/iris/versions/7"), 404, "not_found")
    assert "Inference-Header-Content-Length" in error(
        ask(
            app,
            "POST",
            "/v2/models/iris/infer",
            json=IRIS_ROW,
            headers={"inference-header-content-length": "+1"},
        ),
        400,
        "invalid_input",
    )
    assert "gzip or deflate" in error(
        ask(app, "POST", "/v2/repository/index", content=b"{}", headers={"content-encoding": "br"}),
        400,
        "invalid_input",
    )


def test_a_body_over_the_limit_is_413(make_dataplane: DataPlaneFactory) -> None:
    small = RestApp(make_dataplane(), max_body_bytes=64)
    error(ask(small, "POST", "/v2/models/iris/infer", json=IRIS_ROW), 413, "too_large")
    bomb = gzip.compress(b" " * 10_000)
    assert "decompressed" in error(
        ask(
            small,
            "POST",
            "/v2/repository/index",
            content=bomb,
            headers={"content-encoding": "gzip"},
        ),
        413,
        "too_large",
    )


def test_a_shed_request_says_when_to_retry(app: RestApp, recorder: Recorder) -> None:
    recorder.shed = True
    response = ask(app, "POST", "/v2/models/iris/infer", json=IRIS_ROW)
    error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"


def test_a_fault_is_500_and_names_the_request_id(app: RestApp, recorder: Recorder) -> None:
    response = ask(app, "GET", "/v2/models/iris/drift", headers={"x-request-id": "bug-1"})
    message = error(response, 500, "internal")
    assert message == "internal error; the server log has details under bug-1"
    assert "a bug" not in response.text
    ((call, code),) = recorder.calls
    assert (call.endpoint, call.kind, code) == (Endpoint.DRIFT, "internal", "500")


def test_repository_index_load_and_unload(app: RestApp) -> None:
    index = ask(app, "POST", "/v2/repository/index")
    assert index.json() == [{"name": "iris", "version": "1", "state": "READY", "reason": ""}]
    assert ask(app, "POST", "/v2/repository/index", json={"ready": True}).json() == index.json()
    error(ask(app, "POST", "/v2/repository/index", json={"ready": "yes"}), 400, "invalid_input")
    error(ask(app, "POST", "/v2/repository/index", json=[1]), 400, "invalid_input")
    assert "config or files" in error(
        ask(app, "POST", "/v2/repository/models/iris/load", json={"parameters": {"config": "{}"}}),
        501,
        "unsupported",
    )
    error(
        ask(app, "POST", "/v2/repository/models/iris/load", json={"parameters": {"version": 1.5}}),
        400,
        "invalid_input",
    )
    unloaded = ask(app, "POST", "/v2/repository/models/iris/unload")
    assert unloaded.json() == {"name": "iris", "versions": ["1"], "unload": True}
    # Unloaded by an operator: a client error that says how to load it, not "retry later".
    assert "was unloaded; load it with POST" in error(
        ask(app, "GET", "/v2/models/iris/ready"), 404, "not_found"
    )
    loaded = ask(
        app, "POST", "/v2/repository/models/iris/load", json={"parameters": {"version": 1}}
    )
    assert loaded.json() == {"name": "iris", "version": "1", "load": True}
    assert ask(app, "GET", "/v2/models/iris/ready").json() == {"name": "iris", "ready": True}


def test_feedback_and_drift_need_their_features(make_dataplane: DataPlaneFactory) -> None:
    plain = RestApp(make_dataplane(), max_body_bytes=1 << 16)
    assert "inference log" in error(
        ask(plain, "POST", "/v2/models/iris/feedback", json={}), 501, "unsupported"
    )
    error(ask(plain, "GET", "/v2/models/iris/versions/1/drift"), 501, "unsupported")
    assert "--no-metrics" in error(ask(plain, "GET", "/metrics"), 404, "not_found")


def test_docs_are_served(app: RestApp) -> None:
    assert ask(app, "GET", "/openapi.json").json()["openapi"] == "3.1.0"
    page = ask(app, "GET", "/docs")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert b"swagger-ui" in page.content


def test_the_guard_is_asked_after_the_method_check(make_dataplane: DataPlaneFactory) -> None:
    guard = KeyGuard()
    app = RestApp(make_dataplane(), max_body_bytes=1 << 16, guard=guard)
    assert ask(app, "GET", "/v2/health/ready").status_code == 200
    assert ask(app, "GET", "/docs").status_code == 200
    assert guard.actions == []
    error(ask(app, "POST", "/v2"), 405, "invalid_input")
    assert guard.actions == []
    error(ask(app, "GET", "/v2"), 401, "unauthenticated")
    assert ask(app, "GET", "/v2", headers={"x-api-key": "k"}).status_code == 200
    error(ask(app, "POST", "/v2/repository/models/iris/unload"), 401, "unauthenticated")
    error(ask(app, "GET", "/v2/models/iris/drift"), 401, "unauthenticated")
    assert guard.actions == [Action.METADATA, Action.METADATA, Action.ADMIN, Action.LOGS]


def test_the_metrics_page_asks_the_guard_before_the_method(
    make_dataplane: DataPlaneFactory,
) -> None:
    guard = KeyGuard()
    app = RestApp(make_dataplane(), max_body_bytes=1 << 16, guard=guard)
    error(ask(app, "POST", "/metrics"), 401, "unauthenticated")
    assert guard.actions == [Action.METRICS]
    elsewhere = RestApp(make_dataplane(), max_body_bytes=1 << 16, guard=guard, metrics_port=9)
    assert error(ask(elsewhere, "POST", "/metrics"), 404, "not_found") == (
        "metrics are served on port 9"
    )
    assert guard.actions == [Action.METRICS]


def test_the_metrics_port_answers_the_health_checks_without_the_guard(
    make_dataplane: DataPlaneFactory,
) -> None:
    guard = KeyGuard()
    app = RestApp(make_dataplane(), max_body_bytes=1 << 16, guard=guard, metrics_port=9)
    port = "http://api:9"
    assert ask(app, "GET", f"{port}/v2/health/live").json() == {"live": True}
    assert ask(app, "GET", f"{port}/v2/health/ready").json() == {"ready": True}
    error(ask(app, "POST", f"{port}/v2/health/ready"), 405, "invalid_input")
    assert guard.actions == []
    message = error(ask(app, "GET", f"{port}/v2/models/iris"), 404, "not_found")
    assert "this port serves /metrics and the health checks" in message
    assert guard.actions == []
    error(ask(app, "GET", f"{port}/metrics"), 401, "unauthenticated")
    assert guard.actions == [Action.METRICS]


def test_lifespan_runs_the_hooks() -> None:
    ran: list[str] = []

    async def up() -> None:
        ran.append("up")

    async def down() -> None:
        ran.append("down")

    app = RestApp(None, max_body_bytes=1, on_startup=up, on_shutdown=down)  # type: ignore[arg-type]
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert ran == ["up", "down"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
