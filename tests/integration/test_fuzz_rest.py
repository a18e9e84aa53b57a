"""Property-based fuzzing of the live REST API from its own OpenAPI description.

Every operation in the description gets generated requests, schema-valid and schema-breaking
(negative) alike, sent to a real server; no answer may be a 5xx, and every answer must be one
the description declares, with the declared content type, headers and body shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import ServerError
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from modelport.demo import build_iris
from modelport.intake.push import push_artifact
from modelport.registry.store import Registry
from modelport.transports.openapi import OPENAPI, openapi_document

from .conftest import (
    CREATED_BY,
    ServerFactory,
    ServerProcess,
    echo_signature,
    write_echo_model,
)

pytestmark = pytest.mark.integration

# Explicit, so that no schemathesis.toml lying around changes what runs.
CONFIG = SchemathesisConfig.from_dict({"generation": {"mode": "all"}})
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
MODELS = ("iris", "echo")
"""The models on the fuzzed server (fuzz_registry)."""

# The 5xx answers a client may rightly get, by their error code: a feature this server does not
# offer, a model the fuzzer unloaded, load shedding. Anything else 5xx is a fault.
# (MLflow's error body on /invocations and /models names them as MLflow's error codes.)
EXPECTED_5XX = {
    501: {"unsupported", "NOT_IMPLEMENTED"},
    503: {"not_ready", "overloaded", "TEMPORARILY_UNAVAILABLE"},
}


def no_fault(ctx: CheckContext, response: Response, case: schemathesis.Case) -> bool | None:
    """No 5xx but the ones that report a client-side condition (EXPECTED_5XX)."""
    if response.status_code < 500:
        return None
    code = ""
    if response.headers.get("content-type", [""])[0] == "application/json":
        body = response.json()
        code = str(body.get("code", body.get("error_code")))
    if code == "None" and response.status_code in EXPECTED_5XX:
        # Another protocol's own error shape has no code; rest.STATUS answers 501 and 503
        # for EXPECTED_5XX's kinds only.
        return None
    if code not in EXPECTED_5XX.get(response.status_code, set()):
        raise ServerError(operation=case.operation.label, status_code=response.status_code)
    return None


CHECKS = [
    no_fault,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
]


@pytest.fixture(scope="module")
def fuzz_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of its own (the fuzzer's feedback lands in its inference log): iris and echo."""
    location = tmp_path_factory.mktemp("fuzz") / "registry"
    work = tmp_path_factory.mktemp("fuzz-artifacts")
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(work)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
        push_artifact(
            registry,
            write_echo_model(work / "echo.cloudpickle"),
            name="echo",
            format="python",
            signature=echo_signature(),
            trust_pickle=True,
            created_by=CREATED_BY,
        )
    return location


@pytest.fixture(scope="module")
def fuzz_server(start_server: ServerFactory, fuzz_registry: Path) -> ServerProcess:
    """A server of its own: the fuzzer loads and unloads models on it."""
    return start_server("--registry", str(fuzz_registry))


@pytest.fixture
def survives(fuzz_server: ServerProcess) -> Iterator[ServerProcess]:
    """The fuzzed server, checked after the test: still running, live, and no traceback logged."""
    yield fuzz_server
    assert fuzz_server.running, fuzz_server.log()
    reply = httpx.get(f"{fuzz_server.url}/v2/health/live", timeout=30)
    assert reply.status_code == 200
    assert "Traceback" not in fuzz_server.log()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def http(fuzz_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as client:
        yield client


# The hostile cases the issue names, against the live server ------------------------------

INFER = "/v2/models/iris/infer"
ROW = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}


Case = tuple[bytes, dict[str, str], str]
"""A request body, its headers, and a word the error message must contain."""


def binary(shape: list[int], size: int, tail: bytes, word: str) -> Case:
    """An iris request whose input declares `shape` and `size` binary bytes, then `tail`."""
    item = {"name": "input-0", "shape": shape, "datatype": "FP32"}
    head = orjson.dumps({"inputs": [{**item, "parameters": {"binary_data_size": size}}]})
    return head + tail, {"Inference-Header-Content-Length": str(len(head))}, word


def with_length(body: bytes, length: int | str, word: str) -> Case:
    return body, {"Inference-Header-Content-Length": str(length)}, word


def json_case(document: Any, word: str) -> Case:
    return orjson.dumps(document), {}, word


