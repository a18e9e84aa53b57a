"""`modelport logs tail|export|replay` over a real inference log of real iris predictions."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import modelport
from modelport.demo import build_greeting_language, build_iris
from modelport.inference_log.location import open_store
from modelport.inference_log.record import COLUMNS, LogRecord, encode_record
from modelport.intake.push import push_artifact
from modelport.registry.store import Registry

from ...conftest import CREATED_BY, write_iris_c001
from .conftest import fails, ok, run

NOW = time.time()
OLD = NOW - 3 * 3600
"""When the multi-row records were answered: before any --since 1h or 2h."""
SINGLE_ROWS = 150
"""One single-row record per iris row, asking for `predict` only."""
BATCHES = 5
"""Records of 30 rows each, with both outputs, answered at OLD."""
GRPC = 2
ERRORS = 3
REDACTED = 4
IRIS_RECORDS = SINGLE_ROWS + BATCHES + GRPC + ERRORS + REDACTED
REPLAYABLE = SINGLE_ROWS + BATCHES + GRPC


@dataclasses.dataclass
class Logged:
    """A registry with iris 1 and 2, and an inference log of version 1's real answers."""

    registry: str
    log: Path
    x: np.ndarray
    v1_labels: np.ndarray
    v1_proba: np.ndarray


def record(n: int, at: float, inputs: Any, outputs: Any, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": f"req-{n:04d}",
        "at": at,
        "model": "iris",
        "version": 1,
        "digest": "ab" * 32,
        "protocol": "rest",
        "caller": "127.0.0.1",
        "inputs": inputs,
        "outputs": outputs,
        "latency_ms": 0.5 + n / 1000,
        "status": "200",
        "error": "",
    }
    return encode_record(LogRecord(**(fields | extra)))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    work = tmp_path_factory.mktemp("logs")
    location = str(work / "registry")
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(work)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
        push_artifact(registry, write_iris_c001(work), name="iris", created_by=CREATED_BY)
        path, fmt, _ = build_greeting_language(work)
        push_artifact(registry, path, name="greeting", format=fmt, created_by=CREATED_BY)
    x = load_iris().data.astype(np.float32)
    model = modelport.load("iris", version=1, registry=location)
    try:
        both = model.predict(x)
        rows = [
            record(
                i,
                NOW - 600 + i,
                {"input-0": x[i : i + 1]},
                model.predict(x[i : i + 1], ["predict"]),
            )
            for i in range(SINGLE_ROWS)
        ]
    finally:
        model.close()
    n = SINGLE_ROWS
    for b in range(BATCHES):
        part = slice(30 * b, 30 * (b + 1))
        outputs = {name: array[part] for name, array in both.items()}
        rows.append(record(n, OLD + b, {"input-0": x[part]}, outputs))
        n += 1
    for g in range(GRPC):
        part = slice(g, g + 1)
        outputs = {name: array[part] for name, array in both.items()}
        rows.append(
            record(n, NOW - 60, {"input-0": x[part]}, outputs, protocol="grpc", status="OK")
        )
        n += 1
    for _ in range(ERRORS):
        bad = {"input-0": np.zeros((1, 3), np.float32)}
        rows.append(record(n, NOW - 50, bad, None, status="400", error="input-0: wrong shape"))
        n += 1
    for _ in range(REDACTED):
        outputs = {name: array[:1] for name, array in both.items()}
        rows.append(record(n, NOW - 40, {"input-0": None}, outputs))
        n += 1
    rows.append(record(n, NOW - 30, {"x": np.ones((1, 2))}, {"y": np.ones(1)}, model="other"))
    log = Path(location) / "inference-log.sqlite"
    with open_store(str(log)) as store:
        store.write(rows)
    return Logged(location, log, x, both["predict"], both["predict_proba"])


def stored(logged: Logged, model: str = "iris") -> list[dict[str, Any]]:
    """The log's records as the store reads them back, as plain dicts."""
    with open_store(str(logged.log)) as store:
        return [dataclasses.asdict(r) for r in store.read(model=model)]


def export(logged: Logged, *args: str) -> str:
    return ok(run("logs", "export", "--model", "iris", "--registry", logged.registry, *args))


def replay(logged: Logged, *args: str) -> dict[str, Any]:
    result = run(
        "logs", "replay", "--model", "iris", "--json", "--registry", logged.registry, *args
    )
    return json.loads(ok(result))


# -- tail ------------------------------------------------------------------------------------


