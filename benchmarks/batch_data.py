"""The batch benchmark's input files: seeded Parquet files, generated once and reused.

Iris-like rows are drawn around scikit-learn's bundled iris (a random training row plus
Gaussian noise of a tenth of each feature's spread), in the four float32 columns the demo's
`iris` records as its reference data; the heavy forest's rows are standard normal, in
HEAVY_FEATURES float32 columns. Files are written chunk by chunk (memory stays small for 5M
rows), to a temporary name renamed into place, and reused while the `.spec.json` next to each
one still matches what would be generated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from models import HEAVY_FEATURES

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
"""The demo iris model's feature columns, in its input's order (its reference profile's names)."""
HEAVY_COLUMNS = tuple(f"f{j:02d}" for j in range(HEAVY_FEATURES))
IRIS_ROWS = {"100k": 100_000, "500k": 500_000, "2M": 2_000_000, "5M": 5_000_000}
ROW_GROUP = 250_000
"""Rows per Parquet row group: the 2M-row file has 8, the 5M-row file 20."""
HEAVY_FILES = 4
HEAVY_ROWS_PER_FILE = 250_000
HEAVY_ROW_GROUP = 62_500
"""The heavy input: 4 files of 4 row groups each, so Dask has 4 or 16 partitions to share
whichever it splits by. 1M rows take about 40 s of forest predict (class and probabilities)
on one core here: long enough that a cluster's start-up does not decide the ratio."""
CHUNK = 250_000
SEED = 14
GENERATOR = 1
"""Bump to regenerate every cached file (a change of how rows are drawn)."""


def _iris_source() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris

    x = load_iris().data.astype(np.float32)
    return x, x.std(axis=0) / 10


def iris_chunks(rows: int, seed: int = SEED) -> Iterator[pa.Table]:
    """`rows` iris-like rows in IRIS_FEATURES columns, CHUNK rows at a time (seeded)."""
    x, noise = _iris_source()
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        picked = x[rng.integers(0, len(x), n)]
        values = picked + rng.standard_normal((n, x.shape[1]), dtype=np.float32) * noise
        # Lengths in cm are positive; a clipped tail keeps the rows plausible.
        values = np.maximum(values, np.float32(0.1))
        yield pa.table({name: values[:, j] for j, name in enumerate(IRIS_FEATURES)})


def heavy_chunks(rows: int, seed: int) -> Iterator[pa.Table]:
    """`rows` standard normal rows in HEAVY_COLUMNS columns, CHUNK rows at a time (seeded)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        values = rng.standard_normal((n, len(HEAVY_COLUMNS)), dtype=np.float32)
        yield pa.table({name: values[:, j] for j, name in enumerate(HEAVY_COLUMNS)})


def _cached(path: Path, spec: dict[str, Any], chunks: Iterator[pa.Table], row_group: int) -> Path:
    """`path`, written from `chunks` unless a file of the same spec is already there."""
    # Hidden (a leading dot), so that a directory of these files is an input of data alone:
    # `modelport batch` reads every other file in a directory it is given.
    stamp = path.with_name(f".{path.stem}.spec.json")
    wanted = json.dumps({**spec, "generator": GENERATOR, "row_group": row_group}, sort_keys=True)
    if path.exists() and stamp.exists() and stamp.read_text() == wanted:
        return path
    print(f"  generating {path.name} ...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer: pq.ParquetWriter | None = None
    try:
        for table in chunks:
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=row_group)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    stamp.write_text(wanted)
    return path


def iris_file(data: Path, size: str) -> Path:
    """The cached iris-like Parquet file of IRIS_ROWS[size] rows (row groups of ROW_GROUP)."""
    rows = IRIS_ROWS[size]
    spec = {"kind": "iris", "rows": rows, "seed": SEED}
    return _cached(data / f"iris-{size}.parquet", spec, iris_chunks(rows), ROW_GROUP)


def heavy_dir(data: Path) -> Path:
    """A directory of HEAVY_FILES cached Parquet files for the heavy forest."""
    folder = data / "heavy"
    for i in range(HEAVY_FILES):
        spec = {"kind": "heavy", "rows": HEAVY_ROWS_PER_FILE, "seed": SEED + i}
        chunks = heavy_chunks(HEAVY_ROWS_PER_FILE, SEED + i)
        _cached(folder / f"part-{i}.parquet", spec, chunks, HEAVY_ROW_GROUP)
    return folder


def heavy_reference(data: Path) -> Path:
    """A 5,000-row sample in HEAVY_COLUMNS: the heavy forest's reference data at push."""
    spec = {"kind": "heavy-reference", "rows": 5_000, "seed": SEED - 1}
    chunks = heavy_chunks(5_000, SEED - 1)
    return _cached(data / "heavy-reference.parquet", spec, chunks, 5_000)


def mlserver_requests(data: Path, source: Path) -> Path:
    """`mlserver infer`'s input for `source`: one OIP request per row, as JSON lines.

    Each line is `{"id": "ROW", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype":
    "FP32", "data": [...]}], "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}`:
    a unique id (the tool keys a micro-batch's requests by id, so equal ids would collapse)
    and both outputs, so MLServer computes what modelport writes (class and probabilities).
    """
    path = data / f"{source.stem}.mlserver.jsonl"
    # Hidden (a leading dot), so that a directory of these files is an input of data alone:
    # `modelport batch` reads every other file in a directory it is given.
    stamp = path.with_name(f".{path.stem}.spec.json")
    wanted = json.dumps({"source": source.name, "mtime": source.stat().st_mtime_ns})
    if path.exists() and stamp.exists() and stamp.read_text() == wanted:
        return path
    print(f"  writing {path.name} ...", flush=True)
    table = pq.read_table(source, columns=list(IRIS_FEATURES))
    rows = np.column_stack([table[name].to_numpy() for name in IRIS_FEATURES])
    outputs = [{"name": "predict"}, {"name": "predict_proba"}]
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as out:
        for i, row in enumerate(rows):
            request = {
                "id": str(i),
                "inputs": [
                    {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": row.tolist()}
                ],
                "outputs": outputs,
            }
            out.write(json.dumps(request) + "\n")
    os.replace(tmp, path)
    stamp.write_text(wanted)
    return path
