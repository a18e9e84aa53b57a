"""The OpenAPI description of the REST API: valid, complete, and true to what the codecs write."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from modelport import __version__
from modelport.errors import ErrorKind
from modelport.monitoring.drift import DriftMonitor, ReferenceProfile
from modelport.monitoring.feedback import Score
from modelport.monitoring.reference_profile import build_profile
from modelport.protocol import codec_binary, codec_json
from modelport.protocol.datatypes import DATATYPES
from modelport.protocol.signature import TensorSpec
from modelport.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor
from modelport.serving.dataplane import DataPlane
from modelport.transports import openapi, openapi_invocations, swagger_ui
from modelport.transports.rest import RestApp
from modelport.transports.routes import Route

DataPlaneFactory = Callable[..., DataPlane]
"""`make_dataplane` (tests/unit/transports/conftest.py)."""


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.openapi_document()


@pytest.fixture
def routes(make_dataplane: DataPlaneFactory) -> list[Route]:
    """Every route of the REST app, as its router holds them."""
    return list(RestApp(make_dataplane(), max_body_bytes=1).router.routes)


@pytest.fixture
def open_paths(routes: list[Route]) -> set[str]:
    """Paths that need no credential even with --require-auth."""
    return {route.path for route in routes if route.action is None}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def validator(document: dict[str, Any], name: str) -> OAS31Validator:
    """A validator for component schema `name`, its references resolved in `document`."""
    return OAS31Validator({"components": document["components"], "$ref": schema_ref(name)})


def resolved(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """`item`, or the component its `$ref` names."""
    if "$ref" not in item:
        return item
    _, kind, name = item["$ref"].removeprefix("#/").split("/")
    found: dict[str, Any] = document["components"][kind][name]
    return found


def schema_ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate_spec(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__


def test_served_bytes_are_the_document() -> None:
    assert json.loads(openapi.OPENAPI) == openapi.openapi_document()


def test_copies_are_independent() -> None:
    mine = openapi.openapi_document()
    mine["paths"].clear()
    assert openapi.openapi_document()["paths"]
    assert json.loads(openapi.OPENAPI)["paths"]


def test_every_endpoint_is_described_and_nothing_else(
    document: dict[str, Any], routes: list[Route]
) -> None:
    described = {(method, path) for method, path, _ in operations(document)}
    assert described == {(route.method.lower(), route.path) for route in routes}
    assert len(routes) == len(described)


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))


def test_path_parameters_match_the_path(document: dict[str, Any]) -> None:
    for _, path, operation in operations(document):
        declared = {
            p["name"]
            for p in (resolved(document, p) for p in operation["parameters"])
            if p["in"] == "path"
        }
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path


def test_every_operation_documents_its_errors(
    document: dict[str, Any], open_paths: set[str]
) -> None:
    for _, path, operation in operations(document):
        codes = set(operation["responses"])
        assert {"200", "400", "500", "503"} <= codes, path
        assert ({"401", "403"} <= codes) is (path not in open_paths), path
        # Each protocol's errors have its own body: MLflow's on its paths, else the OIP's.
        shape = openapi_invocations.ERROR
        for code in codes - {"200"}:
            error = resolved(document, operation["responses"][code])
            schema = error["content"]["application/json"]["schema"]
            if path in openapi_invocations.PATHS:
                assert schema == shape, (path, code)
            else:  # the OIP's Error, or another protocol's own (TF Serving's MessageError)
                assert schema["$ref"].startswith(schema_ref("")), (path, code)
                assert schema["$ref"].endswith("Error"), (path, code)


def test_open_endpoints_need_no_credential(document: dict[str, Any], open_paths: set[str]) -> None:
    for _, path, operation in operations(document):
        assert (operation.get("security") == []) is (path in open_paths), path
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"]["name"] == "x-api-key"


def test_error_codes_and_datatypes_come_from_the_code(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Error"]["properties"]["code"]["enum"]) == {k.value for k in ErrorKind}
    assert set(schemas["RequestInput"]["properties"]["datatype"]["enum"]) == DATATYPES
    assert schemas["RequestInput"]["properties"]["shape"]["maxItems"] == codec_json.MAX_RANK


def test_examples_fit_their_schemas_and_the_infer_example_decodes(
    document: dict[str, Any],
) -> None:
    found = 0
    for _, path, operation in operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "example" not in media:
            continue
        found += 1
        schema = media["schema"]
        if "$ref" in schema:
            validator(document, schema["$ref"].rpartition("/")[2]).validate(media["example"])
        else:
            OAS31Validator({"components": document["components"], **schema}).validate(
                media["example"]
            )
        if path.endswith("/infer"):
            request = codec_json.decode_request(json.dumps(media["example"]).encode())
            assert request.inputs[0].data.shape == (1, 4)
    # OIP: two infer paths, feedback, index, load, unload; TF Serving's three :predict paths;
    # Vertex's two; Azure's /score; /invocations, its /models form and /models
    assert found == 15


def response() -> InferResponse:
    outputs = [
        Tensor("label", "INT64", (2,), np.array([1, 2], dtype=np.int64)),
        Tensor("proba", "FP32", (2, 2), np.array([[0.5, np.nan], [1.0, 0.0]], dtype=np.float32)),
        Tensor("text", "BYTES", (1,), np.array([b"hi"], dtype=object)),
        Tensor("flags", "BOOL", (1,), np.array([True])),
    ]
    return InferResponse("m", "3", "req-1", outputs, {"modelport.sha256": "ab" * 32})


def test_encoded_json_responses_fit_the_response_schema(document: dict[str, Any]) -> None:
    body = codec_json.encode_response(response())
    validator(document, "InferenceResponse").validate(json.loads(body))


def test_binary_responses_have_a_json_part_that_fits_the_schema(document: dict[str, Any]) -> None:
    request = InferRequest([], outputs=[RequestedOutput("proba", True)], binary_output=True)
    body, length = codec_binary.encode_response(response(), request)
    assert length is not None
    head = json.loads(body[:length])
    validator(document, "InferenceResponse").validate(head)
    assert "data" not in head["outputs"][1]


@pytest.mark.parametrize("rows", [0, 40], ids=["collecting", "ok"])
def test_drift_reports_fit_the_schema(document: dict[str, Any], rows: int) -> None:
    numbers = np.random.default_rng(7).normal(size=500)
    labels = np.array(["x", "y"] * 250, dtype=object)
    specs = [TensorSpec("x", "FP64", (-1,)), TensorSpec("kind", "BYTES", (-1,))]
    profile = build_profile({"x": numbers, "kind": labels}, specs)
    monitor = DriftMonitor(ReferenceProfile.from_dict(profile), window=100, min_rows=30)
    if rows:
        monitor.observe({"x": numbers[:rows], "kind": labels[:rows]})
    # As the observer serves it.
    report = {"model": "m", "version": "1", **monitor.report()}
    assert report["status"] == ("ok" if rows else "collecting")
    validator(document, "DriftReport").validate(json.loads(json.dumps(report)))


def test_feedback_answers_fit_the_schema(document: dict[str, Any]) -> None:
    scores = {1: Score("classification", rows=4, correct=3), 2: Score("regression", rows=0)}
    answer = {
        "model": "m",
        "received": 4,
        "matched": 4,
        "versions": {str(n): s.to_dict() for n, s in scores.items()},
    }
    validator(document, "FeedbackResponse").validate(json.loads(json.dumps(answer)))


def test_the_response_schema_is_not_vacuous(document: dict[str, Any]) -> None:
    check = validator(document, "InferenceResponse")
    with pytest.raises(ValidationError):
        check.validate({"model_name": "m", "outputs": [{"name": "x"}]})
    with pytest.raises(ValidationError):
        validator(document, "Error").validate({"error": "x", "code": "oops"})


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_swagger_ui_page_loads_the_document_from_a_pinned_checked_release() -> None:
    page = _Page()
    page.feed(swagger_ui.SWAGGER_UI.decode())
    assert "/openapi.json" in "".join(page.text)
    pinned = f"swagger-ui-dist@{swagger_ui.SWAGGER_UI_VERSION}/"
    external = [
        attrs
        for tag, attrs in page.tags
        if tag in ("script", "link") and (attrs.get("src") or attrs.get("href"))
    ]
    assert len(external) == 2
    for attrs in external:
        url = attrs.get("src") or attrs.get("href") or ""
        assert pinned in url
        integrity = attrs["integrity"] or ""
        assert integrity.startswith("sha384-")
        assert len(base64.b64decode(integrity.removeprefix("sha384-"), validate=True)) == 48
        assert attrs["crossorigin"] == "anonymous"
