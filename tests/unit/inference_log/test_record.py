"""The record's one field list and what derives from it: columns, table text, rows, views."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np

from modelport.inference_log.location import open_store
from modelport.inference_log.record import (
    COLUMNS,
    REDACTED,
    LogBatch,
    LogRecord,
    StoredRecord,
    Tensors,
    encode_batch,
    encode_record,
    is_row,
)
from modelport.inference_log.store import SCHEMA

# The table as the log has always created it: SQLite keeps this text in every file's schema.
WRITTEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS inference_log (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
    version INTEGER, digest TEXT NOT NULL, protocol TEXT NOT NULL, caller TEXT NOT NULL,
    inputs {json}, outputs {json}, latency_ms DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_log_request_id ON inference_log (request_id);
CREATE TABLE IF NOT EXISTS inference_feedback (
    id {serial} PRIMARY KEY{autoincrement},
    request_id TEXT NOT NULL, model TEXT NOT NULL, label {json} NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_inference_feedback_model ON inference_feedback (model, request_id);
"""


def test_the_columns_keep_their_order_and_the_table_its_text() -> None:
    assert COLUMNS == (
        "request_id", "at", "model", "version", "digest", "protocol", "caller",
        "inputs", "outputs", "latency_ms", "status", "error",
    )  # fmt: skip
    assert SCHEMA == WRITTEN_SCHEMA


def test_a_new_sqlite_file_holds_the_table_as_always(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    open_store(str(path)).close()
    with sqlite3.connect(path) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'inference_log'"
        ).fetchone()
    expected = WRITTEN_SCHEMA.split(";")[0].strip().replace("IF NOT EXISTS ", "")
    assert sql == expected.format(serial="INTEGER", autoincrement="", json="TEXT")


def test_both_views_have_the_fields_in_column_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(LogRecord)) == COLUMNS
    assert tuple(f.name for f in dataclasses.fields(StoredRecord)) == (*COLUMNS, "id")


def test_a_record_encodes_to_a_row_of_plain_values() -> None:
    record = LogRecord(
        "r\x00", 1, "iris", np.int64(3), "d", "rest", "c",
        {"x": np.arange(2.0), "secret": None}, None, 2, "200", "",
    )  # fmt: skip
    row = encode_record(record)
    assert row == {
        "request_id": "r\ufffd", "at": 1.0, "model": "iris", "version": 3, "digest": "d",
        "protocol": "rest", "caller": "c", "inputs": f'{{"x":[0.0,1.0],"secret":"{REDACTED}"}}',
        "outputs": None, "latency_ms": 2.0, "status": "200", "error": "",
    }  # fmt: skip
    assert list(row) == list(COLUMNS)
    assert [type(row[c]) for c in ("at", "version", "latency_ms")] == [float, int, float]
    assert is_row(row)
    assert not is_row({**row, "version": "3"})
    assert not is_row({k: v for k, v in row.items() if k != "error"})
    assert not is_row([row])


def _batch(inputs: Tensors | None, outputs: Tensors | None, spans: list[slice]) -> LogBatch:
    ids = [f"r{i}" for i in range(len(spans))]
    callers = [f"s@{i}\x00" for i in range(len(spans))]
    return LogBatch(5.0, "iris", 2, "d", "stream", 1.5, "ok", ids, callers, inputs, outputs, spans)


def _one_by_one(batch: LogBatch) -> list[dict[str, object]]:
    def part(arrays: Tensors | None, span: slice) -> dict[str, object] | None:
        if arrays is None:
            return None
        if span == slice(None):
            return dict(arrays)
        return {n: None if a is None else a[span] for n, a in arrays.items()}

    return [
        encode_record(
            LogRecord(
                rid,
                batch.at,
                batch.model,
                batch.version,
                batch.digest,
                batch.protocol,
                caller,
                part(batch.inputs, span),
                part(batch.outputs, span),
                batch.latency_ms,
                batch.status,
                "",
            )
        )
        for rid, caller, span in zip(batch.request_ids, batch.callers, batch.spans, strict=True)
    ]


def test_a_batch_encodes_to_the_rows_of_its_requests_one_by_one() -> None:
    rng = np.random.default_rng(0)
    rows = [slice(i, i + 1) for i in range(5)]
    floats = rng.normal(size=(5, 4)).astype(np.float32)
    floats[1, 2], floats[3, 0] = np.nan, np.inf
    tensors: list[Tensors] = [
        {"input": floats, "label": np.arange(5), "flag": np.arange(5) % 2 == 0},
        {
            "deep": rng.integers(0, 9, size=(5, 2, 3)).astype(np.uint8),
            "half": floats[:, :2].astype(np.float16),
        },
        {'we"ird\\': np.arange(5.0)},  # names JSON must escape
        {"text": np.array(list("abcde"), dtype=object)},  # not numbers: one by one
        {"view": floats[:, ::2]},  # not contiguous
        {"secret": None, "x": np.arange(5)},  # redacted
        {"empty": np.zeros((5, 0))},
        {},
    ]
    for arrays in tensors:
        for outputs in (None, {"y": np.arange(5) * 2}):
            batch = _batch(arrays, outputs, rows)
            encoded = encode_batch(batch)
            assert encoded == _one_by_one(batch)
            assert [list(row) for row in encoded] == [list(COLUMNS)] * 5
            assert all(is_row(row) for row in encoded)
    # Requests of several rows, and one request holding the tensors whole.
    several = _batch({"x": floats}, {"y": floats * 2}, [slice(0, 2), slice(2, 3), slice(3, 5)])
    whole = _batch({"x": floats[0]}, {"y": np.array(3, dtype=np.float32)}, [slice(None)])
    for batch in (several, whole):
        assert encode_batch(batch) == _one_by_one(batch)
    assert (
        encode_batch(several)[0]["inputs"]
        == encode_record(LogRecord("r0", 0, "", 1, "", "", "", {"x": floats[:2]}, None, 0, "", ""))[
            "inputs"
        ]
    )
