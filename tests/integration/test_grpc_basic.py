"""gRPC against a real server with modelport's own generated stubs: infer, metadata, errors, stream.

Third-party clients (tritonclient, kserve) run in their own processes: see test_grpc_clients.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import modelport
from modelport.transports.grpc_gen import inference_pb2 as pb
from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

from ..conftest import assert_close_float32

pytestmark = pytest.mark.integration

ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]],
    np.float32,
)
Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def channel(grpc_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_server.grpc_address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Stub:
    return Stub(channel)


@pytest.fixture(scope="module")
def iris(demo_registry: Path) -> Iterator[Any]:
    model = modelport.load("iris", registry=demo_registry)
    yield model
    model.close()


def raw_request(
    rows: np.ndarray[Any, Any], model_name: str = "iris", **fields: Any
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model_name, **fields)
    request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def typed_request(rows: np.ndarray[Any, Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return request


def bytes_raw(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def split_bytes_raw(raw: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return out


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_raw_infer_matches_the_model_and_carries_provenance(
    stub: Stub, iris: Any, batch: int
) -> None:
    rows = ROWS[:batch]
    response, call = stub.ModelInfer.with_call(
        raw_request(rows, id="rq-7"), metadata=[("x-request-id", f"grpc-test-{batch}")]
    )
    want = iris.predict(rows)
    assert response.model_name == "iris"
    assert response.model_version == "1"
    assert response.id == "rq-7"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("predict", "INT64", [batch]),
        ("predict_proba", "FP32", [batch, 3]),
    ]
    assert not response.outputs[0].HasField("contents")
    predict = np.frombuffer(response.raw_output_contents[0], np.int64)
    proba = np.frombuffer(response.raw_output_contents[1], np.float32).reshape(batch, 3)
    assert predict.tolist() == want["predict"].tolist()
    assert_close_float32(proba, want["predict_proba"])
    params = response.parameters
    assert params["modelport.sha256"].string_param == iris.version.digest
    assert params["modelport.request_id"].string_param == f"grpc-test-{batch}"
    assert ("x-request-id", f"grpc-test-{batch}") in tuple(call.trailing_metadata())


def test_typed_inputs_get_typed_outputs(stub: Stub, iris: Any) -> None:
    response = stub.ModelInfer(typed_request(ROWS))
    want = iris.predict(ROWS)
    assert not response.raw_output_contents
    assert list(response.outputs[0].contents.int64_contents) == want["predict"].tolist()
    proba = np.array(response.outputs[1].contents.fp32_contents, np.float32)
    assert_close_float32(proba.reshape(-1, 3), want["predict_proba"])
    # A generated request id when the client sends none (or an unusable one).
    assert len(response.parameters["modelport.request_id"].string_param) == 32


def test_bytes_travel_raw_with_length_prefixes(stub: Stub) -> None:
    phrases = ["bonjour", "hola", "no idea", "à bientôt"]
    request = pb.ModelInferRequest(model_name="greeting-language")
    request.inputs.add(name="text", datatype="BYTES", shape=[len(phrases)])
    request.raw_input_contents.append(bytes_raw([p.encode() for p in phrases]))
    response = stub.ModelInfer(request)
    assert response.outputs[0].datatype == "BYTES"
    assert split_bytes_raw(response.raw_output_contents[0]) == [b"fr", b"es", b"unknown", b"fr"]


def test_requested_output_only(stub: Stub) -> None:
    request = raw_request(ROWS[:2])
    request.outputs.add(name="predict_proba")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["predict_proba"]
    assert len(response.raw_output_contents) == 1


def test_health_and_metadata(stub: Stub, iris: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "modelport"
    assert {"binary_tensor_data", "model_repository"} <= set(server.extensions)
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris", version="1")).ready is True
    # Unknown models and versions are not ready rather than an error (tritonclient raises).
    assert stub.ModelReady(pb.ModelReadyRequest(name="no-such-model")).ready is False
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris", version="99")).ready is False
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    assert meta.name == "iris"
    assert list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input-0", "FP32", [-1, 4])
    ]
    assert [t.name for t in meta.outputs] == ["predict", "predict_proba"]
    assert meta.parameters["modelport.sha256"].string_param == iris.version.digest


def test_standard_health_service_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    database = ProtoReflectionDescriptorDatabase(channel)
    assert "inference.GRPCInferenceService" in database.get_services()
    found = database.FindFileContainingSymbol("inference.ModelInferRequest")
    assert "raw_input_contents" in {f.name for m in found.message_type for f in m.field}


def with_inputs(build: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    build(request)
    return request


def _short_raw(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[2, 4])
    r.raw_input_contents.append(ROWS[:1].tobytes())


def _no_contents(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])


def _mixed(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    r.inputs[0].contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    r.raw_input_contents.append(ROWS[:1].tobytes())


def _raw_count(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    r.raw_input_contents.extend([ROWS[:1].tobytes(), ROWS[:1].tobytes()])


def _wrong_field(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    r.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0, 4.0])


def _typed_count(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    r.inputs[0].contents.fp32_contents.extend([1.0, 2.0, 3.0])


def _fp16_typed(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP16", shape=[1, 4])


def _unknown_datatype(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FLOAT", shape=[1, 4])
    r.raw_input_contents.append(ROWS[:1].tobytes())


def _wrong_shape(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[4, 1])
    r.raw_input_contents.append(ROWS[:1].tobytes())


def _negative_dim(r: pb.ModelInferRequest) -> None:
    r.inputs.add(name="input-0", datatype="FP32", shape=[-1, 4])
    r.raw_input_contents.append(ROWS[:1].tobytes())


def _unknown_output(r: pb.ModelInferRequest) -> None:
    _short_raw(r)
    r.ClearField("raw_input_contents")
    r.raw_input_contents.append(ROWS[:2].tobytes())
    r.outputs.add(name="probabilities")


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (_short_raw, "is 32 bytes, but 16 bytes were given"),
        (_no_contents, "has no data"),
        (_mixed, "use one form for every input"),
        (_raw_count, "raw_input_contents has 2 entries but the request has 1 inputs"),
        (_wrong_field, "go in contents.fp32_contents, not contents.fp64_contents"),
        (_typed_count, "needs 4 elements, contents.fp32_contents has 3"),
        (_fp16_typed, "send them in raw_input_contents"),
        (_unknown_datatype, "unknown datatype 'FLOAT'"),
        (_wrong_shape, "the model expects [-1, 4]"),
        (_negative_dim, "negative dimension"),
        (_unknown_output, "unknown output(s) 'probabilities'"),
    ],
)
def test_malformed_requests_are_invalid_argument(stub: Stub, build: Any, fragment: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(with_inputs(build), metadata=[("x-request-id", "bad-1")])
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert fragment in error.details()
    assert ("x-request-id", "bad-1") in tuple(error.trailing_metadata())


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (raw_request(ROWS[:1], "no-such-model"), grpc.StatusCode.NOT_FOUND),
        (raw_request(ROWS[:1], model_version="99"), grpc.StatusCode.NOT_FOUND),
        (raw_request(ROWS[:1], model_version="newest"), grpc.StatusCode.NOT_FOUND),
        (raw_request(ROWS[:1], model_name=""), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_unknown_models_and_versions(
    stub: Stub, request_: pb.ModelInferRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_)
    assert caught.value.code() == code, caught.value.details()
    with pytest.raises(grpc.RpcError) as meta:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"))
    assert meta.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_answers_in_order_and_survives_a_bad_request(stub: Stub, iris: Any) -> None:
    requests = [raw_request(ROWS[: 1 + i % 4], id=f"s{i}") for i in range(12)]
    requests[5] = raw_request(ROWS[:1], id="s5", model_name="no-such-model")
    requests[8].raw_input_contents[0] = b"\x00" * 3
    answers = list(stub.ModelStreamInfer(iter(requests), metadata=[("x-request-id", "str")]))
    assert len(answers) == len(requests)
    for i, answer in enumerate(answers):
        if i in (5, 8):
            assert answer.error_message
            assert not answer.HasField("infer_response")
            continue
        assert answer.error_message == ""
        response = answer.infer_response
        assert response.id == f"s{i}"
        rows = ROWS[: 1 + i % 4]
        predict = np.frombuffer(response.raw_output_contents[0], np.int64)
        assert predict.tolist() == iris.predict(rows)["predict"].tolist()
        assert response.parameters["modelport.request_id"].string_param == f"str-{i + 1}"
    assert "no-such-model" in answers[5].error_message
    assert "3 bytes were given" in answers[8].error_message


OPEN_STREAMS = 200
"""More than a thread pool per call would have (grpcio's sync server had 64 unary threads)."""


def test_open_streams_do_not_keep_unary_calls_waiting(grpc_server: Any) -> None:
    """Many streams open at once on one connection: each is answered, and a unary call made
    while they are all open is answered too."""
    import asyncio

    async def run() -> None:
        async with grpc.aio.insecure_channel(grpc_server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            streams = [stub.ModelStreamInfer() for _ in range(OPEN_STREAMS)]
            for i, stream in enumerate(streams):
                await stream.write(raw_request(ROWS[:1], id=f"open-{i}"))
            for i, stream in enumerate(streams):
                # Each stream is open and answered by its own handler.
                answer = await stream.read()
                assert answer.infer_response.id == f"open-{i}", answer.error_message
            unary = await stub.ModelInfer(raw_request(ROWS[:2]), timeout=30)
            assert len(np.frombuffer(unary.raw_output_contents[0], np.int64)) == 2
            for stream in streams:
                await stream.done_writing()
                assert await stream.read() == grpc.aio.EOF

    asyncio.run(run())


def test_repository_index_load_and_unload(stub: Stub) -> None:
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    names = {(m.name, m.version, m.state) for m in index.models}
    assert ("iris-xgboost", "1", "READY") in names
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="iris-xgboost"))
    try:
        assert stub.ModelReady(pb.ModelReadyRequest(name="iris-xgboost")).ready is False
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(raw_request(ROWS[:1], model_name="iris-xgboost"))
        # Unloaded by an operator: the client's to fix (load it), not "retry later".
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == (
            "model 'iris-xgboost' version 1 was unloaded; "
            "load it with POST /v2/repository/models/iris-xgboost/load"
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="iris-xgboost"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        ready_only = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True))
        assert "iris-xgboost" not in {m.name for m in ready_only.models}
    finally:
        load = pb.RepositoryModelLoadRequest(model_name="iris-xgboost")
        load.parameters["version"].string_param = "1"
        stub.RepositoryModelLoad(load)
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris-xgboost")).ready is True
    answer = stub.ModelInfer(raw_request(ROWS[:1], model_name="iris-xgboost"))
    assert answer.model_version == "1"
    with pytest.raises(grpc.RpcError) as caught:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="no-such-model"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    config = pb.RepositoryModelLoadRequest(model_name="iris")
    config.parameters["config"].string_param = "{}"
    with pytest.raises(grpc.RpcError) as caught:
        stub.RepositoryModelLoad(config)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_bytes_that_are_not_protobuf_are_invalid_argument(channel: grpc.Channel) -> None:
    raw = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as error:
        raw(b"\xff\xff\xff\xff not protobuf", timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in (error.value.details() or "")
