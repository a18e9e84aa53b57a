"""Batch jobs on Dask: real LocalClusters of worker processes against the in-process run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelport import batch
from modelport.errors import InternalError, InvalidInput
from modelport.intake.push import push_artifact
from modelport.jobs.dask_runner import DaskMapper, dask_mapper
from modelport.jobs.job_manifest import MANIFEST, SUMMARY
from modelport.jobs.scoring import PartitionTask, PartResult, score_partition
from modelport.registry.store import Registry

from ...conftest import CREATED_BY, write_iris_c001

HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(
    not HAVE_DASK, reason="Dask distributed is not installed: pip install 'modelport[dask]'"
)
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A registry with an iris model, three Parquet inputs (four partitions), and its output
    from an in-process run."""
    root = tmp_path_factory.mktemp("dask-job")
    registry = str(root / "registry")
    with Registry.open(registry) as store:
        push_artifact(store, write_iris_c001(root), name="iris", created_by=CREATED_BY)
    inputs = root / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(7)
    for i, (rows, group) in enumerate([(900, 500), (300, 300), (700, 700)]):
        values = rng.uniform(0.1, 7.9, size=(rows, 4)).astype(np.float32)
        table = pa.table({name: values[:, k] for k, name in enumerate(FEATURES)})
        pq.write_table(table, inputs / f"rows-{i}.parquet", row_group_size=group)
    reference = root / "in-process"
    summary = batch.run("iris", [str(inputs)], str(reference), **_options(registry))
    assert summary.ok, summary.data
    assert summary.data["partitions"] == 4
    return {"registry": registry, "inputs": str(inputs), "reference": reference, "root": root}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A running two-worker cluster, reached by its tcp:// address like a shared one."""
    if not HAVE_DASK:
        pytest.skip("Dask distributed is not installed: pip install 'modelport[dask]'")
    import distributed

    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as running:
        yield running


def _options(registry: str, **more: Any) -> dict[str, Any]:
    return {"registry": registry, "features": FEATURES, "batch_size": 256, **more}


