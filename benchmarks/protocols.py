"""The platforms' protocols, measured: each inference path of one `modelport serve`, side by
side with the OIP REST path, in one run.

Usage: python benchmarks/protocols.py [--rounds R] [--duration S] (with the project venv; needs
wrk and taskset). Not part of `make bench`. Prints a table and writes
benchmarks/work/protocols.json; everything it makes is scratch under benchmarks/work/protocols/.

How it measures: one `modelport serve` of a fresh demo registry (compiled iris, default
settings: metrics and the inference log on) pinned to SERVER_CPU; wrk (1 thread, 64
connections, post.lua) pinned to LOAD_CPU. Each load is checked once (status 200) before it is
timed, and a load whose path this modelport does not answer is left out with a note; then,
round after round (--rounds, default 3), every load runs once for --duration seconds (default
10) after a 2 s warm-up, in turn; the table shows each load's median run. The loads:

- iris b1 on each JSON path: OIP (`/v2/models/iris/infer`), TF Serving / KServe v1
  (`/v1/models/iris:predict` with `instances`), MLflow / SageMaker (`/invocations` with
  `dataframe_split`), each one row of 4 features per request;
- iris 64 rows a request: OIP JSON, CSV on `/invocations` (text/csv, no header, CSV answer) and
  an Avro object container file on `/invocations` (application/avro in and out), in rows/s.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from batch_measure import MODELPORT_BIN, WORK
from servers import HOST, LOAD_CPU, free_port, running

BENCH = Path(__file__).resolve().parent
SCRATCH = WORK / "protocols"
REGISTRY = SCRATCH / "registry"
RESULTS = WORK / "protocols.json"
CONNECTIONS = 64
WARMUP_S = 2
READY_DEADLINE = 120.0
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass(frozen=True)
class Load:
    """One path and body: `rows` iris rows a request."""

    name: str
    path: str
    body: bytes
    rows: int
    content_type: str = "application/json"
    accept: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def iris_rows(count: int) -> np.ndarray[Any, Any]:
    """`count` rows of scikit-learn's iris (repeated), as float32 rounded to what JSON carries."""
    from sklearn.datasets import load_iris

    data = load_iris().data.astype(np.float32)
    return np.resize(data, (count, 4))


def avro_body(rows: np.ndarray[Any, Any]) -> bytes:
    """The rows as an Avro object container file of records with the four feature fields."""
    import fastavro

    schema = {
        "type": "record",
        "name": "Iris",
        "fields": [{"name": name, "type": "float"} for name in FEATURES],
    }
    out = io.BytesIO()
    records = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    return out.getvalue()


def loads() -> list[Load]:
    one, many = iris_rows(1), iris_rows(64)
    target = {"X-Amzn-SageMaker-Target-Model": "iris"}

    def oip(rows: np.ndarray[Any, Any]) -> bytes:
        tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP32"}
        return json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()

    split = {"columns": list(FEATURES), "data": one.tolist()}
    csv = "".join(",".join(f"{v:g}" for v in row) + "\n" for row in many.tolist()).encode()
    return [
        Load("OIP JSON b1", "/v2/models/iris/infer", oip(one), 1),
        Load(
            "TF Serving v1 b1",
            "/v1/models/iris:predict",
            json.dumps({"instances": one.tolist()}).encode(),
            1,
        ),
        Load(
            "invocations JSON b1",
            "/invocations",
            json.dumps({"dataframe_split": split}).encode(),
            1,
            headers=target,
        ),
        Load("OIP JSON b64", "/v2/models/iris/infer", oip(many), 64),
        Load(
            "invocations CSV b64",
            "/invocations",
            csv,
            64,
            content_type="text/csv",
            accept="text/csv",
            headers=target,
        ),
        Load(
            "invocations Avro b64",
            "/invocations",
            avro_body(many),
            64,
            content_type="application/avro",
            accept="application/avro",
            headers=target,
        ),
    ]


