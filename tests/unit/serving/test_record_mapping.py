"""Records to input tensors and outputs to records: the table's rules, every refusal, and the
same predictions as `Model.predict_table` on the demo models."""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import modelport
from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.protocol.types import InferResponse, Tensor
from modelport.serving.embedded import Model
from modelport.serving.record_mapping import RecordMapping, output_records

from ...conftest import assert_close_float32
from .conftest import model_version

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


IRIS = model_version((TensorSpec("input-0", "FP32", (-1, 4)),), FEATURES)


@pytest.fixture(scope="module")
def iris(demo_registry: Path) -> Iterator[Model]:
    model = modelport.load("iris", registry=demo_registry)
    yield model
    model.close()


@pytest.fixture(scope="module")
def greeting(demo_registry: Path) -> Iterator[Model]:
    model = modelport.load("greeting-language", registry=demo_registry)
    yield model
    model.close()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """The 150 iris rows as records, with an id field the model does not take."""
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    return [
        {"id": f"r{i:03d}", **{name: float(v) for name, v in zip(FEATURES, row, strict=True)}}
        for i, row in enumerate(x)
    ]


def predict(model: Model, tensors: list[Tensor]) -> dict[str, Any]:
    return model.predict({t.name: t.data for t in tensors})


def test_records_predict_as_the_same_rows_of_a_table(
    iris: Model, rows: list[dict[str, Any]]
) -> None:
    mapping = RecordMapping.for_model(iris.version)
    expected = iris.predict_table(pa.Table.from_pylist(rows), outputs_as="lists")
    together = predict(iris, mapping.tensors(rows))
    assert together["predict"].tolist() == expected["predict"].to_pylist()
    assert_close_float32(together["predict_proba"], expected["predict_proba"].to_pylist())
    # One record at a time, as a stream decodes them: the same answers.
    for i in (0, 60, 149):
        (tensor,) = mapping.tensors(rows[i])
        assert tensor.shape == (1, 4)
        assert tensor.datatype == "FP32"
        one = predict(iris, [tensor])
        assert one["predict"].tolist() == [expected["predict"][i].as_py()]
        assert_close_float32(one["predict_proba"][0], expected["predict_proba"][i].as_py())


def test_the_recorded_feature_order_ignores_the_fields_order() -> None:
    shuffled = {"petal_width": 0.2, "id": "a", "petal_length": 1.4, "sepal_width": 3.5}
    shuffled["sepal_length"] = 5.1
    (tensor,) = RecordMapping.for_model(IRIS).tensors(shuffled)
    assert tensor.data.dtype == np.float32
    np.testing.assert_array_equal(tensor.data, np.array([[5.1, 3.5, 1.4, 0.2]], np.float32))


