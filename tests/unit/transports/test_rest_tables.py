"""Row bodies (CSV, JSON rows, Avro container files) into requests, and answers back."""

from __future__ import annotations

import csv
import io

import fastavro
import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.protocol.types import InferResponse, Tensor
from modelport.serving.avro_records import output_schema
from modelport.transports.rest_tables import (
    Tables,
    accepted,
    media_type,
    predictions_avro,
    predictions_csv,
    predictions_json,
)

from ..serving.conftest import model_version

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = model_version((TensorSpec("input-0", "FP32", (-1, 4)),), FEATURES)
TWO = model_version(
    (TensorSpec("age", "INT64", (-1,)), TensorSpec("flags", "BOOL", (-1, 2))),
)
TEXT = model_version((TensorSpec("text", "BYTES", (-1,)),))
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def input_of(request: object, name: str = "input-0") -> np.ndarray:
    tensors = {t.name: t for t in request.inputs}  # type: ignore[attr-defined]
    return np.asarray(tensors[name].data)


def test_a_headerless_csv_is_positional() -> None:
    request = Tables().csv_request(b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", IRIS)
    np.testing.assert_allclose(input_of(request), np.array(ROWS, np.float32), rtol=0, atol=0)


def test_a_header_of_the_recorded_features_names_the_columns_in_any_order() -> None:
    body = b"petal_width,sepal_length,sepal_width,petal_length\r\n0.2,5.1,3.5,1.4\r\n"
    request = Tables().csv_request(body, IRIS)
    np.testing.assert_allclose(input_of(request), np.array(ROWS[:1], np.float32), rtol=0, atol=0)


def test_positional_rows_feed_several_inputs_in_signature_order() -> None:
    request = Tables().csv_request(b"31,true,false\n40,FALSE,TRUE\n", TWO)
    assert input_of(request, "age").tolist() == [31, 40]
    assert input_of(request, "flags").tolist() == [[True, False], [False, True]]


def test_text_cells_stay_text() -> None:
    # The second line is two cells: a one-input model takes one per row.
    with pytest.raises(InvalidInput, match="CSV row 2 has 2 value"):
        Tables().csv_request(b"bonjour\nhallo, welt\n", TEXT)
    request = Tables().csv_request(b'bonjour\n"hallo, welt"\n', TEXT)
    assert input_of(request, "text").tolist() == [b"bonjour", b"hallo, welt"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2\n", ["CSV row 2 has 3 value(s)", "takes 4"]),
        (b"5.1,3.5,x,0.2\n", ["CSV row 1, column 3", "'x' is not a number"]),
        (
            b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,3\n",
            ["CSV row 3 has 3 value(s)", "header names 4"],
        ),
        (b"sepal_length,sepal_width,petal_length,petal_width\n", ["no rows under it"]),
        (b"\n\n", ["no rows"]),
        (b"\xff\xfe1,2", ["not UTF-8"]),
    ],
)
def test_bad_csv_names_what_to_fix(body: bytes, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        Tables().csv_request(body, IRIS)
    for word in words:
        assert word in caught.value.message


def test_a_bool_cell_must_be_true_or_false() -> None:
    with pytest.raises(InvalidInput, match="CSV row 1, column 2: 'yes' is not true or false"):
        Tables().csv_request(b"1,yes,no\n", TWO)


def test_json_rows_under_columns_and_records() -> None:
    tables = Tables()
    split = tables.rows_request([ROWS[0][::-1]], FEATURES[::-1], IRIS)
    np.testing.assert_allclose(input_of(split), np.array(ROWS[:1], np.float32), rtol=0, atol=0)
    records = tables.records_request([dict(zip(FEATURES, r, strict=True)) for r in ROWS], IRIS)
    np.testing.assert_allclose(input_of(records), np.array(ROWS, np.float32), rtol=0, atol=0)
    with pytest.raises(InvalidInput, match="dataframe_records holds objects"):
        tables.records_request([[1, 2, 3, 4]], IRIS)
    with pytest.raises(InvalidInput, match="row 1 has 3 value"):
        tables.rows_request([[1, 2, 3]], None, IRIS, what="row")


def avro_body(records: list[dict[str, object]], fields: list[tuple[str, str]]) -> bytes:
    schema = {
        "type": "record",
        "name": "Flower",
        "fields": [{"name": n, "type": t} for n, t in fields],
    }
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    return out.getvalue()


def test_avro_records_feed_the_model_by_their_fields() -> None:
    records = [dict(zip(FEATURES, r, strict=True)) for r in ROWS]
    body = avro_body(records, [(f, "double") for f in FEATURES])
    request = Tables().avro_request(body, IRIS)
    np.testing.assert_allclose(input_of(request), np.array(ROWS, np.float32), rtol=1e-6, atol=0)


def test_avro_that_does_not_fit_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"missing field.*'sepal_length'"):
        Tables().avro_request(avro_body([{"a": 1.0}], [("a", "double")]), IRIS)
    with pytest.raises(InvalidInput, match="not an Avro object container file"):
        Tables().avro_request(b"5.1,3.5,1.4,0.2\n", IRIS)


def iris_response() -> InferResponse:
    proba = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]], np.float32)
    return InferResponse(
        model_name="m",
        model_version="1",
        id="r1",
        outputs=[
            Tensor("predict", "INT64", (2,), np.array([0, 2], np.int64)),
            Tensor("predict_proba", "FP32", (2, 3), proba),
        ],
        parameters={"modelport.sha256": "0" * 64, "modelport.request_id": "r1"},
    )


def test_answers_as_json_csv_and_avro() -> None:
    response = iris_response()
    assert predictions_json(response) == (
        b'{"predictions":[{"predict":0,"predict_proba":[0.9,0.1,0.0]},'
        b'{"predict":2,"predict_proba":[0.0,0.2,0.8]}]}'
    )
    one = InferResponse("m", "1", "r", [response.outputs[0]], {})
    assert predictions_json(one) == b'{"predictions":[0,2]}'
    lines = list(csv.reader(io.StringIO(predictions_csv(response).decode())))
    assert lines == [["0", "0.9", "0.1", "0.0"], ["2", "0.0", "0.2", "0.8"]]
    version = model_version(
        (TensorSpec("input-0", "FP32", (-1, 4)),),
        outputs=(
            TensorSpec("predict", "INT64", (-1,)),
            TensorSpec("predict_proba", "FP32", (-1, 3)),
        ),
    )
    reader = fastavro.reader(io.BytesIO(predictions_avro(response, version)))
    schema = output_schema(version)
    assert reader.writer_schema["name"] == f"{schema['namespace']}.{schema['name']}"
    rows = list(reader)
    assert [r["predict"] for r in rows] == [0, 2]
    assert rows[1]["predict_proba"] == pytest.approx([0.0, 0.2, 0.8], abs=1e-7)
    assert {r["_request_id"] for r in rows} == {"r1"}
    assert {r["_sha256"] for r in rows} == {"0" * 64}


def test_content_type_and_accept_parsing() -> None:
    assert media_type(b"Text/CSV; charset=UTF-8") == ("text/csv", {"charset": "utf-8"})
    assert media_type(None) == ("", {})
    offered = ("application/json", "text/csv")
    assert accepted(b"text/html, text/csv;q=0.9", offered) == "text/csv"
    assert accepted(b"*/*", offered) is None
    assert accepted(None, offered) is None
