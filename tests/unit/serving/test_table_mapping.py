"""Columns to inputs and outputs to columns: every mapping rule and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.serving.table_mapping import TableMapping, recorded_features

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
OUTPUTS = (TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP32", (-1, 3)))


def version(
    inputs: tuple[TensorSpec, ...],
    features: list[str] | None = None,
    outputs: tuple[TensorSpec, ...] = OUTPUTS,
) -> ModelVersion:
    profile = None
    if features is not None:
        profile = {
            "format": 1,
            "rows": 1,
            "source_rows": 1,
            "features": [
                {"name": n, "input": inputs[0].name, "column": j, "kind": "numeric"}
                # Stored out of order: the column index, not the list order, is the order.
                for j, n in reversed(list(enumerate(features)))
            ],
        }
    return ModelVersion(
        name="m",
        version=1,
        digest="0" * 64,
        size=1,
        format="onnx",
        signature=Signature(inputs, outputs),
        created_at=datetime.now(UTC),
        created_by="tests",
        source="m.onnx",
        pickle=False,
        trusted_pickle=False,
        reference_profile=profile,
    )


IRIS = version((TensorSpec("input-0", "FP32", (-1, 4)),), FEATURES)


def iris_batch(**extra: Any) -> pa.RecordBatch:
    columns: dict[str, Any] = {
        "petal_width": [0.2, 1.8],
        "id": ["a", "b"],
        "sepal_length": [5.1, 5.9],
        "sepal_width": [3.5, 3.0],
        "petal_length": [1.4, 5.1],
    }
    columns.update(extra)
    return pa.RecordBatch.from_pydict(columns)


def test_a_single_matrix_input_takes_the_recorded_feature_order() -> None:
    batch = iris_batch()
    mapping = TableMapping.for_model(IRIS, batch.schema.names)
    assert mapping.columns == tuple(FEATURES)
    x = mapping.inputs(batch)["input-0"]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(
        x, np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]], dtype=np.float32)
    )


def test_features_override_the_recorded_order() -> None:
    batch = iris_batch()
    order = ["petal_width", "petal_length", "sepal_width", "sepal_length"]
    mapping = TableMapping.for_model(IRIS, batch.schema.names, order)
    np.testing.assert_array_equal(
        mapping.inputs(batch)["input-0"][0], np.array([0.2, 1.4, 3.5, 5.1], dtype=np.float32)
    )


def test_no_recorded_order_is_ambiguous_and_says_to_pass_features() -> None:
    bare = version((TensorSpec("input-0", "FP32", (-1, 4)),))
    assert recorded_features(bare, "input-0") == ()
    with pytest.raises(InvalidInput, match="--features"):
        TableMapping.for_model(bare, iris_batch().schema.names)


def test_the_wrong_number_of_features_is_refused() -> None:
    with pytest.raises(InvalidInput, match="takes 4 feature column"):
        TableMapping.for_model(IRIS, FEATURES, FEATURES[:3])


def test_missing_columns_are_named_with_the_columns_found() -> None:
    with pytest.raises(InvalidInput) as refused:
        TableMapping.for_model(IRIS, ["sepal_length", "petal_width", "id"])
    message = refused.value.message
    assert "'sepal_width'" in message
    assert "'petal_length'" in message
    assert "3 column(s): 'sepal_length', 'petal_width', 'id'" in message


def test_named_inputs_take_their_columns() -> None:
    mv = version(
        (TensorSpec("age", "INT64", (-1,)), TensorSpec("score", "FP64", (-1, 1))),
        outputs=(TensorSpec("y", "FP32", (-1,)),),
    )
    batch = pa.RecordBatch.from_pydict({"score": [0.5, 1.5], "age": [30, 40], "other": [1, 2]})
    arrays = TableMapping.for_model(mv, batch.schema.names).inputs(batch)
    assert arrays["age"].dtype == np.int64
    assert arrays["age"].shape == (2,)
    assert arrays["score"].shape == (2, 1)


def test_a_named_matrix_input_takes_a_list_column() -> None:
    mv = version((TensorSpec("x", "FP32", (-1, 2)),))
    batch = pa.RecordBatch.from_pydict({"x": [[1.0, 2.0], [3.0, 4.0]]})
    x = TableMapping.for_model(mv, ["x"]).inputs(batch)["x"]
    np.testing.assert_array_equal(x, np.array([[1, 2], [3, 4]], dtype=np.float32))
    ragged = pa.RecordBatch.from_pydict({"x": [[1.0, 2.0], [3.0]]})
    with pytest.raises(InvalidInput, match="2 values in every row"):
        TableMapping.for_model(mv, ["x"]).inputs(ragged)


def test_bytes_inputs_take_text_and_binary_columns() -> None:
    mv = version((TensorSpec("text", "BYTES", (-1,)),), outputs=(TensorSpec("y", "BYTES", (-1,)),))
    mapping = TableMapping.for_model(mv, ["text"])
    text = mapping.inputs(pa.RecordBatch.from_pydict({"text": ["héllo", "b"]}))["text"]
    assert text.tolist() == ["héllo".encode(), b"b"]
    raw = mapping.inputs(pa.RecordBatch.from_pydict({"text": [b"\x00\xff"]}))["text"]
    assert raw.tolist() == [b"\x00\xff"]
    with pytest.raises(InvalidInput, match="give text or binary"):
        mapping.inputs(pa.RecordBatch.from_pydict({"text": [1, 2]}))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (["5.1", "x"], "does not convert to FP32"),
        ([5.1, None], "empty \\(null\\) cell"),
    ],
)
def test_values_that_do_not_convert_are_refused(values: list[Any], match: str) -> None:
    batch = iris_batch(sepal_length=values)
    with pytest.raises(InvalidInput, match=match):
        TableMapping.for_model(IRIS, batch.schema.names).inputs(batch)


def test_text_numbers_convert_and_fractions_do_not_become_integers() -> None:
    batch = iris_batch(sepal_length=[" 5.1", "5.9 "])
    x = TableMapping.for_model(IRIS, batch.schema.names).inputs(batch)["input-0"]
    assert x[:, 0].tolist() == pytest.approx([5.1, 5.9])
    ints = version((TensorSpec("n", "INT64", (-1,)),))
    with pytest.raises(InvalidInput, match="does not convert to INT64"):
        TableMapping.for_model(ints, ["n"]).inputs(pa.RecordBatch.from_pydict({"n": [1.5]}))


def test_features_apply_only_to_one_matrix_input() -> None:
    two = version((TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "FP32", (-1,))))
    with pytest.raises(InvalidInput, match="one \\[-1, F\\] input"):
        TableMapping.for_model(two, ["a", "b"], ["a", "b"])


def test_outputs_as_columns_and_as_lists() -> None:
    outputs = {
        "predict": np.array([0, 2]),
        "predict_proba": np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]], dtype=np.float32),
    }
    columns = TableMapping.for_model(IRIS, FEATURES).output_columns(outputs)
    assert [name for name, _ in columns] == [
        "predict",
        "predict_proba_0",
        "predict_proba_1",
        "predict_proba_2",
    ]
    assert columns[0][1].type == pa.int64()
    assert columns[1][1].type == pa.float32()
    assert columns[3][1].to_pylist() == pytest.approx([0.0, 0.7])
    lists = TableMapping.for_model(IRIS, FEATURES, outputs_as="lists").output_columns(outputs)
    assert [name for name, _ in lists] == ["predict", "predict_proba"]
    assert lists[1][1].to_pylist()[1] == pytest.approx([0.1, 0.2, 0.7])


def test_bytes_outputs_are_written_as_text() -> None:
    mv = version((TensorSpec("text", "BYTES", (-1,)),), outputs=(TensorSpec("y", "BYTES", (-1,)),))
    out = np.array([b"en", b"\xff"], dtype=object)
    ((name, column),) = TableMapping.for_model(mv, ["text"]).output_columns({"y": out})
    assert name == "y"
    assert column.to_pylist() == ["en", "\ufffd"]
