"""The writer's view of its store, against a real SQLite file: refused rows are found and set
aside, and a store that is down stops the write until it is back."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from modelport.errors import NotReady
from modelport.inference_log.location import open_store
from modelport.inference_log.record import LogRecord, Row, encode_record
from modelport.inference_log.sink import LogSink

REFUSING_TABLE = (
    "CREATE TABLE inference_log (id INTEGER PRIMARY KEY, request_id, at, model CHECK "
    "(model <> 'poison'), version, digest, protocol, caller, inputs, outputs, latency_ms, "
    "status, error)"
)


def row(request_id: str, model: str = "iris") -> Row:
    return encode_record(
        LogRecord(request_id, 0.0, model, 1, "", "rest", "", None, None, 1.0, "200", "")
    )


def test_refused_rows_are_set_aside_one_by_one_and_the_rest_stored(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(REFUSING_TABLE)
    conn.close()
    aside: list[str] = []
    sink = LogSink(
        str(path), open_store, lambda r, reason: aside.append(r["request_id"]), tmp_path / "j"
    )
    batch = [row(f"a{i}") for i in range(5)] + [row("x", "poison")]
    batch += [row(f"b{i}") for i in range(4)] + [row("y", "poison")]

    assert sink.write(batch) == (len(batch), None)
    assert aside == ["x", "y"]
    sink.close()
    with open_store(str(path)) as store:
        stored = [r.request_id for r in store.read()]
    assert stored == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(4)]


def test_a_store_that_is_down_stops_the_write_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")

    def refuse(r: Row, reason: str) -> None:
        raise AssertionError("no row is refused here")

    sink = LogSink(str(blocked / "log.sqlite"), open_store, refuse, tmp_path / "journal")
    assert not sink.down
    done, error = sink.write([row("a"), row("b")])
    assert done == 0
    assert isinstance(error, NotReady)
    sink.failed(error)
    sink.failed(error)
    assert sink.down
    assert sink.due(force=True)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1

    blocked.unlink()
    assert sink.write([row("a"), row("b")]) == (2, None)
    sink.recovered()
    assert not sink.down
    assert sink.due(force=False)
    sink.close()