def test_tail_prints_the_newest_records(logged: Logged) -> None:
    records = stored(logged, model="iris")
    lines = ok(run("logs", "tail", "--model", "iris", "--registry", logged.registry)).splitlines()
    assert len(lines) == 20
    assert [line.split()[2] for line in lines] == [r["request_id"] for r in records[-20:]]
    redacted = lines[-1]
    assert "iris:1" in redacted
    assert "rest" in redacted
    assert 'input-0="[redacted]"' in redacted
    assert "predict=[0]" in redacted
    failed = lines[-REDACTED - 1]
    assert " 400 " in failed
    assert "error: input-0: wrong shape" in failed


def test_tail_json_covers_every_model(logged: Logged) -> None:
    out = ok(run("logs", "tail", "-n", "3", "--json", "--registry", logged.registry))
    got = [json.loads(line) for line in out.splitlines()]
    assert [r["model"] for r in got] == ["iris", "iris", "other"]
    assert got[:2] == stored(logged)[-2:]
    assert got[2]["inputs"] == {"x": [[1.0, 1.0]]}
    # More than the newest window of ids holds: the whole log of the model, oldest first.
    out = ok(
        run(
            "logs", "tail", "-n", "1000", "--model", "iris", "--json", "--registry", logged.registry
        )
    )
    assert [json.loads(line) for line in out.splitlines()] == stored(logged)


def test_tail_follow_prints_records_as_they_arrive(tmp_path: Path) -> None:
    log = tmp_path / "follow.sqlite"
    x = np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)
    with open_store(str(log)) as store:
        store.write([record(1, NOW, {"input-0": x}, {"predict": np.array([0])})])
        env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelport", "logs", "tail", "--follow", "-n", "1",
             "--json", "--inference-log", str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(s) for s in proc.stdout], daemon=True)
        reader.start()
        try:
            first = json.loads(lines.get(timeout=60))
            assert first["request_id"] == "req-0001"
            store.write([record(2, NOW + 1, {"input-0": x}, {"predict": np.array([1])})])
            second = json.loads(lines.get(timeout=60))
            assert (second["request_id"], second["outputs"]) == ("req-0002", {"predict": [1]})
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=30)
    assert lines.empty()


# -- export ----------------------------------------------------------------------------------


def test_export_jsonl_round_trips(logged: Logged) -> None:
    got = [json.loads(line) for line in export(logged).splitlines()]
    assert len(got) == IRIS_RECORDS
    assert got == stored(logged)


def test_export_csv_round_trips(logged: Logged, tmp_path: Path) -> None:
    out = tmp_path / "log.csv"
    result = run(
        "logs", "export", "--model", "iris", "--format", "csv", "-o", str(out),
        "--registry", logged.registry,
    )  # fmt: skip
    assert f"exported {IRIS_RECORDS} record(s) of iris" in ok(result) + result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    parsed = [
        row
        | {
            "id": int(row["id"]),
            "at": float(row["at"]),
            "version": int(row["version"]) if row["version"] else None,
            "latency_ms": float(row["latency_ms"]),
            "inputs": json.loads(row["inputs"]) if row["inputs"] else None,
            "outputs": json.loads(row["outputs"]) if row["outputs"] else None,
        }
        for row in rows
    ]
    assert parsed == stored(logged)
    assert any(p["outputs"] is None for p in parsed)  # the failed records: an empty cell
    # Without --output the same CSV goes to standard output.
    assert export(logged, "--format", "csv") == out.read_text(encoding="utf-8")


def test_export_parquet_round_trips(logged: Logged, tmp_path: Path) -> None:
    out = tmp_path / "log.parquet"
    ok(run(
        "logs", "export", "--model", "iris", "--format", "parquet", "--output", str(out),
        "--registry", logged.registry,
    ))  # fmt: skip
    table = pq.read_table(out)
    assert str(table.schema.field("at").type) == "double"
    rows = [
        row
        | {
            name: None if row[name] is None else json.loads(row[name])
            for name in ("inputs", "outputs")
        }
        for row in table.to_pylist()
    ]
    assert rows == stored(logged)


def test_export_parquet_needs_an_output_file(logged: Logged) -> None:
    result = run(
        "logs", "export", "--model", "iris", "--format", "parquet", "--registry", logged.registry
    )
    assert result.exit_code == 2, result.output
    assert "--output" in result.stderr