def _files(directory: Path) -> dict[str, bytes]:
    """Every file of an output directory but its summary (which holds timings), by name."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != SUMMARY
    }


def _seed(job: dict[str, Any], name: str) -> Path:
    """An output directory holding the in-process job's manifest with no part committed.

    Resuming it scores every partition under the reference run's job id, so that the output
    must be byte for byte the reference's (the job id is in every row).
    """
    out = Path(job["root"]) / name
    out.mkdir()
    manifest = json.loads((job["reference"] / MANIFEST).read_text())
    manifest["parts"] = []
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def _committed(out: Path) -> set[int]:
    return {p["index"] for p in json.loads((out / MANIFEST).read_text())["parts"]}


@needs_dask
def test_a_local_cluster_writes_the_in_process_bytes_and_resumes_a_failed_run(
    job: dict[str, Any], cluster: Any
) -> None:
    out = _seed(job, "failed-then-resumed")

    def fails_on_part_2(task: PartitionTask) -> PartResult:
        if task.index == 2:
            raise RuntimeError("boom on part 2")
        return score_partition(task)

    failing = DaskMapper(address=cluster.scheduler_address, score=fails_on_part_2)
    with pytest.raises(InternalError, match=r"part 2 .*RuntimeError\('boom on part 2'\).*--resume"):
        batch.run(
            "iris",
            [job["inputs"]],
            str(out),
            **_options(job["registry"]),
            mapper=failing,
            resume=True,
        )
    committed = _committed(out)
    assert committed, "the parts that finished before part 2 failed are committed"
    assert 2 not in committed
    # The stopped job still says what it did: its summary, and its event in the history.
    failed = json.loads((out / "_summary.json").read_text())
    assert (failed["status"], failed["committed_parts"]) == ("failed", len(committed))
    assert "boom on part 2" in failed["reason"]
    assert "--resume" in failed["reason"]
    with Registry.open(job["registry"]) as store:
        event = store.history("iris")[-1]
    assert (event.kind, event.detail and event.detail["status"]) == ("batch", "failed")
    assert event.reason == failed["reason"]

    summary = batch.run(
        "iris", [job["inputs"]], str(out), **_options(job["registry"]), dask="local:2", resume=True
    )

    assert summary.ok
    assert summary.data["this_run"]["parts"] == 4 - len(committed)
    assert summary.data["rows_out"] == 1900
    assert _files(out) == _files(job["reference"])


@needs_dask
def test_a_new_job_on_a_running_cluster_scores_the_same_rows(
    job: dict[str, Any], cluster: Any
) -> None:
    out = Path(job["root"]) / "on-a-cluster"

    summary = batch.run(
        "iris",
        [job["inputs"]],
        str(out),
        **_options(job["registry"]),
        dask=cluster.scheduler_address,
    )

    assert summary.ok
    assert summary.data["committed_parts"] == 4
    reference = job["reference"]
    assert sorted(_files(out)) == sorted(_files(reference))
    for part in sorted(reference.glob("part-*.parquet")):
        # The same rows and values; only the job id (a new job) differs.
        ours, theirs = pq.read_table(out / part.name), pq.read_table(part)
        assert ours.column("_job_id").unique().to_pylist() == [summary.job_id]
        assert ours.drop(["_job_id"]).equals(theirs.drop(["_job_id"]))


@needs_dask
def test_an_error_a_worker_raises_reaches_the_caller_unchanged(
    job: dict[str, Any], cluster: Any
) -> None:
    def refuses(task: PartitionTask) -> PartResult:
        raise InvalidInput(f"input {task.partition.path!r} refused")

    mapper = DaskMapper(address=cluster.scheduler_address, score=refuses)
    out = Path(job["root"]) / "refused"
    with pytest.raises(InvalidInput, match=r"input '.*rows-0\.parquet' refused"):
        batch.run("iris", [job["inputs"]], str(out), **_options(job["registry"]), mapper=mapper)
    assert _committed(out) == set()


def test_without_the_extra_dask_is_refused_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as when not installed
    with pytest.raises(InvalidInput, match=r"install modelport\[dask\]"):
        dask_mapper("local:2")


@pytest.mark.parametrize("address", ["local", "local:0", "local:two", "8786", "http://h:1"])
def test_an_address_other_than_local_n_or_tcp_is_refused(address: str) -> None:
    with pytest.raises(InvalidInput, match="--dask"):
        dask_mapper(address)


def test_a_shared_cluster_needs_absolute_paths(job: dict[str, Any]) -> None:
    here = os.getcwd()
    os.chdir(job["root"])
    try:
        mapper = DaskMapper(address="tcp://127.0.0.1:1")
        with pytest.raises(InvalidInput, match=r"give the registry, the output, input .* absolute"):
            batch.run("iris", ["inputs"], "relative-out", **_options("registry"), mapper=mapper)
    finally:
        os.chdir(here)
    shutil.rmtree(Path(job["root"]) / "relative-out", ignore_errors=True)


@needs_dask
def test_a_worker_that_dies_is_a_clear_error_and_keeps_what_was_committed(
    job: dict[str, Any], cluster: Any
) -> None:
    out = Path(job["root"]) / "worker-died"

    def dies_on_part_1(task: PartitionTask) -> PartResult:
        if task.index == 1:
            # Once part 0 is committed (its result lives on a worker until the driver has it).
            manifest, deadline = Path(task.spec.output) / MANIFEST, time.monotonic() + 60
            while time.monotonic() < deadline and '"index": 0' not in manifest.read_text():
                time.sleep(0.01)
            os._exit(3)
        return score_partition(task)

    # By default a task that killed a worker is retried on others three times; here, never.
    # (Last in the module: the cluster's nanny restarts the worker, at some cost.)
    mapper = DaskMapper(address=cluster.scheduler_address, score=dies_on_part_1)
    cluster.scheduler.allowed_failures = 0
    try:
        with pytest.raises(
            InternalError, match=r"Dask workers died while scoring part \d .*--resume"
        ):
            batch.run("iris", [job["inputs"]], str(out), **_options(job["registry"]), mapper=mapper)
    finally:
        cluster.scheduler.allowed_failures = 3
    assert 0 in _committed(out)
    assert 1 not in _committed(out)


def test_the_command_refuses_a_bad_dask_address_before_any_work(job: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from modelport.cli import main

    out = Path(job["root"]) / "bad-address"
    args = ["batch", "iris", job["inputs"], "-o", str(out), "--registry", job["registry"]]
    result = CliRunner().invoke(
        main, [*args, "--features", ",".join(FEATURES), "--dask", "lokal:2"]
    )

    assert result.exit_code == 1, result.output
    assert "error: --dask takes local:N" in result.stderr
    assert not out.exists()
