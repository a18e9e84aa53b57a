"""The metadata types encode to the JSON the REST API has always answered."""

from __future__ import annotations

import orjson

from modelport.protocol.metadata import IndexEntry, ModelMetadata, ServerMetadata, TensorMetadata


def test_server_metadata_json() -> None:
    meta = ServerMetadata("modelport", "1.2.3", ["binary_tensor_data", "model_repository"])
    assert orjson.dumps(meta) == (
        b'{"name":"modelport","version":"1.2.3",'
        b'"extensions":["binary_tensor_data","model_repository"]}'
    )


def test_model_metadata_json_keeps_the_key_order() -> None:
    meta = ModelMetadata(
        name="iris",
        versions=["1", "2"],
        platform="modelport_sklearn",
        inputs=[TensorMetadata("input-0", "FP32", [-1, 4])],
        outputs=[TensorMetadata("predict", "INT64", [-1])],
        parameters={"modelport.sha256": "ab", "modelport.trusted_pickle": False},
    )
    assert orjson.dumps(meta) == orjson.dumps(
        {
            "name": "iris",
            "versions": ["1", "2"],
            "platform": "modelport_sklearn",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
            "parameters": {"modelport.sha256": "ab", "modelport.trusted_pickle": False},
        }
    )


def test_index_entries_json() -> None:
    entries = [IndexEntry("iris", "1", "READY", ""), IndexEntry("x", "3", "UNAVAILABLE", "boom")]
    assert orjson.dumps(entries) == (
        b'[{"name":"iris","version":"1","state":"READY","reason":""},'
        b'{"name":"x","version":"3","state":"UNAVAILABLE","reason":"boom"}]'
    )
