"""MLServer's batch tool, `mlserver infer` 1.7.1, scoring the batch benchmark's 100k rows.

What the tool is (mlserver/batch_processing.py; its own help calls it deprecated): an asyncio
client (tritonclient.http.aio) that reads a local file of JSON lines, one OIP InferenceRequest
per line (batch_data.mlserver_requests writes one per row), merges `--batch-size` lines
(default 1) into one request, and POSTs those over `--workers` connections (default 10) to a
running MLServer (`-u HOST:PORT`, no scheme). It writes one InferenceResponse line per input
line, its `parameters.batch_index` the input line number, in completion order, not input order.
Within a micro-batch, requests are keyed by their `id`: equal ids collapse into one answer.
Rows can go missing without a word: a micro-batch whose post-processing raises is dropped
(consume() swallows the UnboundLocalError that process_items raises after logging "failed to
postprocess item"); a request that fails validation or exhausts `--retries` gets an error line
instead of an answer. So the output is checked line by line against the input rows. Seen
here (100k rows, --batch-size 1, 100 and 1000, 10 workers, the iris model): every row
answered, none missing or duplicated, every label equal to scikit-learn's, and lines out of
input order at every setting (a fifth to a quarter of them at --batch-size 1, up to about a
thousand at 100 and 1000). The model never fails, so the losing path is not exercised: it is
there in the code, not in these runs.

MLServer serves the demo iris's own weights (its skops artifact, re-saved with joblib for
MLServer's sklearn runtime, the same scikit-learn version) on SERVER_CPU, with
parallel_workers 0 as in `make bench`; `mlserver infer` runs pinned to LOAD_CPU, so the peer
uses two cores where `modelport batch` uses one. Its time is from exec to exit of `mlserver
infer` against a server already started and ready.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import batch_data
import numpy as np
import pyarrow.parquet as pq
from batch_data import IRIS_FEATURES
from batch_measure import BATCH, BENCH, DATA, LOGS, OUT, figures, fresh, measured
from servers import HOST, LOAD_CPU, ServerFailed, free_port, running

MLSERVER_VENV = BENCH / ".venv-mlserver"
MLSERVER_BIN = MLSERVER_VENV / "bin" / "mlserver"
MLSERVER_RUNS = ((1, 10), (100, 10), (1000, 10))
"""`mlserver infer` settings tried, (--batch-size, --workers): its defaults first."""
SIZE = "100k"


def mlserver_model(iris_artifact: Path, scratch: Path = BATCH) -> tuple[Path, Any]:
    """The demo iris (a skops file) as the joblib file MLServer loads (under `scratch`); and
    the model itself."""
    import joblib
    import skops.io

    model = skops.io.load(iris_artifact, trusted=skops.io.get_untrusted_types(file=iris_artifact))
    target = scratch / "mlserver-model" / "iris.joblib"
    target.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, target)
    return target, model


def measure_mlserver(iris_artifact: Path) -> dict[str, Any]:
    """`mlserver infer` on the 100k rows at each of MLSERVER_RUNS, against one MLServer start."""
    import models
    from run import READY_DEADLINE, ensure_mlserver_venv

    ensure_mlserver_venv()
    source = batch_data.iris_file(DATA, SIZE)
    requests = batch_data.mlserver_requests(DATA, source)
    artifact, model = mlserver_model(iris_artifact)
    table = pq.read_table(source, columns=list(IRIS_FEATURES))
    expected = model.predict(np.column_stack([table[n].to_numpy() for n in IRIS_FEATURES]))
    folder = models.mlserver_folder(BATCH / "mlserver", "iris", artifact)
    port = free_port()
    settings = {
        "host": HOST,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    version = subprocess.run(
        [str(MLSERVER_BIN), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    result: dict[str, Any] = {"version": version[-1] if version else "", "runs": []}
    argv = [str(MLSERVER_BIN), "start", "."]
    try:
        with running("mlserver", argv, port, LOGS / "mlserver.log", folder, READY_DEADLINE):
            for batch_size, workers in MLSERVER_RUNS:
                result["runs"].append(infer(port, requests, batch_size, workers, expected))
    except ServerFailed as exc:
        result["error"] = str(exc)
    return result


def infer(
    port: int, requests: Path, batch_size: int, workers: int, expected: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """One `mlserver infer` run pinned to LOAD_CPU; its figures and the check of its output."""
    out = fresh(OUT / f"mlserver-b{batch_size}-w{workers}.jsonl")
    argv = ["taskset", "-c", LOAD_CPU, str(MLSERVER_BIN), "infer", "-u", f"{HOST}:{port}"]
    argv += ["-m", "iris", "-i", str(requests), "-o", str(out)]
    argv += ["-s", str(batch_size), "-w", str(workers)]
    label = f"mlserver infer -s {batch_size} -w {workers}"
    print(f"{label}: {SIZE} rows ...", flush=True)
    run = measured(argv, f"mlserver-infer-b{batch_size}-w{workers}")
    result = figures(label, len(expected), SIZE, run)
    # That is the client's own peak; the server's is not measured, so show neither.
    result |= {"batch_size": batch_size, "workers": workers, "peak_rss_mb": None}
    if out.exists():
        result["check"] = check_output(out, expected)
        print(f"  {result['check']}", flush=True)
    return result


def check_output(path: Path, expected: np.ndarray[Any, Any]) -> dict[str, Any]:
    """What `mlserver infer` wrote, line by line, against the rows it was given."""
    seen = np.zeros(len(expected), dtype=np.int64)
    errors = out_of_order = agree = lines = 0
    last = -1
    with path.open("rb") as src:
        for line in src:
            lines += 1
            item = json.loads(line)
            index = int(item.get("parameters", {}).get("batch_index", -1))
            if not 0 <= index < len(expected):
                errors += 1
                continue
            seen[index] += 1
            out_of_order += index < last
            last = max(last, index)
            if "error" in item:
                errors += 1
                continue
            label = next(o["data"][0] for o in item["outputs"] if o["name"] == "predict")
            agree += int(label == expected[index])
    return {
        "lines": lines,
        "answered": lines - errors,
        "errors": errors,
        "missing": int(np.sum(seen == 0)),
        "duplicated": int(np.sum(seen > 1)),
        "out_of_order": out_of_order,
        "labels_equal": agree,
    }