FOUR_FLOATS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype="<f4").tobytes()
HEAD = binary([1, 4], 16, b"", "")[0]
BYTES_INPUT = b'{"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [%s]}]}'
HOSTILE_CASES: dict[str, Case] = {
    "header-length-inside-json": with_length(HEAD + FOUR_FLOATS, len(HEAD) - 3, "JSON"),
    "header-length-past-json": with_length(HEAD + FOUR_FLOATS, len(HEAD) + 4, "JSON"),
    "header-length-past-body": with_length(HEAD + FOUR_FLOATS, 10**12, "body has"),
    "header-length-not-a-number": with_length(HEAD, "12abc", "non-negative integer"),
    "header-length-negative": with_length(HEAD, -5, "non-negative integer"),
    "binary-tail-short": binary([1, 4], 16, FOUR_FLOATS[:7], "7 bytes follow"),
    "giant-shape-binary": binary([2**31, 2**31], 16, FOUR_FLOATS, "16 bytes were given"),
    "giant-shape-json": json_case({"inputs": [{**ROW, "shape": [2**31, 2**31]}]}, "elements"),
    "max-int64-shape-json": json_case(
        {"inputs": [{**ROW, "shape": [2**63 - 1, 2**63 - 1]}]}, "elements"
    ),
    "empty-data-giant-dims": json_case(
        {"inputs": [{**ROW, "shape": [2, 0, 2**63 - 1], "data": [[], []]}]}, "too large"
    ),
    "negative-shape-json": json_case({"inputs": [{**ROW, "shape": [-1, 4]}]}, "shape"),
    "negative-shape-binary": binary([-1, 4], 16, FOUR_FLOATS, "shape"),
    "deeply-nested-data": (
        orjson.dumps({"inputs": [{**ROW, "data": []}]}).replace(
            b"[]", b"[" * 200_000 + b"]" * 200_000
        ),
        {},
        "recursion",
    ),
    "deeply-nested-body": (b'{"inputs": [], "parameters": ' + b'{"a": ' * 200_000, {}, "recursion"),
    "invalid-utf8-bytes": (BYTES_INPUT % b'"\xff"', {}, "UTF-8"),
    "lone-surrogate-bytes": (BYTES_INPUT % b'"\\ud800"', {}, "JSON"),
    "duplicate-input-names": json_case({"inputs": [ROW, ROW]}, "more than once"),
    "many-inputs": json_case(
        {"inputs": [{**ROW, "name": f"in-{i}"} for i in range(20_000)]}, "unknown input"
    ),
    "many-duplicate-inputs": json_case({"inputs": [ROW] * 20_000}, "more than once"),
}


@pytest.fixture
def iris_loaded(http: httpx.Client) -> None:
    """iris is loaded (the fuzzing may have unloaded it)."""
    reply = http.post("/v2/repository/models/iris/load")
    assert reply.status_code == 200, reply.text


@pytest.mark.usefixtures("iris_loaded", "survives")
@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_hostile_request_is_a_client_error(
    http: httpx.Client, fuzz_server: ServerProcess, case: str
) -> None:
    body, headers, word = HOSTILE_CASES[case]
    reply = http.post(INFER, content=body, headers=headers)
    assert reply.status_code == 400, (reply.status_code, reply.text[:500])
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()
    assert error["code"] == "invalid_input"
    assert word in error["error"], error
    # And the server still answers a good request.
    good = http.post(INFER, json={"inputs": [ROW]})
    assert good.status_code == 200, good.text


@pytest.mark.usefixtures("survives")
@SCHEMA.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors_and_answers_as_described(
    case: schemathesis.Case, fuzz_server: ServerProcess, session: requests.Session
) -> None:
    if case.path_parameters and "model_name" in case.path_parameters:
        # Random names only reach the 404; real ones reach decoding, validation and the model.
        # Chosen from the generated name, so that a failure replays and shrinks as usual.
        generated = case.path_parameters["model_name"]
        choices = (*MODELS, generated)
        case.path_parameters["model_name"] = choices[len(generated) % len(choices)]
    case.call_and_validate(base_url=fuzz_server.url, session=session, checks=CHECKS, timeout=30)


def test_the_description_is_served(http: httpx.Client) -> None:
    document = http.get("/openapi.json")
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/json"
    assert document.content == OPENAPI
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b"/openapi.json" in page.content
