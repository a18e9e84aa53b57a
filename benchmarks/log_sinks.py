"""Inference-log sinks compared: SQLite (WAL) transactions against Parquet segment files.

`python benchmarks/log_sinks.py [--rows 50000] [--runs 5] [--postgres URL]` writes the same
encoded rows (an iris request: 4 FP32 inputs; outputs 3 FP32 probabilities and an INT64 label)
to each sink and reads them back, and prints the median rows/s of the runs:

- encode: `encode_record`, the writer thread's CPU cost per row before any sink;
- sqlite-1k: `SQLiteStore.write` in 1,000-row transactions into a new WAL file;
- parquet-1k / parquet-10k: one Parquet file (pyarrow, snappy) per 1,000 / 10,000-row segment;
- postgres-copy (with --postgres, a URL whose role may create databases): `PostgresStore.write`
  in 1,000-row COPY transactions into a scratch database, dropped afterwards;
- read-back: every row with its tensors decoded (SQLite via `read`; Parquet via the dataset);
- one model: the rows of one of four models (SQLite through its (model, at) index; Parquet
  through a dataset filter);
- export: the whole log into one Parquet file (SQLite rows as stored, JSON left as text);
- writer: `InferenceLog` end to end (submit, encode, SQLite), and the cost of one `submit`.

Everything runs in a temporary directory; about 20 s on this machine with the defaults.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from modelport.inference_log.location import open_store
from modelport.inference_log.record import COLUMNS, LogRecord, encode_record
from modelport.inference_log.sqlite import SQLiteStore
from modelport.inference_log.writer import InferenceLog

MODELS = ("iris", "wine", "digits", "housing")
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("at", pa.float64()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("digest", pa.string()),
        ("protocol", pa.string()),
        ("caller", pa.string()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)


def records(count: int) -> list[LogRecord]:
    """Iris-like inferences, spread over four models, one second apart."""
    rng = np.random.default_rng(0)
    features = rng.normal(5.0, 1.0, size=(count, 4)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(3), size=count).astype(np.float32)
    start = time.time() - count
    return [
        LogRecord(
            request_id=secrets.token_hex(16),
            at=start + i,
            model=MODELS[i % len(MODELS)],
            version=1,
            digest="ab" * 32,
            protocol="rest",
            caller="127.0.0.1",
            inputs={"input-0": features[i : i + 1]},
            outputs={
                "predict": np.array([int(probabilities[i].argmax())], dtype=np.int64),
                "predict_proba": probabilities[i : i + 1],
            },
            latency_ms=0.35,
            status="200",
            error="",
        )
        for i in range(count)
    ]


def chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def write_sqlite(path: Path, rows: list[dict[str, Any]], *, request_index: bool = True) -> None:
    store = SQLiteStore(path).connect()
    if not request_index:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP INDEX ix_inference_log_request_id")
        conn.close()
    for chunk in chunks(rows, 1000):
        store.write(chunk)
    store.close()


def write_parquet(folder: Path, rows: list[dict[str, Any]], segment: int) -> None:
    folder.mkdir()
    for number, chunk in enumerate(chunks(rows, segment)):
        columns = {name: [row[name] for row in chunk] for name in COLUMNS}
        table = pa.Table.from_pydict(columns, schema=SCHEMA)
        pq.write_table(table, folder / f"segment-{number:06d}.parquet")


def read_parquet(folder: Path, model: str | None = None) -> list[dict[str, Any]]:
    dataset = ds.dataset(folder, format="parquet")
    wanted = None if model is None else ds.field("model") == model
    rows = dataset.to_table(filter=wanted).to_pylist()
    for row in rows:
        row["inputs"] = orjson.loads(row["inputs"])
        row["outputs"] = orjson.loads(row["outputs"])
    return rows


def export_sqlite(path: Path, target: Path) -> None:
    conn = sqlite3.connect(path)
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM inference_log ORDER BY id")
    with pq.ParquetWriter(target, SCHEMA) as writer:
        while batch := cursor.fetchmany(10_000):
            columns = list(zip(*batch, strict=True))
            writer.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], schema=SCHEMA))
    conn.close()


def postgres_database(server: str) -> tuple[str, Callable[[], None]]:
    """A scratch database on `server` and the function that drops it."""
    name = f"modelport_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    url = urlsplit(server)._replace(path=f"/{name}").geturl()

    def drop() -> None:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())

    return url, drop


def writer_end_to_end(directory: Path, batch: list[LogRecord]) -> tuple[float, float]:
    """(seconds for all records to reach SQLite through InferenceLog, seconds in submit)."""
    log = InferenceLog(
        str(directory / f"writer-{secrets.token_hex(4)}.sqlite"), directory / "journal"
    )
    log.start()
    started = time.perf_counter()
    submitting = 0.0
    for record in batch:
        before = time.perf_counter()
        log.submit(record)
        submitting += time.perf_counter() - before
    assert log.drain(60)
    elapsed = time.perf_counter() - started
    log.close()
    return elapsed, submitting


def one_run(
    directory: Path, batch: list[LogRecord], rows: list[dict[str, Any]], pg_url: str
) -> tuple[dict[str, float], dict[str, int]]:
    """Rows/s of every measurement (microseconds for submit), and bytes on disk per sink."""
    count = len(rows)
    speed: dict[str, float] = {}
    sizes: dict[str, int] = {}
    speed["encode"] = count / timed(lambda: [encode_record(r) for r in batch])

    path = directory / f"log-{secrets.token_hex(4)}.sqlite"
    speed["write sqlite-1k"] = count / timed(lambda: write_sqlite(path, rows))
    sizes["sqlite"] = path.stat().st_size
    bare = directory / f"bare-{secrets.token_hex(4)}.sqlite"
    speed["write sqlite-1k, no request_id index"] = count / timed(
        lambda: write_sqlite(bare, rows, request_index=False)
    )
    for segment in (1000, 10_000):
        folder = directory / f"parquet-{segment}-{secrets.token_hex(4)}"
        seconds = timed(lambda: write_parquet(folder, rows, segment))  # noqa: B023
        speed[f"write parquet-{segment // 1000}k"] = count / seconds
        sizes[f"parquet-{segment // 1000}k"] = sum(f.stat().st_size for f in folder.iterdir())
    if pg_url:
        with open_store(pg_url) as pg:
            seconds = timed(lambda: [pg.write(c) for c in chunks(rows, 1000)])
        speed["write postgres-copy-1k"] = count / seconds

    with open_store(str(path)) as store:
        speed["read-back sqlite"] = count / timed(store.read)
        one = store.count("iris")
        speed["one model sqlite"] = one / timed(lambda: store.read(model="iris"))
    speed["read-back parquet-10k"] = count / timed(lambda: read_parquet(folder))
    speed["one model parquet-10k"] = one / timed(lambda: read_parquet(folder, "iris"))
    export = directory / f"export-{secrets.token_hex(4)}.parquet"
    speed["export sqlite->parquet"] = count / timed(lambda: export_sqlite(path, export))

    elapsed, submitting = writer_end_to_end(directory, batch)
    speed["writer end-to-end (sqlite)"] = count / elapsed
    speed["submit us/record"] = submitting / count * 1e6
    return speed, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default="", help="server URL (role may create databases)")
    args = parser.parse_args()
    batch = records(args.rows)
    rows = [encode_record(r) for r in batch]
    size = sum(len(orjson.dumps(row)) for row in rows) / len(rows)
    print(f"{args.rows} rows of about {size:.0f} bytes as JSON; median of {args.runs} runs")

    runs: list[dict[str, float]] = []
    pg_url, pg_drop = postgres_database(args.postgres) if args.postgres else ("", None)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for _ in range(args.runs):
                speed, sizes = one_run(Path(scratch), batch, rows, pg_url)
                runs.append(speed)
    finally:
        if pg_drop is not None:
            pg_drop()

    width = max(map(len, runs[0]))
    for name in runs[0]:
        unit = "" if name.endswith("/record") else " rows/s"
        median = statistics.median(run[name] for run in runs)
        print(f"{name:<{width}}  {median:>12,.1f}{unit}")
    for name, bytes_ in sizes.items():
        print(f"{'size ' + name:<{width}}  {bytes_ / args.rows:>12,.1f} bytes/row")


if __name__ == "__main__":
    main()
