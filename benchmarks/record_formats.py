"""Microseconds per message of the stream formats' decoding and encoding, on the demo iris.

One iris record (four feature fields, in the order the version's reference data recorded)
per call, as `modelport stream` decodes each message: the record mapping alone, each
`--format`'s decode and encode, and, for scale, the table mapping batch jobs use, on a
one-row table. The model itself is not called (its answer is computed once). Prints the
median over REPEATS repeats of NUMBER calls each:

    PYTHONPATH=src .venv/bin/python benchmarks/record_formats.py [--registry DIR]
        [--number 20000] [--repeats 7]

Without --registry the demo registry is built in a temporary directory first.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa

from modelport.demo import build_demo
from modelport.jobs.streams.formats import message_format
from modelport.protocol.types import InferResponse, Tensor
from modelport.registry.store import Registry
from modelport.serving import avro_records
from modelport.serving.artifacts import load_artifact
from modelport.serving.catalog import DIRECT, LoadedModel
from modelport.serving.record_mapping import RecordMapping, output_records
from modelport.serving.table_mapping import TableMapping

RECORD = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
OIP_INPUT = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": list(RECORD.values())}
SCHEMA = {
    "type": "record",
    "name": "IrisRow",
    "fields": [{"name": name, "type": "double"} for name in RECORD],
}


def _median_us(call: Callable[[], object], number: int, repeats: int) -> float:
    runs = timeit.repeat(call, number=number, repeat=repeats)
    return statistics.median(runs) / number * 1e6


def _loaded(location: str) -> LoadedModel:
    with Registry.open(location, create=False) as store:
        mv = store.get("iris")
        artifact = load_artifact(store, mv)
        return LoadedModel(mv, artifact.runtime, mv.compiled if artifact.compiled else None, DIRECT)


def _response(model: LoadedModel) -> InferResponse:
    request = RecordMapping.for_model(model.version).request(RECORD)
    arrays = model.predict(model.validator.inputs(request), model.output_names)
    outputs = [Tensor(n, model.output_types[n][0], arrays[n].shape, arrays[n]) for n in arrays]
    provenance = {**model.provenance, "modelport.request_id": "bench-1"}
    return InferResponse(model.name, str(model.number), "bench-1", outputs, provenance)


def measure(location: str, number: int, repeats: int) -> list[tuple[str, float]]:
    """(what, µs per call) for each measured path."""
    model = _loaded(location)
    mv = model.version
    response = _response(model)
    mapping = RecordMapping.for_model(mv)
    work = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    (work / "iris.avsc").write_text(json.dumps(SCHEMA))
    schema = avro_records.parse_schema(SCHEMA)
    formats = {
        "json": (message_format("json"), orjson.dumps(RECORD)),
        "avro": (
            message_format("avro", schema=work / "iris.avsc"),
            avro_records.write_schemaless(RECORD, schema),
        ),
        "oip": (message_format("oip"), orjson.dumps({"inputs": [OIP_INPUT]})),
    }
    table = pa.table({name: [value] for name, value in RECORD.items()})

    def table_row() -> object:
        return TableMapping.for_model(mv, table.column_names).inputs(table)

    timed: list[tuple[str, Callable[[], object]]] = [
        ("RecordMapping.tensors (one record)", functools.partial(mapping.tensors, RECORD)),
        ("output_records (one row)", functools.partial(output_records, response)),
        ("TableMapping, one-row table (for scale)", table_row),
    ]
    for name, (fmt, value) in formats.items():
        fmt.prepare(model)
        timed.append((f"--format {name} decode", functools.partial(fmt.decode, value, model)))
        timed.append((f"--format {name} encode", functools.partial(fmt.encode, response, model)))
    return [(what, _median_us(call, number, repeats)) for what, call in timed]


def main() -> None:
    """Print one line per path: µs per call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="a registry holding the demo models")
    parser.add_argument("--number", type=int, default=20000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelport-demo-") as tmp:
        location = args.registry
        if location is None:
            location = str(Path(tmp) / "registry")
            for _ in build_demo(location, created_by="benchmarks"):
                pass
        for what, us in measure(location, args.number, args.repeats):
            print(f"{what:<42} {us:>8.2f} µs")


if __name__ == "__main__":
    main()