def test_explicit_features_set_the_order(iris: Model) -> None:
    order = ["petal_width", "petal_length", "sepal_width", "sepal_length"]
    (tensor,) = RecordMapping.for_model(IRIS, features=order).tensors(ROW)
    np.testing.assert_array_equal(tensor.data, np.array([[0.2, 1.4, 3.5, 5.1]], np.float32))
    # Renamed fields in the model's order: the features list says which is which.
    renamed = {"a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2}
    mapping = RecordMapping.for_model(iris.version, features=["a", "b", "c", "d"])
    same = predict(iris, mapping.tensors(renamed))
    direct = predict(iris, RecordMapping.for_model(iris.version).tensors(ROW))
    assert same["predict"].tolist() == direct["predict"].tolist()
    assert_close_float32(same["predict_proba"], direct["predict_proba"])


def test_a_named_input_takes_a_list_and_wins_over_features() -> None:
    mapping = RecordMapping.for_model(IRIS)
    (tensor,) = mapping.tensors({"input-0": [1, 2, 3, 4]})
    np.testing.assert_array_equal(tensor.data, np.array([[1, 2, 3, 4]], np.float32))
    (both,) = mapping.tensors({**ROW, "input-0": [9, 9, 9, 9]})
    np.testing.assert_array_equal(both.data, np.full((1, 4), 9, np.float32))


def test_named_inputs_of_each_shape() -> None:
    mv = model_version(
        (
            TensorSpec("age", "INT64", (-1,)),
            TensorSpec("score", "FP64", (-1, 1)),
            TensorSpec("tags", "INT32", (-1, -1)),
            TensorSpec("ok", "BOOL", (-1,)),
        )
    )
    mapping = RecordMapping.for_model(mv)
    tensors = mapping.tensors(
        [
            {"age": 30, "score": 0.5, "tags": [1, 2], "ok": True},
            {"age": "41", "score": [1.5], "tags": [3, 4], "ok": False, "other": None},
        ]
    )
    by_name = {t.name: t for t in tensors}
    assert by_name["age"].data.tolist() == [30, 41]
    assert by_name["age"].data.dtype == np.int64
    assert by_name["score"].shape == (2, 1)
    assert by_name["tags"].data.tolist() == [[1, 2], [3, 4]]
    assert by_name["tags"].data.dtype == np.int32
    assert by_name["ok"].data.tolist() == [True, False]


def test_numbers_convert_as_a_table_converts_them() -> None:
    ints = RecordMapping.for_model(model_version((TensorSpec("n", "INT64", (-1,)),)))
    assert ints.tensors([{"n": 2.0}, {"n": " 7 "}, {"n": np.int8(3)}])[0].data.tolist() == [2, 7, 3]
    floats = RecordMapping.for_model(model_version((TensorSpec("x", "FP64", (-1,)),)))
    values = [{"x": " 5.1"}, {"x": decimal.Decimal("0.25")}, {"x": np.float32(0.5)}, {"x": 1}]
    assert floats.tensors(values)[0].data.tolist() == [5.1, 0.25, 0.5, 1.0]


def test_bytes_inputs_take_text_and_bytes(greeting: Model) -> None:
    mapping = RecordMapping.for_model(greeting.version)
    (tensor,) = mapping.tensors([{"text": "bonjour"}, {"text": b"\x00\xff"}, {"text": "à bientôt"}])
    assert tensor.datatype == "BYTES"
    assert tensor.data.tolist() == [b"bonjour", b"\x00\xff", "à bientôt".encode()]
    outputs = predict(greeting, mapping.tensors([{"text": "hola"}, {"text": "à bientôt"}]))
    assert outputs["language"].tolist() == [b"es", b"fr"]


def test_a_stacked_bytes_input_takes_its_text_fields() -> None:
    mv = model_version((TensorSpec("t", "BYTES", (-1, 2)),), ["first", "last"])
    (tensor,) = RecordMapping.for_model(mv).tensors({"first": "ada", "last": b"lovelace"})
    assert tensor.data.tolist() == [[b"ada", b"lovelace"]]


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({**ROW, "petal_width": None}, r"field 'petal_width' is null"),
        ({**ROW, "petal_width": "wide"}, r"field 'petal_width' holds text 'wide' that is not a"),
        ({**ROW, "petal_width": [0.2]}, r"field 'petal_width' holds a list; the input takes one"),
        ({**ROW, "petal_width": {"cm": 0.2}}, r"field 'petal_width' holds an object"),
        ({**ROW, "petal_width": True}, r"field 'petal_width' holds true; .* not true/false"),
        ({**ROW, "petal_width": 1e300}, r"field 'petal_width' holds 1e\+300, beyond .* FP32"),
        ({**ROW, "petal_width": "1_000"}, r"field 'petal_width' holds text '1_000'"),
        ({"sepal_length": 5.1, "petal_width": 0.2}, r"missing field\(s\) 'sepal_width', "),
        ({"input-0": [1, 2, 3]}, r"field 'input-0' holds 3 value\(s\); the input takes 4"),
        ({"input-0": [1, 2, None, 4]}, r"field 'input-0'\[2\] is null"),
        ({"input-0": 5}, r"field 'input-0' holds one value; give a list of 4"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_naming_the_field(
    record: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match) as refused:
        RecordMapping.for_model(IRIS).tensors(record)
    assert "input-0" in refused.value.message or "record has" in refused.value.message


def test_missing_fields_are_listed_with_the_fields_found() -> None:
    with pytest.raises(InvalidInput) as refused:
        RecordMapping.for_model(IRIS).tensors({"sepal_length": 5.1, "id": "a"})
    message = refused.value.message
    assert "'petal_width'" in message
    assert "the record has 2 field(s): 'sepal_length', 'id'" in message


@pytest.mark.parametrize(
    ("spec", "record", "match"),
    [
        (TensorSpec("n", "INT64", (-1,)), {"n": 1.5}, "holds 1.5, a fraction"),
        (TensorSpec("n", "INT8", (-1,)), {"n": 300}, r"holds 300, beyond INT8 \(-128 to 127\)"),
        (TensorSpec("n", "UINT8", (-1,)), {"n": -1}, "beyond UINT8"),
        (TensorSpec("n", "INT64", (-1,)), {"n": "2.5"}, "that is not a whole number"),
        (TensorSpec("n", "BOOL", (-1,)), {"n": 1}, "holds 1; the input takes true or false"),
        (TensorSpec("n", "BYTES", (-1,)), {"n": 5}, "holds 5; the input takes text or bytes"),
        (TensorSpec("n", "BYTES", (-1,)), {"n": None}, "is null"),
        (TensorSpec("n", "BYTES", (-1,)), {"n": "\ud800"}, "not valid Unicode"),
        (TensorSpec("n", "FP32", (-1, 2)), {"n": [1.0, 2.0, 3.0]}, "holds 3 value"),
        (TensorSpec("n", "FP32", (-1, -1)), {"n": []}, "holds an empty list"),
        (TensorSpec("n", "FP64", (-1,)), {"n": np.complex64(1)}, "holds a value of type complex64"),
        (TensorSpec("n", "FP64", (-1,)), {"n": object()}, "holds a value of type object"),
    ],
)
def test_values_the_datatype_cannot_hold_are_refused(
    spec: TensorSpec, record: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        RecordMapping.for_model(model_version((spec,))).tensors(record)


def test_records_of_one_request_must_agree() -> None:
    mapping = RecordMapping.for_model(model_version((TensorSpec("n", "FP32", (-1, -1)),)))
    with pytest.raises(InvalidInput, match=r"record 1: field 'n' holds 1 value\(s\); .* first"):
        mapping.tensors([{"n": [1.0, 2.0]}, {"n": [3.0]}])
    iris = RecordMapping.for_model(IRIS)
    with pytest.raises(InvalidInput, match=r"record 1: missing field.*which the other records"):
        iris.tensors([ROW, {"input-0": [1, 2, 3, 4]}])
    with pytest.raises(InvalidInput, match="record 2: field 'sepal_width' is null"):
        iris.tensors([ROW, ROW, {**ROW, "sepal_width": None}])
    with pytest.raises(InvalidInput, match="record 1: a record is an object of fields, not int"):
        iris.tensors([ROW, 5])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="no records"):
        iris.tensors([])
    with pytest.raises(InvalidInput, match="records are objects of fields"):
        iris.tensors("text")  # type: ignore[arg-type]


def test_ambiguity_is_refused_as_for_tables() -> None:
    bare = model_version((TensorSpec("input-0", "FP32", (-1, 4)),))
    with pytest.raises(InvalidInput, match=r"cannot tell which fields feed input.*--features"):
        RecordMapping.for_model(bare).tensors(ROW)
    with pytest.raises(InvalidInput, match="takes 4 feature field"):
        RecordMapping.for_model(IRIS, features=FEATURES[:3])
    two = model_version((TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "FP32", (-1,))))
    with pytest.raises(InvalidInput, match=r"one \[-1, F\] input"):
        RecordMapping.for_model(two, features=["a", "b"])
    with pytest.raises(InvalidInput, match="missing field"):
        RecordMapping.for_model(two).tensors({"a": 1.0})
    cube = model_version((TensorSpec("img", "FP32", (-1, 2, 2)),))
    with pytest.raises(InvalidInput, match="cannot be read from a record field"):
        RecordMapping.for_model(cube).tensors({"img": [[1, 2], [3, 4]]})


def test_fields_known_ahead_are_resolved_once() -> None:
    with pytest.raises(InvalidInput, match=r"missing field.*'petal_width'"):
        RecordMapping.for_model(IRIS, fields=FEATURES[:3])
    mapping = RecordMapping.for_model(IRIS, fields=[*FEATURES, "id"])
    assert mapping.tensors(ROW)[0].shape == (1, 4)
    with pytest.raises(InvalidInput, match="missing field"):
        mapping.tensors({"sepal_length": 1.0})


def test_outputs_become_one_record_per_row() -> None:
    response = InferResponse(
        "iris",
        "1",
        "r",
        [
            Tensor("predict", "INT64", (2,), np.array([0, 2], dtype=np.longlong)),
            Tensor(
                "predict_proba", "FP32", (2, 3), np.array([[0.9, 0.1, 0], [0.1, 0.2, 0.7]], "f4")
            ),
            Tensor("label", "BYTES", (2,), np.array([b"setosa", b"\xff"], dtype=object)),
        ],
    )
    records = RecordMapping.for_model(IRIS).records(response)
    assert [r["predict"] for r in records] == [0, 2]
    assert type(records[0]["predict"]) is int
    assert records[1]["predict_proba"] == pytest.approx([0.1, 0.2, 0.7])
    assert [r["label"] for r in records] == ["setosa", b"\xff"]
    native = output_records(response.outputs, native=True)
    assert native[1]["predict_proba"].dtype == np.float32
    assert type(native[1]["predict"]) is int


def test_bytes_outputs_of_the_demo_model_are_text(greeting: Model) -> None:
    mapping = RecordMapping.for_model(greeting.version)
    outputs = predict(greeting, mapping.tensors({"text": "guten morgen"}))
    tensors = [Tensor(name, "BYTES", a.shape, a) for name, a in outputs.items()]
    assert mapping.records(tensors) == [{"language": "de"}]
