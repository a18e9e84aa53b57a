"""Avro records: schemaless values, the Confluent wire format, container files, the answer
schema of the demo models, and every refusal (never fastavro's own exception)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

import modelport
from modelport.errors import InvalidInput
from modelport.protocol.signature import TensorSpec
from modelport.registry.store import Registry
from modelport.serving import avro_records
from modelport.serving.avro_records import (
    SchemaDirectory,
    check_schema_id,
    confluent_schema_id,
    load_schema,
    output_schema,
    output_schema_json,
    parse_schema,
    read_container,
    read_schemaless,
    write_confluent,
    write_container,
    write_schemaless,
)

from .conftest import model_version

SENSOR = {
    "type": "record",
    "name": "Sensor",
    "namespace": "tests",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "reading", "type": "double"},
        {"name": "count", "type": "long"},
        {"name": "ok", "type": "boolean"},
        {"name": "raw", "type": "bytes"},
        {"name": "window", "type": {"type": "array", "items": "float"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
READING = {
    "id": "s-1",
    "reading": 21.5,
    "count": 3,
    "ok": True,
    "raw": b"\x00\xff",
    "window": [1.0, 2.5],
    "note": None,
}


@pytest.fixture(scope="module")
def demo(demo_registry: Path) -> Iterator[Registry]:
    with Registry.open(str(demo_registry), create=False) as store:
        yield store


def test_schemaless_round_trip() -> None:
    schema = parse_schema(SENSOR)
    assert schema.name == "tests.Sensor"
    assert schema.fields == ("id", "reading", "count", "ok", "raw", "window", "note")
    data = write_schemaless(READING, schema)
    assert read_schemaless(data, schema) == READING
    # The JSON text of a schema parses the same.
    assert read_schemaless(data, parse_schema(json.dumps(SENSOR))) == READING


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d[:-3], "ends before the record does"),
        (lambda d: d + b"\x00\x01", "2 byte\\(s\\) past the end of a record of Avro schema"),
        (lambda d: b"", "ends before the record does"),
        # The string's length prefix (zigzag 3) and then bytes that are not UTF-8.
        (lambda d: b"\x06\xff\xfe\xfd" + d[4:], "not UTF-8"),
        # The union branch at the end (after a null note) pointed at branch 7.
        (lambda d: d[:-1] + b"\x0e", "union branch"),
    ],
)
def test_a_value_that_does_not_decode_is_refused(mangle: Any, match: str) -> None:
    schema = parse_schema(SENSOR)
    with pytest.raises(InvalidInput, match=match):
        read_schemaless(mangle(write_schemaless(READING, schema)), schema)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({**READING, "reading": "warm"}, r"Sensor.reading is 'warm' \(str\) where the schema"),
        ({**READING, "count": 1.5}, r"Sensor.count is 1.5 \(float\) where the schema has long"),
        ({k: v for k, v in READING.items() if k != "count"}, "Sensor.count is missing or null"),
        ({**READING, "count": 2**70}, "Sensor.count is"),
        ({**READING, "window": [1.0, None]}, "Sensor.window is missing or null"),
        ({**READING, "ok": "yes"}, "Sensor.ok is 'yes'"),
    ],
)
def test_a_record_that_does_not_fit_its_schema_is_refused(
    record: dict[str, Any], match: str
) -> None:
    schema = parse_schema(SENSOR)
    with pytest.raises(InvalidInput, match=match):
        write_schemaless(record, schema)
    with pytest.raises(InvalidInput, match=match):
        write_container([READING, record], schema)


def test_unvalidated_writes_still_refuse_what_fastavro_cannot_write() -> None:
    schema = parse_schema(SENSOR)
    assert write_schemaless(READING, schema, validate=False) == write_schemaless(READING, schema)
    with pytest.raises(InvalidInput, match=r"does not fit Avro schema 'tests.Sensor'"):
        write_schemaless({**READING, "count": 2**70}, schema, validate=False)


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ('{"type": "record", ', "not valid JSON"),
        ({"type": "record", "name": "r", "fields": [{"name": "a", "type": "dbl"}]}, "UnknownType"),
        ({"type": "record", "fields": []}, "not a valid Avro schema"),
    ],
)
def test_an_invalid_schema_is_refused(schema: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        parse_schema(schema)


def test_confluent_wire_format(tmp_path: Path) -> None:
    schema = parse_schema(SENSOR)
    framed = write_confluent(READING, schema, 258)
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    assert framed[5:] == write_schemaless(READING, schema)
    assert confluent_schema_id(framed) == 258
    (tmp_path / "258.avsc").write_text(json.dumps(SENSOR))
    directory = SchemaDirectory(tmp_path)
    assert directory.read(framed) == (258, READING)
    assert directory.schema(258) is directory.schema(258)  # read once


def test_a_schema_registry_answer_is_a_schema_file(tmp_path: Path) -> None:
    (tmp_path / "7.avsc").write_text(json.dumps({"schema": json.dumps(SENSOR)}))
    assert load_schema(tmp_path / "7.avsc").fields == parse_schema(SENSOR).fields


def test_unknown_schema_ids_name_the_id_and_the_directory(tmp_path: Path) -> None:
    schema = parse_schema(SENSOR)
    directory = SchemaDirectory(tmp_path)
    framed = write_confluent(READING, schema, 42)
    with pytest.raises(InvalidInput) as refused:
        directory.read(framed)
    assert "unknown Avro schema id 42" in refused.value.message
    assert str(tmp_path) in refused.value.message
    assert "42.avsc" in refused.value.message
    # A schema saved while the consumer runs is found by the next value that names it.
    (tmp_path / "42.avsc").write_text(json.dumps(SENSOR))
    assert directory.read(framed) == (42, READING)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"\x01\x00\x00\x00\x07rest", "starts with byte 0x01, not the Confluent .* magic byte"),
        (b'{"id": 1}', "starts with byte 0x7b"),
        (b"\x00\x00\x01", "3 byte\\(s\\), shorter than the Confluent wire format's header"),
    ],
)
def test_values_not_in_the_confluent_wire_format_are_refused(
    tmp_path: Path, value: bytes, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        SchemaDirectory(tmp_path).read(value)


def test_a_framed_value_of_another_schema_is_refused(tmp_path: Path) -> None:
    other = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}
    (tmp_path / "1.avsc").write_text(json.dumps(other))
    framed = write_confluent(READING, parse_schema(SENSOR), 1)
    with pytest.raises(InvalidInput, match=r"value of schema id 1 .* another schema"):
        SchemaDirectory(tmp_path).read(framed)
    # Read schemaless, a framed value leaves bytes over: the message says why.
    with pytest.raises(InvalidInput, match="Confluent wire format"):
        read_schemaless(write_confluent({"x": 5}, parse_schema(other), 1), parse_schema(other))


def test_schema_files_and_directories_that_are_not_there(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist or is not a directory"):
        SchemaDirectory(tmp_path / "nope")
    with pytest.raises(InvalidInput, match="does not exist"):
        load_schema(tmp_path / "nope.avsc")
    (tmp_path / "bad.avsc").write_text("{")
    with pytest.raises(InvalidInput, match=r"bad.avsc is not valid JSON"):
        load_schema(tmp_path / "bad.avsc")


@pytest.mark.parametrize("schema_id", [-1, 2**31, True, "7"])
def test_schema_ids_are_positive_32_bit_integers(schema_id: Any) -> None:
    with pytest.raises(InvalidInput, match="schema id"):
        check_schema_id(schema_id)
    with pytest.raises(InvalidInput, match="schema id"):
        write_confluent(READING, parse_schema(SENSOR), schema_id)


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_container_files_round_trip(codec: str) -> None:
    records = [READING, {**READING, "id": "s-2", "note": "calibrated"}]
    data = write_container(records, parse_schema(SENSOR), codec=codec)
    assert data[:4] == b"Obj\x01"
    container = read_container(data)
    assert container.records == records
    assert container.schema["name"] == "tests.Sensor"
    # fastavro's own reader agrees.
    assert list(fastavro.reader(io.BytesIO(data))) == records


def test_what_is_not_a_container_file_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not an Avro object container file"):
        read_container(b"PAR1 not avro")
    data = write_container([READING] * 3, parse_schema(SENSOR))
    with pytest.raises(InvalidInput, match="not an Avro object container file"):
        read_container(data[:-20])
    with pytest.raises(InvalidInput, match="codec 'snappy' is not offered"):
        write_container([READING], parse_schema(SENSOR), codec="snappy")


def test_the_answer_schema_of_the_demo_models(demo: Registry) -> None:
    iris = output_schema(demo.get("iris"))
    fastavro.parse_schema(iris)
    assert iris["name"] == "iris"
    assert iris["namespace"] == "modelport.answers"
    assert [(f["name"], f["type"]) for f in iris["fields"]] == [
        ("predict", "long"),
        ("predict_proba", {"type": "array", "items": "float"}),
        ("_model", "string"),
        ("_version", "long"),
        ("_sha256", "string"),
        ("_request_id", "string"),
    ]
    greeting = output_schema(demo.get("greeting-language"))
    fastavro.parse_schema(greeting)
    assert greeting["name"] == "greeting_language"
    assert greeting["fields"][0] == {
        "name": "language",
        "type": "string",
        "doc": "Output 'language', BYTES [-1].",
    }
    assert json.loads(output_schema_json(demo.get("iris"))) == iris
    for name in ("iris-xgboost", "iris-onnx", "diabetes-lightgbm"):
        fastavro.parse_schema(output_schema(demo.get(name)))


def test_answers_round_trip_through_the_answer_schema(demo: Registry, demo_registry: Path) -> None:
    mv = demo.get("iris")
    model = modelport.load("iris", registry=demo_registry)
    try:
        outputs = model.predict({"input-0": [[5.1, 3.5, 1.4, 0.2]]})
    finally:
        model.close()
    answer = {
        "predict": int(outputs["predict"][0]),
        "predict_proba": outputs["predict_proba"][0].tolist(),
        "_model": mv.name,
        "_version": mv.version,
        "_sha256": mv.digest,
        "_request_id": "r-1",
    }
    schema = parse_schema(output_schema(mv))
    assert read_schemaless(write_schemaless(answer, schema), schema) == answer


def test_answer_field_names_are_avro_names_and_never_clash() -> None:
    odd = model_version(
        (TensorSpec("x", "FP64", (-1,)),),
        outputs=(TensorSpec("1st-score", "FP64", (-1,)), TensorSpec("flags", "BOOL", (-1, 2))),
    )
    schema = output_schema(odd)
    fastavro.parse_schema(schema)
    assert [f["name"] for f in schema["fields"][:2]] == ["_1st_score", "flags"]
    assert schema["fields"][1]["type"] == {"type": "array", "items": "boolean"}
    clash = model_version(
        (TensorSpec("x", "FP64", (-1,)),),
        outputs=(TensorSpec("a-b", "FP64", (-1,)), TensorSpec("a_b", "FP64", (-1,))),
    )
    with pytest.raises(InvalidInput, match="'a_b', which another output"):
        output_schema(clash)
    provenance = model_version(
        (TensorSpec("x", "FP64", (-1,)),), outputs=(TensorSpec("_model", "FP64", (-1,)),)
    )
    with pytest.raises(InvalidInput, match="provenance field"):
        output_schema(provenance)


def test_without_fastavro_the_module_imports_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, demo: Registry
) -> None:
    source = Path(modelport.__file__).parents[1]
    code = (
        "import sys; sys.modules['fastavro'] = None\n"
        "import modelport.serving.avro_records, modelport.jobs.streams.formats\n"
        "print('imported')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
    monkeypatch.setitem(sys.modules, "fastavro", None)
    for use in (
        lambda: parse_schema(SENSOR),
        lambda: read_schemaless(b"", avro_records.AvroSchema({}, "x", ())),
        lambda: read_container(b""),
    ):
        with pytest.raises(InvalidInput, match=r"pip install 'modelport\[avro\]'"):
            use()
    # The answer schema itself is plain JSON: printing it needs no fastavro.
    assert json.loads(output_schema_json(demo.get("iris")))["name"] == "iris"
