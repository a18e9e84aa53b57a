"""What the gRPC service reads from a call: request id, peer, parameters, malformed bytes."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.errors import InvalidInput, NotFound, Overloaded
from modelport.transports import grpc_call
from modelport.transports.grpc_gen import inference_pb2 as pb


class Context:
    """The parts of a gRPC servicer context the helpers read."""

    def __init__(self, peer: str = "", metadata: tuple[tuple[str, Any], ...] = ()) -> None:
        self._peer = peer
        self._metadata = metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:10.1.2.3:5678", "10.1.2.3"), ("ipv6:[::1]:5678", "::1"), ("unix:/tmp/s", "/tmp/s")],
)
def test_peer_is_the_client_host(peer: str, host: str) -> None:
    assert grpc_call.peer(Context(peer)) == host  # type: ignore[arg-type]


def test_a_valid_request_id_is_kept_and_another_replaced() -> None:
    kept = Context(metadata=(("x-request-id", "r-1"),))
    assert grpc_call.request_id(kept) == "r-1"  # type: ignore[arg-type]
    fresh = grpc_call.request_id(Context(metadata=(("x-request-id", "no spaces"),)))  # type: ignore[arg-type]
    assert fresh != "no spaces"
    assert len(fresh) == 32


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


class Deadline:
    def __init__(self, left: float) -> None:
        self.left = left

    def time_remaining(self) -> float:
        return self.left


def test_time_left_is_none_without_a_deadline() -> None:
    # What grpcio's synchronous server reports for a call without a deadline.
    assert grpc_call.time_left(Deadline(9.223372035058482e18)) is None  # type: ignore[arg-type]
    assert grpc_call.time_left(Deadline(4.5)) == 4.5  # type: ignore[arg-type]