def check(port: int, load: Load) -> str:
    """ "" when the load's request is answered 200, else what went wrong."""
    import httpx

    headers = {"content-type": load.content_type, **load.headers}
    if load.accept:
        headers["accept"] = load.accept
    answer = httpx.post(f"http://{HOST}:{port}{load.path}", content=load.body, headers=headers)
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    return ""


def wrk(port: int, load: Load, seconds: int) -> dict[str, Any]:
    body = SCRATCH / f"{load.name.replace(' ', '_')}.body"
    body.write_bytes(load.body)
    env = {"BODY_FILE": str(body), "CONTENT_TYPE": load.content_type, "PATH": "/usr/bin:/bin"}
    if load.accept:
        env["ACCEPT"] = load.accept
    if "X-Amzn-SageMaker-Target-Model" in load.headers:
        env["TARGET_MODEL"] = load.headers["X-Amzn-SageMaker-Target-Model"]
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s"]
    argv += ["--timeout", "60s", "-s", str(BENCH / "post.lua"), f"http://{HOST}:{port}{load.path}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            figures: dict[str, Any] = json.loads(line[len("BENCH ") :])
            return figures
    return {"error": f"wrk gave no figures: {done.stderr.strip()[-200:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("protocols benchmark: wrk is not installed (apt-get install wrk)")
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    subprocess.run(
        [str(MODELPORT_BIN), "demo", "--registry", str(REGISTRY)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    argv = [str(MODELPORT_BIN), "serve", "--registry", str(REGISTRY), "--host", HOST]
    argv += ["--http-port", str(port), "--log-level", "warning"]
    plan = loads()
    runs: dict[str, list[dict[str, Any]]] = {load.name: [] for load in plan}
    with running("modelport", argv, port, SCRATCH / "server.log", SCRATCH, READY_DEADLINE):
        refused = {load.name: why for load in plan if (why := check(port, load))}
        for name, why in refused.items():
            print(f"note: {name} is not measured: {why}", flush=True)
        measured = [load for load in plan if load.name not in refused]
        for r in range(args.rounds):
            for load in measured:
                wrk(port, load, WARMUP_S)
                figures = wrk(port, load, args.duration)
                runs[load.name].append(figures)
                print(f"round {r + 1}: {load.name}: {figures}", flush=True)
    report(plan, runs)


def report(plan: list[Load], runs: dict[str, list[dict[str, Any]]]) -> None:
    rows = []
    base = {1: "OIP JSON b1", 64: "OIP JSON b64"}
    medians: dict[str, dict[str, Any]] = {}
    for load in plan:
        good = [r for r in runs[load.name] if "error" not in r and not r.get("non2xx")]
        if not good:
            continue
        good.sort(key=lambda r: r["rps"])
        medians[load.name] = {**good[len(good) // 2], "rows": load.rows}
    print(f"\n{'load':<24} {'requests/s':>11} {'rows/s':>10} {'p99 ms':>8} {'vs OIP':>7}")
    for name, m in medians.items():
        oip = medians.get(base[m["rows"]])
        ratio = f"{m['rps'] / oip['rps']:.2f}x" if oip else "-"
        rps, p99 = m["rps"], m["p99_us"] / 1000
        print(f"{name:<24} {rps:>11,.0f} {rps * m['rows']:>10,.0f} {p99:>8.1f} {ratio:>7}")
        rows.append({"load": name, **m})
    for name in ("TF Serving v1 b1", "invocations JSON b1"):
        if name in medians and base[1] in medians:
            ratio = medians[name]["rps"] / medians[base[1]]["rps"]
            verdict = "PASS" if ratio >= 0.8 else "FAIL"
            print(f"target: {name} >= 0.80x OIP JSON b1: {verdict} ({ratio:.2f}x)")
    RESULTS.write_text(
        json.dumps({"when": datetime.now(UTC).isoformat(), "runs": runs, "medians": rows}, indent=2)
    )
    print(f"wrote {RESULTS.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
