"""The rules both transports share: request ids, the guard's answer, refusals, Retry-After."""

from __future__ import annotations

import re

import pytest

from modelport.errors import ErrorKind, Overloaded, RateLimited, Unsupported
from modelport.serving import requests
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action
from modelport.serving.telemetry import Call, new_request_id


def test_endpoint_names_are_the_metric_labels() -> None:
    assert {e.name: e.value for e in Endpoint} == {
        "UNKNOWN": "",
        "HEALTH": "health",
        "SERVER_METADATA": "server_metadata",
        "METADATA": "metadata",
        "READY": "ready",
        "INFER": "infer",
        "DRIFT": "drift",
        "FEEDBACK": "feedback",
        "REPOSITORY": "repository",
        "METRICS": "metrics",
        "DOCS": "docs",
    }
    assert f"{Endpoint.INFER}" == "infer" == Endpoint.INFER
    assert not Endpoint.UNKNOWN
    assert Call("rest", "r").endpoint is Endpoint.UNKNOWN


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("r-1", True), ("a.b:c_d-9", True), ("x" * 128, True), ("x" * 129, False), ("a b", False)],
)
def test_request_ids_a_client_may_choose(offered: str, kept: bool) -> None:
    assert bool(re.fullmatch(requests.REQUEST_ID_PATTERN, offered)) is kept
    assert re.fullmatch(requests.REQUEST_ID_PATTERN, new_request_id())


class Named:
    def __init__(self, who: str) -> None:
        self.who = who
        self.asked: list[tuple[Action, str | None, str | None, str]] = []

    def check(
        self, action: Action, authorization: str | None, api_key: str | None, address: str
    ) -> str:
        self.asked.append((action, authorization, api_key, address))
        return self.who


def test_who_asked_joins_the_callers_address() -> None:
    call = Call("grpc", "r", caller="10.0.0.1")
    guard = Named("alice")
    requests.admit(guard, Action.INFER, "Bearer t", "k", call)
    assert call.caller == "alice@10.0.0.1"
    assert guard.asked == [(Action.INFER, "Bearer t", "k", "10.0.0.1")]
    anonymous = Call("rest", "r", caller="10.0.0.2")
    requests.admit(Named(""), Action.METADATA, None, None, anonymous)
    assert anonymous.caller == "10.0.0.2"


@pytest.mark.parametrize("keys", [["config"], ["version", "file:model.onnx"]])
def test_loading_with_a_config_or_files_is_refused(keys: list[str]) -> None:
    with pytest.raises(Unsupported, match="config or files is not offered"):
        requests.refuse_load_options(keys)


def test_loading_by_name_and_version_is_not_refused() -> None:
    requests.refuse_load_options(["version", "configuration"])


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.1, "2")])
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    assert requests.retry_after(Overloaded("busy", retry_after=seconds)) == header
    assert requests.retry_after(RateLimited("slow down", retry_after=seconds)) == header


def test_a_fault_names_only_the_request_id() -> None:
    error = requests.internal_error("r-9")
    assert error.kind is ErrorKind.INTERNAL
    assert error.message == "internal error; the server log has details under r-9"
