"""`modelport stream --format`: every format's round trip through `DataPlane.infer` on the demo
models, the same predictions as `Model.predict_table`, and every refusal."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import shutil
import struct
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fastavro
import numpy as np
import orjson
import pyarrow as pa
import pytest

import modelport
from modelport.demo import REFERENCE_DATA
from modelport.errors import InvalidInput
from modelport.intake.push import push_artifact
from modelport.jobs.streams.formats import MessageFormat, message_format, output_schema_json
from modelport.monitoring.reference_profile import build_profile
from modelport.protocol.codec_json import encode_response
from modelport.protocol.signature import Signature, TensorSpec
from modelport.protocol.types import InferResponse, Tensor
from modelport.registry.store import Registry
from modelport.serving.catalog import DIRECT, Catalog, LoadedModel
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle

from ....conftest import CREATED_BY, assert_close_float32, write_iris_c001
from ..conftest import FEATURES, iris_table

T = TypeVar("T")
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_IN = {
    "type": "record",
    "name": "IrisRow",
    "namespace": "tests",
    "fields": [{"name": "id", "type": "string"}]
    + [{"name": name, "type": "double"} for name in FEATURES],
}
TEXT_IN = {"type": "record", "name": "Text", "fields": [{"name": "text", "type": "string"}]}
RAW_IN = {"type": "record", "name": "Raw", "fields": [{"name": "text", "type": "bytes"}]}
IRIS_ID, TEXT_ID, RAW_ID, ANSWER_ID = 11, 12, 13, 901


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def dataplane(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    """A dataplane over a copy of the demo registry (loading writes history events), with a
    second iris version (another model, the same signature and reference data)."""
    work = tmp_path_factory.mktemp("formats")
    copy = work / "registry"
    shutil.copytree(demo_registry, copy)
    store = Registry.open(str(copy))
    push_artifact(
        store,
        write_iris_c001(work),
        name="iris",
        created_by=CREATED_BY,
        profile=lambda signature: build_profile(REFERENCE_DATA["iris"](), signature.inputs),
    )
    executor = Executor(threads=2)
    yield DataPlane(Lifecycle(store, Catalog(), executor))
    executor.shutdown()
    store.close()


@pytest.fixture(scope="module")
def iris(dataplane: DataPlane) -> LoadedModel:
    return run(dataplane.load("iris", "1"))


@pytest.fixture(scope="module")
def iris_v2(dataplane: DataPlane) -> LoadedModel:
    return run(dataplane.load("iris", "2"))


@pytest.fixture(scope="module")
def greeting(dataplane: DataPlane) -> LoadedModel:
    return run(dataplane.load("greeting-language"))


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A schema directory: DIR/ID.avsc for the writer schemas of the tests' messages."""
    directory = tmp_path_factory.mktemp("schemas")
    for schema_id, schema in ((IRIS_ID, IRIS_IN), (TEXT_ID, TEXT_IN), (RAW_ID, RAW_IN)):
        (directory / f"{schema_id}.avsc").write_text(json.dumps(schema))
    (directory / "14.avsc").write_text('"double"')
    return directory


@pytest.fixture(scope="module")
def expected(demo_registry: Path) -> pa.Table:
    """What iris version 1 answers for the 150 rows, through the embedding API."""
    model = modelport.load("iris", 1, registry=demo_registry)
    try:
        return model.predict_table(iris_table(), outputs_as="lists")
    finally:
        model.close()


def answer(fmt: MessageFormat, value: bytes, model: LoadedModel, dataplane: DataPlane) -> bytes:
    """Decode `value`, infer through the dataplane as the consumer does, encode the response."""

    async def infer() -> bytes:
        request = fmt.decode(value, model)
        response = await dataplane.infer(model.name, str(model.number), request, "req-1")
        return fmt.encode(response, model)

    return run(infer())


def answers(
    fmt: MessageFormat, values: list[bytes], model: LoadedModel, dataplane: DataPlane
) -> list[bytes]:
    """As `answer`, for many messages at once (they meet in the model's batcher)."""

    async def one(value: bytes, n: int) -> bytes:
        request = fmt.decode(value, model)
        response = await dataplane.infer(model.name, str(model.number), request, f"req-{n}")
        return fmt.encode(response, model)

    async def every() -> list[bytes]:
        return list(await asyncio.gather(*(one(v, n) for n, v in enumerate(values))))

    return run(every())


