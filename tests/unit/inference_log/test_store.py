"""The inference log's stores: a real SQLite file and a real PostgreSQL database, same contract."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from modelport.errors import InvalidInput, NotReady
from modelport.inference_log.location import open_store
from modelport.inference_log.record import LogRecord, StoredRecord, encode_record
from modelport.inference_log.store import LogStore, RowsRejected
from modelport.registry.database import display_location

CHECKED_TABLE = """
CREATE TABLE inference_log (
    id {serial} PRIMARY KEY, request_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL CHECK (model <> 'poison'), version INTEGER, digest TEXT NOT NULL,
    protocol TEXT NOT NULL, caller TEXT NOT NULL, inputs TEXT, outputs TEXT,
    latency_ms DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL
)
"""
"""The log table with a constraint an operator added: rows of model "poison" are refused."""


def make_record(
    request_id: str, *, model: str = "iris", at: float = 1_700_000_000.0, version: int | None = 3
) -> LogRecord:
    return LogRecord(
        request_id=request_id,
        at=at,
        model=model,
        version=version,
        digest="ab" * 32,
        protocol="rest",
        caller="127.0.0.1",
        inputs={"input-0": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)},
        outputs={"predict": np.array([0], dtype=np.int64)},
        latency_ms=1.25,
        status="200",
        error="",
    )


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a SQLite file path, or a new PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "logs" / "inference.sqlite")
    return str(request.getfixturevalue("database_url"))


@pytest.fixture
def store(target: str) -> Iterator[LogStore]:
    with open_store(target) as opened:
        yield opened


def test_every_field_and_datatype_round_trips(store: LogStore) -> None:
    grid = np.arange(12, dtype=np.int64).reshape(3, 4)
    ok = LogRecord(
        request_id="req-1",
        at=1_700_000_123.456,
        model="iris",
        version=7,
        digest="cd" * 32,
        protocol="grpc",
        caller="10.0.0.9 key=ci",
        inputs={
            "fp32": np.array([[0.1, -2.5], [3.25, 1e-8]], dtype=np.float32),
            "int64": grid[:, ::2],  # not contiguous
            "bool": np.array([True, False, True]),
            "bytes": np.array([[b"caf\xc3\xa9", b"\xff\xfe"], [b"nul\x00", b""]], dtype=object),
            "scalar": np.array(2.5),
            "empty": np.zeros((0, 4), dtype=np.float32),
            "secret": None,
        },
        outputs={"predict": np.array([2, 0], dtype=np.int64), "hidden": None},
        latency_ms=0.875,
        status="OK",
        error="",
    )
    failed = LogRecord(
        request_id="req-2",
        at=1_700_000_124.0,
        model="iris",
        version=None,
        digest="",
        protocol="rest",
        caller="::1",
        inputs=None,
        outputs=None,
        latency_ms=0.5,
        status="400",
        error="input 'input-0' must be FP32, got a \x00 and an unpaired \ud800",
    )
    store.write([encode_record(ok), encode_record(failed)])

    first, second = store.read()
    assert first.id < second.id
    assert first == StoredRecord(
        id=first.id,
        request_id="req-1",
        at=1_700_000_123.456,
        model="iris",
        version=7,
        digest="cd" * 32,
        protocol="grpc",
        caller="10.0.0.9 key=ci",
        inputs={
            "fp32": [[0.1, -2.5], [3.25, 1e-8]],
            "int64": [[0, 2], [4, 6], [8, 10]],
            "bool": [True, False, True],
            "bytes": [["café", "\ufffd\ufffd"], ["nul\ufffd", ""]],
            "scalar": 2.5,
            "empty": [],
            "secret": "[redacted]",
        },
        outputs={"predict": [2, 0], "hidden": "[redacted]"},
        latency_ms=0.875,
        status="OK",
        error="",
    )
    # The float32 values are written at float32 precision and read back exactly.
    assert np.array_equal(np.array(first.inputs["fp32"], dtype=np.float32), ok.inputs["fp32"])  # type: ignore[index]
    assert (second.version, second.inputs, second.outputs) == (None, None, None)
    assert (second.status, second.digest, second.caller) == ("400", "", "::1")
    assert second.error == "input 'input-0' must be FP32, got a \ufffd and an unpaired ?"


def test_read_filters_by_model_time_and_position(store: LogStore) -> None:
    models = ["iris", "wine", "iris", "iris", "wine", "iris"]
    store.write(
        [encode_record(make_record(f"r{i}", model=m, at=1000.0 + i)) for i, m in enumerate(models)]
    )

    everything = store.read()
    assert [r.request_id for r in everything] == [f"r{i}" for i in range(6)]
    ids = [r.id for r in everything]
    assert ids == sorted(ids)

    assert [r.request_id for r in store.read(model="iris")] == ["r0", "r2", "r3", "r5"]
    assert [r.request_id for r in store.read(since=1003.0)] == ["r3", "r4", "r5"]
    assert [r.request_id for r in store.read(after_id=ids[3])] == ["r4", "r5"]
    assert [r.request_id for r in store.read(limit=2)] == ["r0", "r1"]
    assert [r.request_id for r in store.read(model="iris", since=1001.0, limit=2)] == ["r2", "r3"]
    assert [r.request_id for r in store.read(model="wine", after_id=ids[1])] == ["r4"]
    assert store.read(model="unknown") == []
    assert store.read(limit=0) == []

    assert store.count() == 6
    assert store.count("iris") == 4
    assert store.count("wine") == 2
    assert store.count("unknown") == 0


def test_feedback_pairs_join_labels_with_logged_outputs(store: LogStore) -> None:
    wine = make_record("shared-id", model="wine")
    wine.outputs = {"predict": np.array([9], dtype=np.int64)}
    errored = make_record("errored")
    errored.outputs, errored.status = None, "400"
    rows = [make_record("a", version=1), make_record("b", version=2), wine, errored]
    rows.append(make_record("shared-id", version=2))
    store.write([encode_record(r) for r in rows])

    store.add_feedback(
        "iris",
        [
            ("b", {"class": 1}),
            ("never-logged", 2),
            ("errored", 0),
            ("a", np.int64(0)),
            ("shared-id", [0.5]),
        ],
    )
    store.add_feedback("wine", [("shared-id", 9)])

    assert store.feedback_pairs("iris") == [
        ("b", 2, {"predict": [0]}, {"class": 1}),
        ("a", 1, {"predict": [0]}, 0),
        ("shared-id", 2, {"predict": [0]}, [0.5]),
    ]
    assert store.feedback_pairs("wine") == [("shared-id", 3, {"predict": [9]}, 9)]
    assert store.feedback_pairs("unknown") == []


def test_a_write_is_one_transaction(target: str) -> None:
    """A refused row fails the whole write, which leaves nothing behind."""
    if "://" in target:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(CHECKED_TABLE.format(serial="BIGSERIAL").encode())
    else:
        Path(target).parent.mkdir(parents=True)
        with sqlite3.connect(target) as conn:
            conn.execute(CHECKED_TABLE.format(serial="INTEGER"))
        conn.close()
    with open_store(target) as store:
        good = [encode_record(make_record(f"ok-{i}")) for i in range(3)]
        with pytest.raises(RowsRejected):
            store.write([*good, encode_record(make_record("bad", model="poison"))])
        assert store.count() == 0
        store.write(good)
        assert [r.request_id for r in store.read()] == ["ok-0", "ok-1", "ok-2"]


def test_a_store_is_usable_from_other_threads(store: LogStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store.write([encode_record(make_record("main"))])
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: store.count("iris"), range(8)))
        pool.submit(store.write, [encode_record(make_record("worker"))]).result()
    assert counts == [1] * 8
    assert [r.request_id for r in store.read()] == ["main", "worker"]


def test_an_unreachable_store_raises_not_ready(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(NotReady, match="unavailable"):
        open_store(str(blocker / "inference.sqlite"))
    url = "postgresql://modelport:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(NotReady) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    # Deferred, the failure comes with the first call, and the next call tries again.
    lazy = open_store(str(blocker / "inference.sqlite"), lazy=True)
    with pytest.raises(NotReady):
        lazy.count()
    blocker.unlink()
    assert lazy.count() == 0
    lazy.close()


def test_locations() -> None:
    with pytest.raises(InvalidInput, match="unknown scheme"):
        open_store("mysql://user:pw@host/db")
    assert display_location("postgresql+psycopg://u:secret@db.example:5433/logs?password=x") == (
        "postgresql://u:***@db.example:5433/logs"
    )
    assert display_location("postgresql://[::1]/logs") == "postgresql://[::1]/logs"
    assert display_location("mysql://user:pw@host/db") == "mysql://***"
    assert display_location("relative/inference.sqlite") == "relative/inference.sqlite"