def test_export_since_and_until(logged: Logged) -> None:
    everything = stored(logged)
    recent = [r for r in everything if r["at"] >= NOW - 3600]
    assert 0 < len(recent) < len(everything)

    def ids(*args: str) -> list[int]:
        return [json.loads(line)["id"] for line in export(logged, *args).splitlines()]

    assert ids("--since", "1h") == [r["id"] for r in recent]
    two_hours_ago = datetime.fromtimestamp(NOW - 7200, UTC)
    naive = two_hours_ago.replace(tzinfo=None).isoformat()
    assert ids("--since", naive) == [r["id"] for r in recent]  # no zone: UTC
    zoned = two_hours_ago.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert zoned.endswith("+02:00")
    assert ids("--since", zoned) == [r["id"] for r in recent]
    old = [r["id"] for r in everything if r["at"] < NOW - 3600]
    assert len(old) == BATCHES
    assert ids("--until", "2h") == old
    assert ids("--since", "1d", "--until", naive) == old


@pytest.mark.parametrize("since", ["yesterday", "15 minutes", "2026-13-01", "-2h"])
def test_a_bad_since_says_what_it_takes(logged: Logged, since: str) -> None:
    result = run(
        "logs", "export", "--model", "iris", "--since", since, "--registry", logged.registry
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--since'" in result.stderr
    assert "ISO 8601" in result.stderr
    assert "15m, 2h, 7d" in result.stderr
    assert "Traceback" not in result.output


def test_a_registry_without_a_log_is_reported(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    fails(run("logs", "tail", "--registry", str(empty)), "no inference log at")
    assert not empty.exists()  # reading never creates a log


# -- replay ----------------------------------------------------------------------------------


def test_replay_on_the_logged_version_agrees_everywhere(logged: Logged) -> None:
    got = replay(logged, "--against", "1")
    assert got["considered"] == IRIS_RECORDS
    assert got["replayed"] == REPLAYABLE
    assert got["skipped"] == {"inputs redacted": REDACTED, "not answered (error status)": ERRORS}
    assert (got["equal_records"], got["agreement"]) == (REPLAYABLE, 1.0)
    assert got["logged_versions"] == {"1": REPLAYABLE}
    predict, proba = got["outputs"]["predict"], got["outputs"]["predict_proba"]
    assert predict == {
        "datatype": "INT64",
        "records": REPLAYABLE,
        "equal_records": REPLAYABLE,
        "max_abs_diff": 0.0,
        "labels": SINGLE_ROWS + 30 * BATCHES + GRPC,
        "label_agreement": 1.0,
    }
    assert proba["records"] == BATCHES + GRPC
    # Not bit for bit: the batch records were answered as part of one 150-row call and are
    # replayed as 30 rows, which rounds float32 sums differently; the tolerance absorbs it.
    assert 0.0 <= proba["max_abs_diff"] <= 1e-6
    assert proba["label_agreement"] is None


def test_replay_on_a_different_version_counts_the_disagreements(logged: Logged) -> None:
    # Version 2 retrained here the same way (C=0.01): the expectations do not come from modelport.
    x, y = load_iris(return_X_y=True)
    other = LogisticRegression(C=0.01, max_iter=1000).fit(x.astype(np.float32), y)
    labels = other.predict(logged.x)
    same = labels == logged.v1_labels
    assert 0 < same.sum() < len(same)  # the versions really differ, and not everywhere

    got = replay(logged, "--against", "2")
    assert got["replayed"] == REPLAYABLE
    # Single-row records only asked for `predict`: they agree where the label does. Records
    # with predict_proba cannot agree (its probabilities move with C).
    assert got["equal_records"] == int(same.sum())
    assert got["agreement"] == round(same.sum() / REPLAYABLE, 6)
    predict = got["outputs"]["predict"]
    label_rows = np.concatenate([same, same, same[:GRPC]])  # single rows, batches, gRPC
    assert predict["labels"] == len(label_rows)
    assert predict["label_agreement"] == round(label_rows.mean(), 6)
    assert predict["max_abs_diff"] == np.abs(labels - logged.v1_labels).max()
    proba = got["outputs"]["predict_proba"]
    assert proba["equal_records"] == 0
    expected = np.abs(other.predict_proba(logged.x) - logged.v1_proba).max()
    assert proba["max_abs_diff"] == pytest.approx(expected, abs=1e-5)
    # With a tolerance wider than any difference every record agrees.
    assert replay(logged, "--against", "2", "--tolerance", "2")["agreement"] == 1.0


def test_replay_since_and_limit_take_the_newest_records(logged: Logged) -> None:
    recent = replay(logged, "--against", "1", "--since", "1h")
    assert recent["considered"] == IRIS_RECORDS - BATCHES
    assert recent["outputs"]["predict_proba"]["records"] == GRPC
    newest = replay(logged, "--against", "1", "--limit", "10")
    assert newest["considered"] == 10
    assert newest["skipped"] == {"inputs redacted": REDACTED, "not answered (error status)": ERRORS}
    assert newest["replayed"] == 3  # the last single row and the gRPC records


def test_replay_prints_a_table(logged: Logged) -> None:
    out = ok(
        run("logs", "replay", "--model", "iris", "--against", "2", "--registry", logged.registry)
    )
    got = replay(logged, "--against", "2")
    assert "logged answers replayed on version 2" in out
    cells = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.count("│") >= 3
    }
    assert cells["skipped: inputs redacted"] == [str(REDACTED)]
    assert cells["skipped: not answered (error status)"] == [str(ERRORS)]
    equal = got["equal_records"]
    assert cells["all outputs agree"] == [f"{100 * equal / REPLAYABLE:.2f}% ({equal}/{REPLAYABLE})"]
    predict = got["outputs"]["predict"]
    n = predict["labels"]
    k = round(predict["label_agreement"] * n)
    assert cells["predict"][0] == "INT64"
    assert cells["predict"][-1] == f"{100 * k / n:.2f}% ({k}/{n})"
    assert cells["predict_proba"][-1] == "-"  # probabilities are no labels


def test_replay_of_an_unknown_version_is_reported(logged: Logged) -> None:
    fails(
        run("logs", "replay", "--model", "iris", "--against", "9", "--registry", logged.registry),
        "9",
    )


def test_replay_compares_text_outputs_exactly(logged: Logged, tmp_path: Path) -> None:
    log = tmp_path / "greetings.sqlite"
    texts = [["bonjour", "hello"], ["hola"], ["guten morgen", "no greeting", "merci beaucoup"]]
    model = modelport.load("greeting", registry=logged.registry)
    try:
        answers = [model.predict(np.array(t, dtype=object)) for t in texts]
    finally:
        model.close()
    assert answers[0]["language"].tolist() == [b"fr", b"en"]
    rows = [
        record(n, NOW, {"text": np.array(t, dtype=object)}, a, model="greeting")
        for n, (t, a) in enumerate(zip(texts, answers, strict=True))
    ]
    # An answer the version would not give: one label of three differs.
    rows.append(
        record(9, NOW, {"text": np.array(texts[2], dtype=object)}, {"language": ["de", "xx", "fr"]},
               model="greeting")
    )  # fmt: skip
    with open_store(str(log)) as store:
        store.write(rows)
    got = json.loads(ok(run(
        "logs", "replay", "--model", "greeting", "--against", "1", "--json",
        "--registry", logged.registry, "--inference-log", str(log),
    )))  # fmt: skip
    assert (got["replayed"], got["equal_records"]) == (4, 3)
    assert got["outputs"]["language"] == {
        "datatype": "BYTES",
        "records": 4,
        "equal_records": 3,
        "max_abs_diff": None,
        "labels": 9,
        "label_agreement": round(8 / 9, 6),
    }


@pytest.fixture
def postgres_log(database_url: str, logged: Logged) -> str:
    """The iris records copied into a PostgreSQL inference log."""
    with open_store(database_url) as store:
        store.write(
            [
                {k: r[k] for k in COLUMNS}
                | {k: None if r[k] is None else json.dumps(r[k]) for k in ("inputs", "outputs")}
                for r in stored(logged)
            ]
        )
    return database_url


def test_export_and_replay_from_postgresql(postgres_log: str, logged: Logged) -> None:
    args = ("--registry", logged.registry, "--inference-log", postgres_log)
    got = [
        json.loads(line)
        for line in ok(run("logs", "export", "--model", "iris", *args)).splitlines()
    ]
    assert [{k: v for k, v in r.items() if k != "id"} for r in got] == [
        {k: v for k, v in r.items() if k != "id"} for r in stored(logged)
    ]
    agreement = json.loads(
        ok(run("logs", "replay", "--model", "iris", "--against", "1", "--json", *args))
    )
    assert (agreement["replayed"], agreement["agreement"]) == (REPLAYABLE, 1.0)
