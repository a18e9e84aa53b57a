"""`modelport batch` as a user runs it: a real subprocess on the demo iris model.

The resume test kills the job with SIGKILL once its manifest shows a committed part (a real
sign of progress, polled with a generous deadline), resumes it, and compares the output with
an uninterrupted run of the same command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import EVENTUALLY_SECONDS

pytestmark = pytest.mark.integration

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def registry(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo registry (jobs write history events into it)."""
    copy = tmp_path_factory.mktemp("batch-cli") / "registry"
    shutil.copytree(demo_registry, copy)
    return copy


@pytest.fixture(scope="module")
def iris() -> pa.Table:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    columns: dict[str, Any] = {name: x[:, j] for j, name in enumerate(FEATURES)}
    columns["species"] = y
    return pa.table(columns)


def command(registry: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelport", *map(str, args), "--registry", str(registry)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}


def modelport(registry: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(registry, *args), capture_output=True, text=True, env=env(), timeout=300
    )


def committed(out: Path) -> pa.Table:
    manifest = json.loads((out / "_manifest.json").read_text())
    return pa.concat_tables(pq.read_table(out / p["part"]["file"]) for p in manifest["parts"])


def test_score_a_file_and_find_the_job_in_the_history(
    registry: Path, iris: pa.Table, tmp_path: Path
) -> None:
    source = tmp_path / "iris.parquet"
    pq.write_table(iris, source)
    out = tmp_path / "scores"
    done = modelport(registry, "batch", "iris", source, "--output", out, "--passthrough", "species")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert f"job {summary['job_id']}: 150 rows scored, 0 refused, 1/1 parts" in done.stdout
    # Not a terminal: progress is JSON lines on stderr.
    progress = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert progress
    assert progress[-1]["rows"] == 150
    table = pq.read_table(out / "part-00000.parquet")
    assert table.column("_row").to_pylist() == list(range(150))
    # The demo model is accurate on its training rows: the scores are real predictions.
    predicted, species = table["predict"].to_pylist(), iris["species"].to_pylist()
    agree = sum(a == b for a, b in zip(predicted, species, strict=True))
    assert agree > 140
    history = modelport(registry, "models", "history", "iris", "--json")
    assert history.returncode == 0, history.stderr
    event = json.loads(history.stdout)[-1]
    assert event["kind"] == "batch"
    assert event["detail"]["job_id"] == summary["job_id"]
    assert event["detail"]["rows_out"] == 150
    assert event["detail"]["digest"] == summary["model"]["digest"]
    shown = modelport(registry, "models", "history", "iris")
    assert shown.returncode == 0, shown.stderr
    assert "batch" in shown.stdout


def test_an_existing_output_is_refused_without_resume(
    registry: Path, iris: pa.Table, tmp_path: Path
) -> None:
    source = tmp_path / "iris.parquet"
    pq.write_table(iris, source)
    out = tmp_path / "scores"
    assert modelport(registry, "batch", "iris", source, "-o", out, "-q").returncode == 0
    again = modelport(registry, "batch", "iris", source, "-o", out, "-q")
    assert again.returncode == 1
    assert "pass --resume" in again.stderr
    resumed = modelport(registry, "batch", "iris", source, "-o", out, "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr  # nothing left to do


def test_crossing_max_errors_exits_1_with_a_summary(
    registry: Path, iris: pa.Table, tmp_path: Path
) -> None:
    frame = iris.to_pandas()
    frame["sepal_length"] = frame["sepal_length"].astype(str)
    frame.loc[[4, 9], "sepal_length"] = "oops"
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    failed = modelport(registry, "batch", "iris", source, "-o", tmp_path / "a", "--max-errors", "1")
    assert failed.returncode == 1
    assert "crosses --max-errors 1" in failed.stderr
    passed = modelport(registry, "batch", "iris", source, "-o", tmp_path / "b", "--max-errors", "2")
    assert passed.returncode == 0, passed.stderr
    rows = (tmp_path / "b" / "_errors" / "part-00000.jsonl").read_text().splitlines()
    assert [json.loads(r)["_row"] for r in rows] == [4, 9]


def test_missing_columns_are_refused_before_any_work(
    registry: Path, iris: pa.Table, tmp_path: Path
) -> None:
    source = tmp_path / "iris.parquet"
    pq.write_table(iris.drop_columns(["petal_width"]), source)
    refused = modelport(registry, "batch", "iris", source, "-o", tmp_path / "out")
    assert refused.returncode == 1
    assert "missing column(s) 'petal_width'" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_help_explains_the_command(registry: Path) -> None:
    shown = modelport(registry, "batch", "--help")
    assert shown.returncode == 0
    for words in ("MODEL[:VERSION|ALIAS]", "--features", "--resume", "--max-errors", "_job_id"):
        assert words in shown.stdout, words


def test_kill_9_then_resume_gives_the_output_of_an_uninterrupted_run(
    registry: Path, iris: pa.Table, tmp_path: Path
) -> None:
    # 15,000 rows in ten row groups over two files, scored ten rows at a time: seconds of
    # work after the first part commits, so the kill lands in the middle.
    rows = pa.concat_tables([iris] * 100)
    inputs = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    pq.write_table(rows.slice(0, 7500), inputs[0], row_group_size=1500)
    pq.write_table(rows.slice(7500), inputs[1], row_group_size=1500)
    job = ["batch", "iris", *inputs, "--batch-size", "10", "--passthrough", "species", "-q"]
    whole = modelport(registry, *job, "--output", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "out"
    proc = subprocess.Popen(
        command(registry, *job, "--output", out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(),
    )
    try:
        deadline = time.monotonic() + EVENTUALLY_SECONDS * 4
        while not _parts(out):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no part was committed in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    first = json.loads((out / "_manifest.json").read_text())
    assert 0 < len(first["parts"]) < first["partitions"], "the kill did not land mid-job"

    resumed = modelport(registry, *job, "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["job_id"] == first["job_id"]
    assert len(manifest["parts"]) == manifest["partitions"] == 10
    mine, theirs = committed(out), committed(tmp_path / "whole")
    assert mine.num_rows == theirs.num_rows == 15000
    # The same rows, in the same order, with the same values; the job id is the first run's.
    assert mine.drop_columns(["_job_id"]).equals(theirs.drop_columns(["_job_id"]))
    assert set(mine.column("_job_id").to_pylist()) == {first["job_id"]}
    assert not list(out.rglob(".tmp-*"))
    summary = json.loads((out / "_summary.json").read_text())
    assert (summary["rows_in"], summary["rows_out"], summary["error_rows"]) == (15000, 15000, 0)


def _parts(out: Path) -> int:
    try:
        return len(json.loads((out / "_manifest.json").read_text())["parts"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
