"""Batch scoring, measured: `modelport batch` against a raw onnxruntime loop and `mlserver infer`.

Usage: python benchmarks/batch.py [--only raw|mlserver|modelport|dask|memory] (with the project
venv). Prints a table and writes benchmarks/work/batch.json; everything it makes (input files,
a fresh registry, outputs, logs) is scratch under benchmarks/work/batch/. Until this modelport
has a `batch` command (`modelport batch --help` exits 0), the modelport, memory and dask groups
are skipped with a note, and their targets say SKIP.

The measurements (issue 14's speed targets, side by side; the short ones are the median of
REPEATS runs; batch_report.py has the verdicts, batch_measure.py how time and memory are
taken):

- raw: the baseline. A child pinned to SERVER_CPU reads the 2M-row Parquet file with pyarrow
  in record batches of RAW_BATCH_ROWS, runs one onnxruntime session (one thread, the options
  of modelport's ONNX runtime) per batch on the compiled ONNX artifact the registry holds for
  the demo's `iris`, and writes class and probabilities to Parquet.
- modelport: `modelport batch iris FILE --output DIR --features ... --quiet` pinned to
  SERVER_CPU, on the same 2M-row file (against the raw loop) and on the 100k-row file
  (against `mlserver infer`). The demo iris is compiled, so the command runs the same ONNX.
- memory: the same command on 500k and 5M rows, for their peak RSS.
- dask: `--dask local:1` against `--dask local:2`, unpinned (a LocalCluster of 2 needs both
  cores), on the 200-tree forest of models.py ("heavy", pushed as joblib with reference data,
  not compiled) over 1M rows in 4 files of 4 row groups; the outputs are compared
  (same_output).
- mlserver: MLServer 1.7.1 serving the same iris weights, driven by its `mlserver infer`
  (batch_mlserver.py says what that tool does, and what it was seen to do).

Input files (batch_data.py) are generated once, seeded, and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import batch_data
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from batch_data import HEAVY_COLUMNS, IRIS_FEATURES, IRIS_ROWS
from batch_measure import (
    BENCH,
    DATA,
    LOGS,
    MODELPORT_BIN,
    OUT,
    REGISTRY,
    TIME,
    WORK,
    figures,
    fresh,
    measured,
    modelport_env,
)
from batch_mlserver import measure_mlserver
from batch_report import table, targets
from servers import SERVER_CPU

RESULTS = WORK / "batch.json"
RAW_BATCH_ROWS = 65_536
"""Rows per record batch of the raw loop (pyarrow's own default for iter_batches)."""
GROUPS = ("raw", "mlserver", "modelport", "dask", "memory")
HEAVY_SIZE = "1M"
REPEATS = 3
"""Runs of each short measurement (the raw loop, the in-process command): the median counts."""
HEAVY_ROWS = batch_data.HEAVY_FILES * batch_data.HEAVY_ROWS_PER_FILE


class Batch:
    """One benchmark run: the registry it fills, what this modelport can do, and its notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        done = subprocess.run(
            [str(MODELPORT_BIN), "batch", "--help"], capture_output=True, text=True, check=False
        )
        self.batch_help = done.stdout if done.returncode == 0 else None
        if self.batch_help is None:
            self.note(
                f"`modelport batch --help` exits {done.returncode}: this modelport has no batch "
                "command yet, so the modelport, memory and dask measurements are skipped"
            )
        self.onnx = self.iris_artifact = Path()

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def can(self, flag: str) -> bool:
        """Whether `modelport batch` exists and its help names `flag` (a note if not)."""
        if self.batch_help is None:
            return False
        if flag not in self.batch_help:
            self.note(f"`modelport batch --help` has no {flag}: what needs it is skipped")
            return False
        return True

    def prepare(self, groups: set[str]) -> None:
        """A fresh registry with the demo models, plus the heavy forest when Dask runs."""
        from modelport.registry.store import Registry

        shutil.rmtree(REGISTRY, ignore_errors=True)
        print("building the demo registry ...", flush=True)
        run = measured([str(MODELPORT_BIN), "demo", "--registry", str(REGISTRY)], "demo")
        if run.error:
            sys.exit(f"batch benchmark: `modelport demo` failed ({run.error}); see {LOGS}")
        with Registry.open(REGISTRY) as registry:
            iris = registry.resolve("iris")
            profile = iris.reference_profile or {}
            features = tuple(f["name"] for f in profile.get("features", []))
            if features != IRIS_FEATURES:
                sys.exit(
                    f"batch benchmark: the demo iris records the features {features}, not "
                    f"{IRIS_FEATURES}: update batch_data.IRIS_FEATURES"
                )
            self.onnx = registry.compiled_path(iris)
            self.iris_artifact = registry.artifact_path(iris)
        if "dask" in groups and self.can("--dask"):
            self.push_heavy()

    def push_heavy(self) -> None:
        """Push models.py's 200-tree forest as `heavy` (not compiled), with reference data."""
        import models

        files = models.build(WORK / "models", ["heavy"])
        argv = [str(MODELPORT_BIN), "models", "push", str(files["heavy"]), "--name", "heavy"]
        argv += ["--trust-pickle", "--registry", str(REGISTRY)]
        argv += ["--reference-data", str(batch_data.heavy_reference(DATA))]
        run = measured(argv, "push-heavy", modelport_env())
        if run.error:
            sys.exit(f"batch benchmark: pushing the heavy forest failed ({run.error})")


# -- the raw loop ----------------------------------------------------------------------------


def raw_loop(onnx: Path, src: Path, dst: Path) -> dict[str, Any]:
    """Score src into dst: pyarrow record batches, one onnxruntime run each, Parquet out."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx), sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    started = time.perf_counter()
    rows = 0
    writer: pq.ParquetWriter | None = None
    batches = pq.ParquetFile(src).iter_batches(RAW_BATCH_ROWS, columns=list(IRIS_FEATURES))
    for batch in batches:
        x = np.column_stack([column.to_numpy() for column in batch.columns])
        label, proba = session.run(outputs, {name: x})
        columns = {"predict": label}
        columns |= {f"predict_proba_{k}": proba[:, k] for k in range(proba.shape[1])}
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(dst, table.schema)
        writer.write_table(table)
        rows += len(x)
    if writer is not None:
        writer.close()
    return {"rows": rows, "loop_seconds": time.perf_counter() - started}


def median_run(measure: Callable[[], dict[str, Any]], times: int = REPEATS) -> dict[str, Any]:
    """The run of median wall time among `times` runs of `measure`, with every run's seconds
    in `runs_s` (a failed run is returned at once: its error is the figure)."""
    runs = []
    for _ in range(times):
        result = measure()
        if result["error"]:
            return result
        runs.append(result)
    runs.sort(key=lambda r: r["seconds"])
    chosen = runs[len(runs) // 2]
    chosen["runs_s"] = [round(r["seconds"], 3) for r in runs]
    return chosen


def measure_raw(bench: Batch, size: str = "2M") -> dict[str, Any]:
    """The raw loop on the 2M-row file (median of REPEATS runs), pinned to SERVER_CPU."""
    return median_run(lambda: _measure_raw(bench, size))


def _measure_raw(bench: Batch, size: str) -> dict[str, Any]:
    src = batch_data.iris_file(DATA, size)
    dst = OUT / f"raw-{size}.parquet"
    fresh(dst)
    argv = ["taskset", "-c", SERVER_CPU, sys.executable, str(Path(__file__).resolve())]
    argv += ["--raw-child", str(bench.onnx), str(src), str(dst)]
    print(f"raw loop: {size} rows ...", flush=True)
    run = measured(argv, f"raw-{size}")
    result = figures("raw loop (pyarrow + onnxruntime)", IRIS_ROWS[size], size, run)
    if not run.error:
        child = json.loads(run.stdout.read_text().strip().splitlines()[-1])
        result["rows_out"] = pq.ParquetFile(dst).metadata.num_rows
        result["loop_rows_per_s"] = child["rows"] / child["loop_seconds"]
        result["batch_rows"] = RAW_BATCH_ROWS
    return result


# -- modelport batch -------------------------------------------------------------------------


def modelport_batch(
    label: str, size: str, model: str, inputs: Path, features: tuple[str, ...], extra: list[str]
) -> dict[str, Any]:
    """One `modelport batch` run into a new output directory; pinned unless Dask runs."""
    out = fresh(OUT / "-".join([model, size, *(e.strip("-").replace(":", "") for e in extra)]))
    argv = [str(MODELPORT_BIN), "batch", model, str(inputs), "--output", str(out)]
    argv += ["--features", ",".join(features), "--quiet", "--registry", str(REGISTRY), *extra]
    # A LocalCluster of 2 needs both cores; the in-process run gets one, like the raw loop.
    argv = argv if "--dask" in extra else ["taskset", "-c", SERVER_CPU, *argv]
    print(f"{label}: {size} rows ...", flush=True)
    run = measured(argv, out.name, modelport_env())
    rows = HEAVY_ROWS if model == "heavy" else IRIS_ROWS[size]
    result = figures(label, rows, size, run)
    if "--dask" in extra:
        # GNU time sees the client process only, not the sum of the cluster's workers.
        result["peak_rss_mb"] = None
    result["output"] = str(out)
    if not run.error:
        result["rows_out"] = sum(pq.ParquetFile(p).metadata.num_rows for p in parts(out))
        summary = out / "_summary.json"
        result["summary"] = json.loads(summary.read_text()) if summary.exists() else None
        result["summary_rows_per_s"] = summary_rate(result["summary"])
    return result


def summary_rate(summary: Any) -> float | None:
    """The job's own rows/s from its `_summary.json` (start-up excluded), if it names one."""
    if not isinstance(summary, dict):
        return None
    for key, value in summary.items():
        if key.replace("/", "_per_").startswith("rows_per_s") and isinstance(value, int | float):
            return float(value)
    return None


def parts(out: Path) -> list[Path]:
    """The committed Parquet part files under out, in name order.

    Names starting with `_` or `.` (manifest, summary, temporary files) and error files are
    not parts; adjust here if the command's output layout (docs/batch.md) says otherwise.
    """
    found = []
    for path in out.rglob("*.parquet"):
        rel = path.relative_to(out).parts
        if any(p.startswith(("_", ".")) for p in rel) or "error" in path.name:
            continue
        found.append(path)
    return sorted(found)


def measure_iris(bench: Batch, label: str, sizes: tuple[str, ...]) -> list[dict[str, Any]]:
    """The in-process command with the compiled demo iris: per input size, the median of
    REPEATS runs."""
    if not bench.can("--features"):
        return []
    return [
        median_run(
            lambda size=size: modelport_batch(
                label, size, "iris", batch_data.iris_file(DATA, size), IRIS_FEATURES, []
            )
        )
        for size in sizes
    ]


def measure_dask(bench: Batch) -> dict[str, Any]:
    """`--dask local:1` against `--dask local:2` on the heavy forest; outputs compared."""
    if not (bench.can("--dask") and bench.can("--features")):
        return {}
    inputs = batch_data.heavy_dir(DATA)
    runs = [
        modelport_batch(
            f"dask local:{n} (heavy forest)",
            HEAVY_SIZE,
            "heavy",
            inputs,
            HEAVY_COLUMNS,
            ["--dask", f"local:{n}"],
        )
        for n in (1, 2)
    ]
    result: dict[str, Any] = {"runs": runs}
    if not any(r["error"] for r in runs):
        result["same_output"] = same_output(Path(runs[0]["output"]), Path(runs[1]["output"]))
    return result


def same_output(a: Path, b: Path) -> dict[str, Any]:
    """Whether two output directories hold the same rows, in the same parts and order.

    Columns constant within each run but different between them (a job id among the
    provenance columns) are set aside and named; every other column must be equal.
    """
    parts_a, parts_b = parts(a), parts(b)
    rows_a = [pq.ParquetFile(p).metadata.num_rows for p in parts_a]
    rows_b = [pq.ParquetFile(p).metadata.num_rows for p in parts_b]
    if rows_a != rows_b:
        return {"identical": False, "why": f"parts of {rows_a} rows against {rows_b}"}
    ta, tb = (pa.concat_tables([pq.read_table(p) for p in ps]) for ps in (parts_a, parts_b))
    if ta.schema.names != tb.schema.names:
        return {"identical": False, "why": f"columns {ta.schema.names} against {tb.schema.names}"}
    per_run, different = [], []
    for name in ta.schema.names:
        if ta[name].equals(tb[name]):
            continue
        constant = len(ta[name].unique()) == 1 and len(tb[name].unique()) == 1
        (per_run if constant else different).append(name)
    return {
        "identical": not different,
        "parts": len(parts_a),
        "per_run_columns": per_run,
        "why": f"columns differ: {different}" if different else "",
    }


# -- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=GROUPS, help="run one measurement group")
    parser.add_argument("--raw-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_child:
        onnx, src, dst = (Path(p) for p in args.raw_child)
        print(json.dumps(raw_loop(onnx, src, dst)))
        return
    if shutil.which("taskset") is None:
        sys.exit("batch benchmark: taskset is not installed (`sudo apt-get install util-linux`)")
    if not Path(TIME).exists():
        sys.exit(f"batch benchmark: {TIME} (GNU time) is not there (`sudo apt-get install time`)")
    # SIGTERM unwinds like Ctrl-C, so MLServer is stopped and measured commands killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from run import machine

    groups = {args.only} if args.only else set(GROUPS)
    bench = Batch()
    bench.prepare(groups)
    results: dict[str, Any] = {
        "command": "python benchmarks/batch.py" + (f" --only {args.only}" if args.only else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }
    if "raw" in groups:
        results["raw"] = measure_raw(bench)
    if "modelport" in groups:
        results["modelport"] = measure_iris(
            bench, "modelport batch (compiled iris)", ("2M", "100k")
        )
    if "memory" in groups:
        results["memory"] = measure_iris(bench, "modelport batch (memory)", ("500k", "5M"))
    if "dask" in groups:
        results["dask"] = measure_dask(bench)
    if "mlserver" in groups:
        results["mlserver"] = measure_mlserver(bench.iris_artifact)
        if "error" in results["mlserver"]:
            bench.note(f"MLServer did not start: {results['mlserver']['error']}")
    results["notes"] = bench.notes
    results["targets"] = targets(results)
    print()
    print(table(results))
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
