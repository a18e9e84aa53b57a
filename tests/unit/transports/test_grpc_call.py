"""What the gRPC service reads from a call: request id, credentials, parameters, bad bytes."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidInput, NotFound, Overloaded
from modelport.transports import grpc_call
from modelport.transports.grpc_gen import inference_pb2 as pb
from modelport.transports.grpc_wire import CallContext


def context(metadata: list[tuple[str, str]]) -> CallContext:
    return CallContext(metadata, "/inference.GRPCInferenceService/ModelInfer", "10.1.2.3", None)


def test_a_valid_request_id_is_kept_and_another_replaced() -> None:
    assert grpc_call.request_id(context([("x-request-id", "r-1")])) == "r-1"
    fresh = grpc_call.request_id(context([("x-request-id", "no spaces")]))
    assert fresh != "no spaces"
    assert len(fresh) == 32


def test_credentials_are_read_from_the_metadata() -> None:
    metadata = [(":path", "/x"), ("authorization", "Bearer t"), ("x-api-key", "k")]
    assert grpc_call.credentials_of(context(metadata)) == grpc_call.Credentials("Bearer t", "k")
    assert grpc_call.credentials_of(context([])) == grpc_call.Credentials(None, None)


def test_trailers_carry_retry_after_for_shed_calls() -> None:
    assert grpc_call.trailers("r", NotFound("x")) == (("x-request-id", "r"),)
    assert grpc_call.trailers("r", Overloaded("x", retry_after=2.5)) == (
        ("x-request-id", "r"),
        ("retry-after", "3"),
    )


def test_version_parameter() -> None:
    request = pb.RepositoryModelLoadRequest(model_name="iris")
    assert grpc_call.version_parameter(request.parameters) is None
    request.parameters["version"].int64_param = 2
    assert grpc_call.version_parameter(request.parameters) == "2"
    request.parameters["version"].string_param = "prod"
    assert grpc_call.version_parameter(request.parameters) == "prod"
    request.parameters["version"].bool_param = True
    with pytest.raises(InvalidInput, match="version number"):
        grpc_call.version_parameter(request.parameters)


def test_bytes_that_do_not_parse_become_invalid_input() -> None:
    parse = grpc_call.lenient(pb.ModelInferRequest)
    assert parse(pb.ModelInferRequest(model_name="iris").SerializeToString()).model_name == "iris"
    malformed = parse(b"\xff\xff")
    with pytest.raises(InvalidInput, match="not a valid ModelInferRequest"):
        grpc_call.parsed(malformed)
    with pytest.raises(InvalidInput, match="model name is empty"):
        grpc_call.model_name("")
