"""TF Serving's row and columnar formats to inference requests, and responses back."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.protocol.types import InferResponse, Tensor
from modelport.serving.record_mapping import RecordMapping
from modelport.transports.rest_instances import (
    columnar_outputs,
    columnar_request,
    instances_request,
    predict_request,
    predictions,
)

from ..serving.conftest import model_version

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = RecordMapping.for_model(model_version((TensorSpec("x", "FP32", (-1, 4)),), FEATURES))
TEXT = RecordMapping.for_model(model_version((TensorSpec("text", "BYTES", (-1,)),)))
TWO = RecordMapping.for_model(
    model_version((TensorSpec("age", "INT64", (-1,)), TensorSpec("tags", "BYTES", (-1, 2))))
)


def _data(mapping: RecordMapping, body: dict[str, Any]) -> dict[str, Any]:
    request, _ = predict_request(body, mapping)
    return {t.name: t.data for t in request.inputs}


def test_rows_objects_and_columns_give_the_same_tensor() -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    expected = np.array(rows, np.float32)
    for body in (
        {"instances": rows},
        {"instances": [{"x": r} for r in rows]},
        {"instances": [dict(zip(FEATURES, r, strict=True)) for r in rows]},
        {"inputs": rows},
        {"inputs": {"x": rows}},
    ):
        np.testing.assert_array_equal(_data(IRIS, body)["x"], expected)


def test_b64_values_become_bytes_and_text_its_utf8() -> None:
    raw = b"\xff\x00bytes"
    encoded = base64.b64encode(raw).decode()
    data = _data(TEXT, {"instances": ["hé", {"b64": encoded}]})["text"]
    assert data.tolist() == ["hé".encode(), raw]
    columns = _data(TEXT, {"inputs": {"text": [{"b64": encoded}]}})["text"]
    assert columns.tolist() == [raw]


def test_several_inputs_need_objects() -> None:
    data = _data(TWO, {"instances": [{"age": 3, "tags": ["a", {"b64": "Yg=="}]}]})
    assert data["age"].tolist() == [3]
    assert data["tags"].tolist() == [[b"a", b"b"]]
    with pytest.raises(InvalidInput, match="each instance must be an object naming them"):
        instances_request([[3, ["a", "b"]]], TWO)
    with pytest.raises(InvalidInput, match="object of tensors by name"):
        columnar_request([[3]], TWO)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1, 2, 3]]}, "4 per record"),
        ({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, "not both"),
        ({}, '"instances"'),
        ({"instances": {"x": [1, 2, 3, 4]}}, "must be a list"),
        ({"instances": [[1, 2, 3, 4], {"x": [1, 2, 3, 4]}]}, "instance 0 and instance 1"),
        ({"inputs": {"x": 5}}, "batch first"),
        ({"inputs": {}}, "empty"),
        ({"inputs": {"x": []}}, "no rows"),
    ],
)
def test_refusals_say_what_to_send(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        predict_request(body, IRIS)


@pytest.mark.parametrize("value", ["not base64!", "YWJ", 5])
def test_bad_b64_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match='"b64"'):
        instances_request([{"b64": value}], TEXT)


def test_columns_of_different_batch_sizes_are_refused() -> None:
    with pytest.raises(InvalidInput, match="first \\(batch\\) dimension"):
        columnar_request({"age": [1, 2], "tags": [["a", "b"]]}, TWO)


def _response(*outputs: Tensor) -> InferResponse:
    return InferResponse("m", "1", "id", list(outputs))


def test_one_output_answers_bare_values_several_answer_objects() -> None:
    label = Tensor("label", "INT64", (2,), np.array([0, 2], np.int64))
    proba = Tensor("proba", "FP32", (2, 2), np.array([[0.75, 0.25], [0.5, 0.5]], np.float32))
    dump = orjson.OPT_SERIALIZE_NUMPY
    assert orjson.loads(orjson.dumps(predictions(_response(label)), option=dump)) == [0, 2]
    rows = orjson.loads(orjson.dumps(predictions(_response(label, proba)), option=dump))
    assert rows == [{"label": 0, "proba": [0.75, 0.25]}, {"label": 2, "proba": [0.5, 0.5]}]
    columns = orjson.loads(orjson.dumps(columnar_outputs(_response(label, proba)), option=dump))
    assert columns == {"label": [0, 2], "proba": [[0.75, 0.25], [0.5, 0.5]]}


def test_bytes_outputs_are_text_or_b64() -> None:
    text = Tensor("t", "BYTES", (2,), np.array([b"es", b"\xff"], dtype=object))
    expected = ["es", {"b64": base64.b64encode(b"\xff").decode()}]
    assert predictions(_response(text)) == expected
    assert columnar_outputs(_response(text)) == expected
    other = Tensor("n", "INT64", (2,), np.array([1, 2], np.int64))
    assert predictions(_response(text, other)) == [
        {"t": "es", "n": 1},
        {"t": expected[1], "n": 2},
    ]