def avro(record: dict[str, Any], schema: dict[str, Any]) -> bytes:
    """`record` schemaless, by fastavro itself."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def confluent(record: dict[str, Any], schema: dict[str, Any], schema_id: int) -> bytes:
    return struct.pack(">bI", 0, schema_id) + avro(record, schema)


def read_answer(data: bytes, model: LoadedModel) -> dict[str, Any]:
    """An Avro answer read with the published answer schema, by fastavro itself."""
    schema = fastavro.parse_schema(json.loads(output_schema_json(model.version)))
    stream = io.BytesIO(data)
    record: dict[str, Any] = fastavro.schemaless_reader(stream, schema)  # type: ignore[assignment]
    assert stream.tell() == len(data)
    return record


def rows() -> list[dict[str, Any]]:
    return [
        {"id": str(i), **row} for i, row in enumerate(iris_table().select(FEATURES).to_pylist())
    ]


def check_iris(found: list[dict[str, Any]], expected: pa.Table) -> None:
    assert [a["predict"] for a in found] == expected["predict"].to_pylist()
    assert_close_float32([a["predict_proba"] for a in found], expected["predict_proba"].to_pylist())


def check_provenance(found: dict[str, Any], model: LoadedModel, request_id: str) -> None:
    assert found["_model"] == model.name
    assert found["_version"] == model.number
    assert found["_sha256"] == model.version.digest
    assert found["_request_id"] == request_id


# -- oip ------------------------------------------------------------------------------------


def test_oip_takes_and_gives_the_rest_bodies(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table
) -> None:
    fmt = message_format("oip")
    assert fmt.content_type == "application/json"
    fmt.prepare(iris)
    table = iris_table().select(FEATURES)
    body = {
        "id": "abc",
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP32",
                "shape": [table.num_rows, 4],
                "data": [list(r.values()) for r in table.to_pylist()],
            }
        ],
    }
    found = json.loads(answer(fmt, json.dumps(body).encode(), iris, dataplane))
    assert found["id"] == "abc"
    assert found["model_version"] == "1"
    assert found["parameters"]["modelport.sha256"] == iris.version.digest
    outputs = {o["name"]: o for o in found["outputs"]}
    assert outputs["predict"]["data"] == expected["predict"].to_pylist()
    proba = np.array(outputs["predict_proba"]["data"]).reshape(-1, 3)
    assert_close_float32(proba, expected["predict_proba"].to_pylist())
    # Exactly the REST response body.
    response = InferResponse("iris", "1", "x", [Tensor("predict", "INT64", (1,), np.array([2]))])
    assert fmt.encode(response, iris) == encode_response(response)


def test_oip_with_a_bytes_input(dataplane: DataPlane, greeting: LoadedModel) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hola", "?"]}]}
    found = json.loads(
        answer(message_format("oip"), json.dumps(body).encode(), greeting, dataplane)
    )
    assert found["outputs"][0]["data"] == ["es", "unknown"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"{", "not valid JSON"),
        (b"", "empty"),
        (b'{"sepal_length": 5.1}', "inputs"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_oip_refuses_what_rest_refuses(iris: LoadedModel, value: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        message_format("oip").decode(value, iris)


# -- json -----------------------------------------------------------------------------------


def test_json_records_predict_as_predict_table(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table
) -> None:
    fmt = message_format("json")
    assert fmt.content_type == "application/json"
    fmt.prepare(iris)
    values = [orjson.dumps(r) for r in rows()]
    found = [json.loads(a) for a in answers(fmt, values, iris, dataplane)]
    check_iris(found, expected)
    assert list(found[0]) == [
        "predict",
        "predict_proba",
        "_model",
        "_version",
        "_sha256",
        "_request_id",
    ]
    check_provenance(found[7], iris, "req-7")
    # Float32 values at their own precision: the text is what the OIP body would carry.
    proba = json.loads(answer(fmt, orjson.dumps(ROW), iris, dataplane))["predict_proba"]
    assert [repr(p) for p in proba] == [str(np.float32(p)) for p in proba]


def test_json_named_inputs_and_explicit_features(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table
) -> None:
    first = rows()[0]
    named = {"input-0": [first[f] for f in FEATURES]}
    by_name = json.loads(answer(message_format("json"), orjson.dumps(named), iris, dataplane))
    renamed = {"a": first["sepal_length"], "b": first["sepal_width"]}
    renamed |= {"c": first["petal_length"], "d": first["petal_width"]}
    fmt = message_format("json", features=["a", "b", "c", "d"])
    by_features = json.loads(answer(fmt, orjson.dumps(renamed), iris, dataplane))
    for found in (by_name, by_features):
        check_iris([found], expected.slice(0, 1))


def test_json_with_a_bytes_input(dataplane: DataPlane, greeting: LoadedModel) -> None:
    fmt = message_format("json")
    found = json.loads(answer(fmt, orjson.dumps({"text": "guten abend"}), greeting, dataplane))
    assert found["language"] == "de"
    check_provenance(found, greeting, "req-1")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b'{"sepal_length": 5.1,', "not valid JSON"),
        (b"  ", "the message is empty"),
        (b"\xff\xfe", "not valid JSON"),
        (orjson.dumps([ROW]), "JSON object of fields .* not an array"),
        (b"5", "not a number"),
        (orjson.dumps({**ROW, "petal_width": None}), "field 'petal_width' is null"),
        (orjson.dumps({**ROW, "petal_width": "wide"}), "field 'petal_width' holds text 'wide'"),
        (orjson.dumps({**ROW, "petal_width": [1]}), "field 'petal_width' holds a list"),
        (orjson.dumps({"sepal_length": 5.1}), r"missing field\(s\) 'sepal_width'"),
        (orjson.dumps({"input-0": [1, 2, 3]}), r"field 'input-0' holds 3 value\(s\)"),
    ],
)
def test_json_refuses_what_does_not_map(iris: LoadedModel, value: bytes, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        message_format("json").decode(value, iris)


def test_json_features_that_do_not_fit_are_refused_before_the_first_message(
    iris: LoadedModel,
) -> None:
    fmt = message_format("json", features=["a", "b"])
    with pytest.raises(InvalidInput, match="takes 4 feature field"):
        fmt.prepare(iris)


def test_answers_that_json_cannot_carry_are_refused(greeting: LoadedModel, tmp_path: Path) -> None:
    response = InferResponse(
        "greeting-language",
        "1",
        "r",
        [Tensor("language", "BYTES", (1,), np.array([b"\xff"], dtype=object))],
        {"modelport.sha256": greeting.version.digest, "modelport.request_id": "r"},
    )
    with pytest.raises(InvalidInput, match="'language' hold bytes that are not UTF-8"):
        message_format("json").encode(response, greeting)
    (tmp_path / "text.avsc").write_text(json.dumps(TEXT_IN))
    avro_format = message_format("avro", schema=tmp_path / "text.avsc")
    with pytest.raises(InvalidInput, match="'language' holds bytes that are not UTF-8"):
        avro_format.encode(response, greeting)


# -- avro -----------------------------------------------------------------------------------


@pytest.fixture
def iris_schema(tmp_path: Path) -> Path:
    path = tmp_path / "iris.avsc"
    path.write_text(json.dumps(IRIS_IN))
    return path


def test_avro_schemaless_round_trip(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table, iris_schema: Path
) -> None:
    fmt = message_format("avro", schema=iris_schema)
    assert fmt.content_type == "avro/binary"
    fmt.prepare(iris)
    found = [
        read_answer(a, iris)
        for a in answers(fmt, [avro(r, IRIS_IN) for r in rows()], iris, dataplane)
    ]
    check_iris(found, expected)
    check_provenance(found[3], iris, "req-3")


def test_avro_confluent_round_trip(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table, schemas: Path
) -> None:
    fmt = message_format("avro", schema_dir=schemas, output_schema_id=ANSWER_ID)
    values = [confluent(r, IRIS_IN, IRIS_ID) for r in rows()]
    framed = answers(fmt, values, iris, dataplane)
    assert {a[:5] for a in framed} == {struct.pack(">bI", 0, ANSWER_ID)}
    check_iris([read_answer(a[5:], iris) for a in framed], expected)


def test_avro_schemaless_in_confluent_framed_out(
    dataplane: DataPlane, iris: LoadedModel, iris_schema: Path
) -> None:
    fmt = message_format("avro", schema=iris_schema, output_schema_id=7)
    framed = answer(fmt, avro({"id": "a", **ROW}, IRIS_IN), iris, dataplane)
    assert framed[:5] == b"\x00\x00\x00\x00\x07"
    assert read_answer(framed[5:], iris)["predict"] == 0


def test_avro_answered_in_json(
    dataplane: DataPlane, iris: LoadedModel, expected: pa.Table, schemas: Path
) -> None:
    fmt = message_format("avro", schema_dir=schemas, output="json")
    assert fmt.content_type == "application/json"
    found = json.loads(
        answer(fmt, confluent({"id": "0", **rows()[0]}, IRIS_IN, IRIS_ID), iris, dataplane)
    )
    check_iris([found], expected.slice(0, 1))
    check_provenance(found, iris, "req-1")


def test_avro_with_a_bytes_input(
    dataplane: DataPlane, greeting: LoadedModel, schemas: Path
) -> None:
    fmt = message_format("avro", schema_dir=schemas, output_schema_id=ANSWER_ID)
    fmt.prepare(greeting)
    for value in (
        confluent({"text": "bonsoir"}, TEXT_IN, TEXT_ID),
        confluent({"text": b"bonsoir"}, RAW_IN, RAW_ID),
    ):
        found = read_answer(answer(fmt, value, greeting, dataplane)[5:], greeting)
        assert found["language"] == "fr"
        check_provenance(found, greeting, "req-1")


def test_avro_explicit_features(dataplane: DataPlane, iris: LoadedModel, tmp_path: Path) -> None:
    short = {
        "type": "record",
        "name": "Short",
        "fields": [{"name": n, "type": "float"} for n in ("d", "c", "b", "a")],
    }
    path = tmp_path / "short.avsc"
    path.write_text(json.dumps(short))
    fmt = message_format("avro", schema=path, features=["a", "b", "c", "d"])
    record = {"a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2}
    plain = message_format("json")
    assert (
        read_answer(answer(fmt, avro(record, short), iris, dataplane), iris)["predict"]
        == (json.loads(answer(plain, orjson.dumps(ROW), iris, dataplane))["predict"])
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (confluent({"id": "a", **ROW}, IRIS_IN, IRIS_ID)[:-4], "ends before the record does"),
        (confluent({"id": "a", **ROW}, IRIS_IN, 99), "unknown Avro schema id 99: .* 99.avsc"),
        (b"\x01" + confluent({"id": "a", **ROW}, IRIS_IN, IRIS_ID)[1:], "magic byte"),
        (orjson.dumps(ROW), "starts with byte 0x7b"),
        (b"\x00\x00", "shorter than the Confluent wire format's header"),
        (confluent({"text": "hi"}, TEXT_IN, TEXT_ID), r"missing field\(s\) 'sepal_length'"),
        (struct.pack(">bI", 0, 14) + struct.pack("<d", 1.0), "is an Avro double, not a record"),
    ],
)
def test_avro_refuses_what_does_not_decode(
    iris: LoadedModel, schemas: Path, value: bytes, match: str
) -> None:
    fmt = message_format("avro", schema_dir=schemas, output_schema_id=ANSWER_ID)
    with pytest.raises(InvalidInput, match=match) as refused:
        fmt.decode(value, iris)
    if "99" in match:
        assert str(schemas) in refused.value.message


def test_avro_schemaless_refusals(iris: LoadedModel, iris_schema: Path, tmp_path: Path) -> None:
    fmt = message_format("avro", schema=iris_schema)
    good = avro({"id": "a", **ROW}, IRIS_IN)
    with pytest.raises(InvalidInput, match="past the end of a record"):
        fmt.decode(good + b"\x00", iris)
    with pytest.raises(InvalidInput, match="ends before the record does"):
        fmt.decode(good[:5], iris)
    # A writer schema whose fields do not feed the model: refused before the first message.
    texts = tmp_path / "text.avsc"
    texts.write_text(json.dumps(TEXT_IN))
    wrong = message_format("avro", schema=texts)
    with pytest.raises(InvalidInput, match=r"missing field\(s\) 'sepal_length'"):
        wrong.prepare(iris)
    with pytest.raises(InvalidInput, match=r"missing field\(s\) 'sepal_length'"):
        wrong.decode(avro({"text": "x"}, TEXT_IN), iris)


# -- versions and the answer schema ---------------------------------------------------------


@pytest.mark.parametrize("name", ["json", "avro"])
def test_one_format_answers_for_every_version(
    dataplane: DataPlane, iris: LoadedModel, iris_v2: LoadedModel, iris_schema: Path, name: str
) -> None:
    fmt = message_format(name, schema=iris_schema if name == "avro" else None)
    value = avro({"id": "a", **ROW}, IRIS_IN) if name == "avro" else orjson.dumps(ROW)
    for model in (iris, iris_v2, iris):
        raw = answer(fmt, value, model, dataplane)
        found = read_answer(raw, model) if name == "avro" else json.loads(raw)
        check_provenance(found, model, "req-1")
    assert iris.version.digest != iris_v2.version.digest


def test_an_answer_schema_that_changes_is_refused(iris: LoadedModel, iris_schema: Path) -> None:
    fmt = message_format("avro", schema=iris_schema, output_schema_id=ANSWER_ID)
    fmt.prepare(iris)
    outputs = (TensorSpec("predict", "INT64", (-1,)),)
    mv = dataclasses.replace(
        iris.version, version=9, signature=Signature(iris.version.signature.inputs, outputs)
    )
    other = LoadedModel(mv, iris.runtime, None, DIRECT)
    response = InferResponse(
        "iris", "9", "r", [Tensor("predict", "INT64", (1,), np.array([1]))], {}
    )
    with pytest.raises(
        InvalidInput, match="version 9 answers with another Avro schema than version 1"
    ):
        fmt.encode(response, other)


def test_the_output_schema_is_printable_json(iris: LoadedModel, greeting: LoadedModel) -> None:
    for model in (iris, greeting):
        text = output_schema_json(model.version)
        fastavro.parse_schema(json.loads(text))
        assert json.loads(text)["fields"][-1]["name"] == "_request_id"


# -- the options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("xml", {}, "unknown --format 'xml'; use one of oip, json, avro"),
        ("avro", {}, "exactly one of --schema FILE .* and --schema-dir DIR"),
        ("avro", {"schema": "iris", "schema_dir": "dir"}, "exactly one of"),
        ("avro", {"schema_dir": "dir"}, "give --output-schema-id N"),
        ("avro", {"schema": "iris", "output": "xml"}, "unknown --output-format 'xml'"),
        ("avro", {"schema": "iris", "output": "json", "output_schema_id": 3}, "frames Avro"),
        ("avro", {"schema": "iris", "output_schema_id": -1}, "schema id is from 0"),
        ("avro", {"schema": "double"}, "is an Avro double, not a record"),
        ("avro", {"schema": "missing"}, "does not exist"),
        ("avro", {"schema_dir": "missing", "output": "json"}, "not a directory"),
        ("json", {"schema": "iris"}, "--schema applies to --format avro, not json"),
        ("oip", {"schema_dir": "dir", "output_schema_id": 1}, "--schema-dir and --output-schema"),
        ("json", {"output": "avro"}, "--output-format applies to --format avro"),
        ("oip", {"output": "avro"}, "--output-format applies to --format avro"),
        ("oip", {"features": ["a"]}, "--features applies to --format json and avro"),
    ],
)
def test_bad_combinations_are_refused(
    tmp_path: Path, name: str, options: dict[str, Any], match: str
) -> None:
    (tmp_path / "iris.avsc").write_text(json.dumps(IRIS_IN))
    (tmp_path / "double.avsc").write_text('"double"')
    (tmp_path / "dir").mkdir()
    for key in ("schema", "schema_dir"):
        if key in options:
            given = options[key]
            options[key] = tmp_path / (f"{given}.avsc" if key == "schema" else given)
    with pytest.raises(InvalidInput, match=match):
        message_format(name, **options)
