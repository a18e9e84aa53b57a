"""`make bench`: modelport against MLServer 1.7.1, side by side, on this machine.

Usage: python benchmarks/run.py [--quick] [--only iris|heavy|grpc|obs|overload|soak|signal]
(with the project venv). ROUNDS= (default 3) and DURATION= (seconds per round, default 10)
override the defaults; DURATION is also the length of each overload phase. The 10-minute soak
runs with --only soak, or in a full run with SOAK=1; SOAK_SECONDS= shortens it. The
autoscaling signal (in-flight requests and CPU against p99 as load rises) runs only with
--only signal (DURATION is each load step's length, ROUNDS the sweeps per model).
A full run rewrites benchmarks/results/latest.json, docs/performance.md and docs/performance.png;
--quick (1 round of 3 s, fewer scenarios) and --only (one scenario group, no start-up or memory
scenario) write only to benchmarks/work/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import autoscale_signal
import grpc_load
import models
import open_loop
import report
from scenarios import (
    COMPILED_OFF,
    GROUP_KEYS,
    MLSERVER,
    MODELPORT,
    OBS_ALL,
    OBS_OFF,
    OBS_ON,
    OVERLOAD,
    OVERLOAD_CLOSED,
    OVERLOAD_CONNECTIONS,
    OVERLOAD_FACTORS,
    OVERLOAD_FLAGS,
    SOAK,
    SOAK_LOAD,
    SOAK_SAMPLE,
    SOAK_SECONDS,
    SOAK_WARMUP,
    STANDALONE,
    Group,
    Load,
    Variant,
    body,
    groups,
    request_rows,
)
from servers import HOST, LOAD_CPU, SERVER_CPU, Server, ServerFailed, free_port, running, status

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
VENV = BENCH / ".venv-mlserver"
MODELPORT_BIN = Path(sys.executable).parent / "modelport"
READY_DEADLINE = 180.0
"""Seconds a server may take to become ready (the ~500 MB model with 4 workers is the slowest)."""
INFERENCE_LOG = "inference-log.sqlite"
"""The inference log's default file in a registry directory (`serve --inference-log`)."""
ACCESS_RECORD = b'"logger":"modelport.access"'
"""What marks a JSON access record in a server's log."""
SOURCE = "import pathlib, modelport; print(pathlib.Path(modelport.__file__).parent.parent)"
"""Prints the directory modelport is imported from."""
OFF = (OBS_OFF, COMPILED_OFF)
"""The variants serving with metrics, the access log and the inference log off."""
BATCH_SIZE = "modelport_batch_size"
"""The histogram of rows per model call on /metrics."""


def fail(message: str) -> None:
    """Stop the run with a message saying what to do."""
    print(f"make bench: {message}", file=sys.stderr)
    sys.exit(2)


def preflight() -> None:
    """The load generator, CPU pinning and two CPUs must be there before anything starts."""
    if shutil.which("wrk") is None:
        fail(
            "wrk is not installed; install it (Debian/Ubuntu: `sudo apt-get install wrk`) and rerun"
        )
    if shutil.which("h2load") is None:
        print(
            "note: h2load is not installed, so the gRPC scenario is skipped "
            "(Debian/Ubuntu: `sudo apt-get install nghttp2-client`)",
            flush=True,
        )
    if shutil.which("taskset") is None:
        fail("taskset is not installed; install util-linux (`sudo apt-get install util-linux`)")
    cpus = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(LOAD_CPU)} <= cpus:
        fail(f"needs CPUs {SERVER_CPU} and {LOAD_CPU} (server and load generator); has {cpus}")


def ensure_mlserver_venv() -> None:
    """benchmarks/.venv-mlserver with MLServer and this venv's scikit-learn, installed once."""
    import sklearn

    requirements = BENCH / "requirements-mlserver.txt"
    pins = [f"scikit-learn=={sklearn.__version__}"]
    wanted = hashlib.sha256((requirements.read_text() + " ".join(pins)).encode()).hexdigest()
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print("installing MLServer 1.7.1 into benchmarks/.venv-mlserver (once) ...", flush=True)
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-r", str(requirements), *pins], check=True)
    stamp.write_text(wanted)


def output(argv: list[str]) -> str:
    """stdout of a short command (its help or version text)."""
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def machine() -> dict[str, Any]:
    """The facts that make figures comparable: CPUs, CPU model, memory, kernel, Python."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal:")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_kb / 1024**2,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "server_cpu": SERVER_CPU,
        "load_cpu": LOAD_CPU,
    }


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Bench:
    """One benchmark run: its settings, its registry and model folders, and its notes."""

    def __init__(self, quick: bool, rounds: int, duration: int, only: str | None = None) -> None:
        self.quick, self.rounds, self.duration = quick, rounds, duration
        self.only = only
        self.warmup = 1 if quick else 2
        self.notes: list[str] = []
        self.registry = WORK / "registry"
        self.folders: dict[str, Path] = {}
        self.starts = 0
        serve_help = output([str(MODELPORT_BIN), "serve", "--help"])
        push_help = output([str(MODELPORT_BIN), "models", "push", "--help"])
        self.can = {
            flag: flag in text
            for flag, text in (
                ("--compile", push_help),
                ("--no-batching", serve_help),
                ("--no-compiled", serve_help),
                ("--workers", serve_help),
                ("--grpc-port", serve_help),
                ("--inference-log", serve_help),
            )
        }
        self.can["h2load"] = shutil.which("h2load") is not None
        for flag, what in (
            ("--compile", "`models push --compile onnx`: compiled scenarios skipped"),
            ("--no-batching", "`serve --no-batching`: the batching-off scenario skipped"),
            ("--no-compiled", "`serve --no-compiled`: the compiled-off scenario skipped"),
            ("--workers", "`serve --workers`: the memory scenario skipped"),
            ("--grpc-port", "`serve --grpc-port`: the gRPC scenario skipped"),
            ("--inference-log", "`serve --inference-log`: the observability scenario skipped"),
        ):
            if not self.can[flag]:
                self.note(f"this modelport has no {what}")
        if not self.can["h2load"]:
            self.note("h2load (nghttp2-client) is not installed: the gRPC scenario skipped")
        self.compiled: set[str] = set()

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def push(self, file: Path, name: str, *extra: str) -> bool:
        """Push a model file into the run's registry; False (and a note) if that fails."""
        argv = [str(MODELPORT_BIN), "models", "push", str(file), "--name", name]
        argv += ["--trust-pickle", "--registry", str(self.registry), *extra]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1]
            self.note(f"pushing {name} {' '.join(extra)} failed: {why}")
        return done.returncode == 0

    def prepare(self) -> dict[str, Any]:
        """Train (or reuse) the model files; fill a fresh registry and the MLServer folders."""
        if self.only == "memory":
            wanted = ["iris", "big"]
        elif self.only == "signal":
            wanted = list(autoscale_signal.MODELS)
        elif self.only is not None:
            # One group: only its models (the memory scenario and its big model do not run).
            wanted = {"heavy": ["heavy"], "grpc": ["iris", "heavy"]}.get(self.only, ["iris"])
        else:
            wanted = ["iris", "heavy"]
            wanted += [] if self.quick or not self.can["--workers"] else ["big"]
        with warnings_quiet():
            files = models.build(WORK / "models", wanted)
        shutil.rmtree(self.registry, ignore_errors=True)
        for name in (n for n in ("iris", "heavy") if n in files):
            if not self.push(files[name], name):
                fail(f"cannot push {name} into a fresh registry; is modelport working?")
            self.folders[name] = models.mlserver_folder(WORK / "mlserver", name, files[name])
            if self.can["--compile"] and self.push(
                files[name], f"{name}_onnx", "--compile", "onnx"
            ):
                self.compiled.add(name)
        if "big" in files and not self.push(files["big"], "big"):
            self.can["--workers"] = False
        self.bodies = WORK / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True)
        return {
            name: {"description": describe(name), "mb": path.stat().st_size / 1e6}
            for name, path in files.items()
        }

    def body_file(self, model: str, rows: int) -> Path:
        path = self.bodies / f"{model}-b{rows}.json"
        if not path.exists():
            path.write_bytes(body(model, rows))
        return path

    def grpc_body_file(self, model: str, rows: int, served: str) -> Path:
        """The framed ModelInferRequest h2load posts, naming the served model `served`."""
        path = self.bodies / f"{served}-b{rows}.grpc.bin"
        if not path.exists():
            message = grpc_load.request_message(served, request_rows(model, rows))
            path.write_bytes(grpc_load.frame(message))
        return path

    @contextlib.contextmanager
    def serve(self, variant: Variant, model: str, registry: Path | None = None) -> Iterator[Server]:
        """A ready server for variant (MLServer serves the model's folder); stopped on exit."""
        self.starts += 1
        port, grpc_port = free_port(), free_port()
        name = variant.label.replace(" ", "_").replace(",", "")
        log = WORK / "logs" / f"{self.starts:03d}-{name}.log"
        ready = None
        if variant.server == "mlserver":
            folder = self.folders[model]
            settings = {
                "host": HOST,
                "http_port": port,
                "grpc_port": grpc_port,
                "metrics_port": free_port(),
                "parallel_workers": 0,
            }
            (folder / "settings.json").write_text(json.dumps(settings, indent=2))
            argv = [str(VENV / "bin" / "mlserver"), "start", "."]
        elif variant.server == "grpc-ceiling":
            # No REST side: it is ready once its gRPC port accepts connections.
            folder, port = WORK, grpc_port
            argv = [sys.executable, str(BENCH / "grpc_ceiling.py"), "--port", str(port)]
            ready = lambda p: grpc_load.accepting(HOST, p)  # noqa: E731
        else:
            folder = WORK
            argv = [str(MODELPORT_BIN), "serve", "--registry", str(registry or self.registry)]
            argv += ["--host", HOST, "--http-port", str(port), "--log-level", "warning"]
            if self.can["--grpc-port"]:
                argv += ["--grpc-port", str(grpc_port)]
            else:
                grpc_port = 0
            if variant.served_name:
                argv += ["--model", variant.served_name]
            argv += variant.flags
        with running(
            variant.label, argv, port, log, folder, READY_DEADLINE, ready, grpc_port
        ) as server:
            yield server

    def h2load(self, server: Server, body_file: Path, load: Load, seconds: int) -> dict[str, Any]:
        """One h2load run against the server's gRPC port; its figures, or {"error": ...}."""
        return grpc_load.h2load(
            HOST, server.grpc_port, body_file, load.connections, seconds, LOAD_CPU
        )

    def grpc_load(self, served: str, server: Server, load: Load) -> dict[str, Any]:
        """Check grpc-status once, warm up, run one gRPC load; its figures or {"error": ...}."""
        body_file = self.grpc_body_file(load.model, load.rows, served)
        # h2load sees only HTTP statuses; a gRPC error is HTTP 200 with a bad trailer.
        verdict = grpc_load.grpc_status(HOST, server.grpc_port, body_file.read_bytes())
        if verdict != "OK":
            return {"error": f"grpc-status not 0: {verdict[:200]}"}
        self.h2load(server, body_file, load, self.warmup)
        return self.h2load(server, body_file, load, self.duration)

    def run_loads(self, variant: Variant, group: Group, server: Server) -> dict[str, Any]:
        """Each load of the group the variant takes, in turn; {load name: figures}.

        REST loads follow one wrk warm-up per start, gRPC loads each their own h2load warm-up.
        Where /metrics answers, each run's figures hold the rows per model call it caused.
        """
        served = variant.served_name or group.model
        path = f"/v2/models/{served}/infer"
        results: dict[str, Any] = {}
        warm = False
        for load in (load for load in group.loads if variant.takes(load)):
            if not load.grpc and not warm:
                self.wrk(server.port, path, Load(group.model, 1, 64), self.warmup)
                warm = True
            before = batch_sizes(server) if variant.server == "modelport" else None
            if load.grpc:
                result = self.grpc_load(served, server, load)
            else:
                result = self.wrk(server.port, path, load, self.duration)
            after = batch_sizes(server) if before is not None else None
            if before is not None and after is not None and "error" not in result:
                calls, rows = after[0] - before[0], after[1] - before[1]
                result["batch"] = {"calls": calls, "rows": rows}
            results[load.name] = result
        return results

    def wrk_command(
        self, port: int, path: str, load: Load, seconds: int
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of one wrk run from LOAD_CPU."""
        url = f"http://{HOST}:{port}{path}"
        argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{load.connections}"]
        # A long timeout: an overloaded server's slowest answers belong in p99, and wrk leaves
        # timed-out requests out of its percentiles (a timeout would still fail the run).
        argv += [f"-d{seconds}s", "--timeout", "60s", "-s", str(BENCH / "post.lua"), url]
        env = {**os.environ, "BODY_FILE": str(self.body_file(load.model, load.rows))}
        return argv, env

    def wrk(self, port: int, path: str, load: Load, seconds: int) -> dict[str, Any]:
        """One wrk run from LOAD_CPU; its parsed figures, or {"error": ...}."""
        argv, env = self.wrk_command(port, path, load, seconds)
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        return wrk_figures(done.stdout, done.stderr)

    def loads(self) -> list[dict[str, Any]]:
        """Every load on every variant, servers alternating round by round; medians per row."""
        plan = groups(
            self.quick,
            self.compiled,
            self.can["--no-batching"],
            self.can["--no-compiled"],
            self.can["--grpc-port"] and self.can["h2load"],
            self.can["--inference-log"],
        )
        if self.only in STANDALONE:
            return []
        if self.only is not None:
            plan = [g for g in plan if g.selector == self.only]
            if not plan:
                self.note(f"--only {self.only}: this modelport cannot run that group (see notes)")
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rnd in range(1, self.rounds + 1):
            for group in plan:
                flip = group.alternate and rnd % 2 == 0
                for variant in group.variants[::-1] if flip else group.variants:
                    print(f"round {rnd}/{self.rounds}: {variant.label} serving {group.model}")
                    observed = variant.label in (OBS_ON, *OFF, OBS_ALL)
                    logged = self.inference_log_rows() if observed else 0
                    try:
                        with self.serve(variant, group.model) as server:
                            results = self.run_loads(variant, group, server)
                            for name, result in results.items():
                                samples.setdefault((name, variant.label), []).append(result)
                                print(f"  {name:<24} {brief(result)}", flush=True)
                            metrics = status(server.port, "/metrics") if observed else 0
                        if observed:
                            # Checked after the stop, when every record has been written.
                            wrong = self.observability_problem(variant, server, metrics, logged)
                            for name in results:
                                run = samples[(name, variant.label)][-1]
                                if wrong and "error" not in run:
                                    run["error"] = wrong
                                    print(f"  FAILED: {wrong}", flush=True)
                    except ServerFailed as exc:
                        print(f"  FAILED: {exc}", flush=True)
                        for load in (load for load in group.loads if variant.takes(load)):
                            key = (load.name, variant.label)
                            samples.setdefault(key, []).append({"error": str(exc)})
        # One block per scenario, MLServer first, then modelport's variants in plan order.
        order = {
            key: i
            for i, key in enumerate(
                (load.name, v.label) for g in plan for load in g.loads for v in g.variants
            )
        }
        rows = [
            summarize(scenario, server, runs)
            for (scenario, server), runs in sorted(samples.items(), key=lambda kv: order[kv[0]])
        ]
        base = {r["scenario"]: r for r in rows if r["server"] == MLSERVER}
        for row in rows:
            ml = base.get(row["scenario"])
            ok = ml and row is not ml and not row["failed"] and not ml["failed"]
            row["ratio"] = row["rps"] / ml["rps"] if ok and ml and ml["rps"] else None
        return rows

    def inference_log_rows(self) -> int:
        """Rows in the run registry's inference log (0 while it has none)."""
        path = self.registry / INFERENCE_LOG
        if not path.exists():
            return 0
        with contextlib.closing(sqlite3.connect(path)) as db:
            found = db.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'inference_log'"
            ).fetchone()[0]
            return (
                int(db.execute("SELECT count(*) FROM inference_log").fetchone()[0]) if found else 0
            )

    def observability_problem(
        self, variant: Variant, server: Server, metrics: int, logged_before: int
    ) -> str:
        """Why a stopped server of the observability group did not record what its label says.

        On: /metrics answered 200 and the inference log grew; the log holds access records
        only with everything on. Off: /metrics answered 404, no access records, the inference
        log did not grow. "" when all is as it should be.
        """
        on = variant.label not in OFF
        access_on = variant.label == OBS_ALL
        access = server.log.read_bytes().count(ACCESS_RECORD)
        grew = self.inference_log_rows() - logged_before
        wrong = []
        if metrics != (200 if on else 404):
            wrong.append(f"GET /metrics answered {metrics}")
        if access_on != (access > 0):
            wrong.append(f"{access} access records in {server.log.name}")
        if on != (grew > 0):
            wrong.append(f"{grew} new inference-log rows")
        if wrong:
            return f"{variant.label} but " + ", ".join(wrong)
        print(f"  checked: {access:,} access records, {grew:,} inference-log rows", flush=True)
        return ""

    def sustainable_rate(
        self, port: int, path: str, load: Load, out: dict[str, Any]
    ) -> float | None:
        """req/s of a closed-loop wrk run of `load` after its warm-up, kept in out["closed"];
        None, with out["failed"] saying why, when the run had errors."""
        self.wrk(port, path, load, self.warmup)
        closed = out["closed"] = self.wrk(port, path, load, self.duration)
        print(f"  {load.name:<20} {brief(closed)}", flush=True)
        if "error" in closed or closed["non2xx"] or closed["socket_errors"]:
            out["failed"] = f"the closed-loop run failed: {brief(closed)}"
            return None
        return float(closed["rps"])

    def overload(self) -> dict[str, Any]:
        """Shedding at twice the sustainable rate, then recovery, in one server start.

        `serve --max-queue 64`: a closed-loop wrk run (iris b1 c64) gives the sustainable rate
        R; then an open-loop load offers R/2, 2R and R/2 requests a second, DURATION seconds
        each, without a pause, recording per second what was offered, admitted and shed.
        """
        variant = Variant(OVERLOAD, "modelport", "iris", OVERLOAD_FLAGS)
        path = "/v2/models/iris/infer"
        out: dict[str, Any] = {
            "server": OVERLOAD,
            "connections": OVERLOAD_CONNECTIONS,
            "factors": list(OVERLOAD_FACTORS),
            "phase_s": self.duration,
            "failed": "",
        }
        print(f"overload: {OVERLOAD} serving iris", flush=True)
        try:
            with self.serve(variant, "iris") as server:
                rate = self.sustainable_rate(server.port, path, OVERLOAD_CLOSED, out)
                if rate is None:
                    return out
                phases = [(rate * factor, float(self.duration)) for factor in OVERLOAD_FACTORS]
                body_file = self.body_file("iris", 1)
                load = open_loop.run(
                    server.port, path, body_file, phases, LOAD_CPU, OVERLOAD_CONNECTIONS
                )
                out["ready_after"] = status(server.port, "/v2/health/ready")
        except ServerFailed as exc:
            out["failed"] = str(exc)
            print(f"  FAILED: {exc}", flush=True)
            return out
        if "error" in load:
            out["failed"] = load["error"]
        else:
            out["open_loop"] = load
        for line in report.text_table(report.overload_seconds(out)).splitlines():
            print(f"  {line}", flush=True)
        return out

    def soak(self) -> dict[str, Any]:
        """RSS of a server under steady load for SOAK_SECONDS (default 10 minutes).

        Default settings, so metrics, the inference log and the access log are all on; wrk
        iris b1 c16 for the whole time; the RSS of the server's processes every 10 s.
        """
        seconds = int(os.environ.get("SOAK_SECONDS") or SOAK_SECONDS)
        # The first minute, unless a shortened check leaves too little after it.
        warmup = SOAK_WARMUP if seconds >= SOAK_WARMUP + 2 * SOAK_SAMPLE else seconds // 2
        out: dict[str, Any] = {
            "server": SOAK,
            "load": SOAK_LOAD.name,
            "seconds": seconds,
            "warmup_s": warmup,
            "samples": [],
            "failed": "",
        }
        variant = Variant(SOAK, "modelport", "iris")
        path = "/v2/models/iris/infer"
        logged = self.inference_log_rows()
        print(f"soak: {SOAK} serving iris, {SOAK_LOAD.name} for {seconds} s", flush=True)
        try:
            with self.serve(variant, "iris") as server:
                argv, env = self.wrk_command(server.port, path, SOAK_LOAD, seconds)
                wrk = subprocess.Popen(
                    argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                try:
                    out["samples"] = sample_rss(server, wrk, seconds)
                finally:
                    if wrk.poll() is None:
                        wrk.kill()
                    stdout, stderr = wrk.communicate()
                out["wrk"] = wrk_figures(stdout, stderr)
                out["metrics_status"] = status(server.port, "/metrics")
                out["log_mb"] = server.log.stat().st_size / 1e6
        except ServerFailed as exc:
            out["failed"] = str(exc)
        out["inference_log_rows"] = self.inference_log_rows() - logged
        run = out.get("wrk", {})
        if not out["failed"]:
            wrong = []
            if "error" in run or run["non2xx"] or run["socket_errors"] or run["timeouts"]:
                wrong.append(f"wrk: {brief(run)}")
            if out["metrics_status"] != 200:
                wrong.append(f"GET /metrics answered {out['metrics_status']}")
            if out["inference_log_rows"] <= 0:
                wrong.append("the inference log recorded nothing")
            out["failed"] = "; ".join(wrong)
        print(f"  {SOAK_LOAD.name:<16} {brief(run) if run else 'no figures'}", flush=True)
        print(f"  {report.soak_brief(out)}", flush=True)
        return out

    def start_to_ready(self) -> list[dict[str, Any]]:
        """Seconds from process start to ready: modelport on the demo registry, MLServer on iris."""
        repeats = 2 if self.quick else 5
        demo = WORK / "demo-registry"
        shutil.rmtree(demo, ignore_errors=True)
        print("building the demo registry ...", flush=True)
        built = subprocess.run(
            [str(MODELPORT_BIN), "demo", "--registry", str(demo)],
            capture_output=True,
            text=True,
            check=False,
        )
        plan = [(Variant(MLSERVER, "mlserver"), "iris model folder")]
        if built.returncode == 0:
            plan.append((Variant(MODELPORT, "modelport"), "demo registry"))
        else:
            self.note(
                f"`modelport demo` failed, no modelport start-to-ready: {built.stderr[-200:]}"
            )
        times: dict[str, list[float]] = {v.label: [] for v, _ in plan}
        failed: dict[str, str] = {}
        for i in range(repeats):
            for variant, _ in plan:
                try:
                    with self.serve(variant, "iris", registry=demo) as server:
                        times[variant.label].append(server.ready_s)
                        print(f"start {i + 1}/{repeats}: {variant.label} {server.ready_s:.2f} s")
                except ServerFailed as exc:
                    failed[variant.label] = str(exc)
                    print(f"start {i + 1}/{repeats}: {variant.label} FAILED: {exc}")
        return [
            {
                "server": v.label,
                "what": what,
                "runs_s": times[v.label],
                "median_s": median(times[v.label]),
                "failed": failed.get(v.label, ""),
            }
            for v, what in plan
        ]

    def memory(self) -> list[dict[str, Any]]:
        """Total PSS of `serve --workers N` holding the ~500 MB model, after a few inferences."""
        if self.quick:
            self.note("memory scenario skipped in --quick mode")
            return []
        if not self.can["--workers"]:
            return []
        rows = []
        payload = self.body_file("big", 1).read_bytes()
        for workers in (1, 4):
            label = f"modelport --workers {workers}"
            row: dict[str, Any] = {"server": label, "what": "~500 MB MLP", "failed": ""}
            try:
                variant = Variant(label, "modelport", "big", ("--workers", str(workers)))
                with self.serve(variant, "big") as server:
                    # Fresh connections spread over the workers, so each touches the model.
                    codes = [
                        status(server.port, "/v2/models/big/infer", "POST", payload)
                        for _ in range(8 * workers)
                    ]
                    bad = sum(code != 200 for code in codes)
                    row["pss_mb"] = server.pss_mb()
                    row["processes"] = len(server.pids())
                    if bad:
                        row["failed"] = f"{bad} of {len(codes)} inferences failed"
            except ServerFailed as exc:
                row["failed"] = str(exc)
            print(f"{label}: {row.get('pss_mb', 0):,.0f} MB PSS {row['failed']}", flush=True)
            rows.append(row)
        rows.append(self.memory_after_move(4))
        return rows

    def memory_after_move(self, workers: int) -> dict[str, Any]:
        """Total PSS of `serve --workers N` once the production alias has moved, under load,
        to a new version of the ~500 MB model pushed while serving; failed requests counted."""
        label = f"modelport --workers {workers}, after an alias move"
        row: dict[str, Any] = {"server": label, "what": "~500 MB MLP", "failed": ""}
        with warnings_quiet():
            files = models.build(WORK / "models", ["big", "big_next"])
        registry = WORK / "registry-move"
        shutil.rmtree(registry, ignore_errors=True)
        payload = self.body_file("big", 1).read_bytes()
        try:
            self.push_into(registry, files["big"])
            self.registry_command(registry, "models", "alias", "big", "production", "1")
            # The log says when each worker was replaced.
            flags = ("--workers", str(workers), "--log-level", "info", "--no-access-log")
            variant = Variant(label, "modelport", "big", flags)
            with (
                self.serve(variant, "big", registry) as server,
                Traffic(server.port, payload) as traffic,
            ):
                # Pushed while serving: loaded (as the newest) beside production's version 1.
                old = workers_of(server)
                self.push_into(registry, files["big_next"])
                wait_for_workers(server, old, lambda: loaded(server.port, "big", 2))
                started, old = time.perf_counter(), workers_of(server)
                self.registry_command(registry, "models", "alias", "big", "production", "2")
                wait_for_workers(server, old, lambda: served(server.port, "big") == "2")
                row["move_s"] = time.perf_counter() - started
                codes = [
                    status(server.port, "/v2/models/big/infer", "POST", payload)
                    for _ in range(8 * workers)
                ]
                traffic.stop()
                row["pss_mb"] = server.pss_mb()
                row["processes"] = len(server.pids())
                row["requests_during_move"] = traffic.answered
                failed = traffic.failed + sum(code != 200 for code in codes)
                if failed:
                    row["failed"] = f"{failed} of {traffic.answered + len(codes)} requests failed"
        except (ServerFailed, RuntimeError) as exc:
            row["failed"] = str(exc)
        print(f"{label}: {row.get('pss_mb', 0):,.0f} MB PSS {row['failed']}", flush=True)
        return row

    def push_into(self, registry: Path, file: Path) -> None:
        """Push `file` as model "big" into `registry`; RuntimeError if that fails."""
        self.registry_command(registry, "models", "push", str(file), "--name", "big")

    def registry_command(self, registry: Path, *argv: str) -> None:
        """Run `modelport ARGV --registry REGISTRY` (a push gets --trust-pickle)."""
        extra = ["--trust-pickle"] if argv[:2] == ("models", "push") else []
        command = [str(MODELPORT_BIN), *argv, *extra, "--registry", str(registry)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"`modelport {' '.join(argv[:2])}` failed: {why}")


class Traffic:
    """Requests to the big model from two threads, each on a keep-alive connection, until
    stopped: how many were answered and how many failed (any status but 200, or an error)."""

    def __init__(self, port: int, payload: bytes) -> None:
        self.port = port
        self.payload = payload
        self.answered = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        headers = {"Content-Type": "application/json"}
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        while not self._stop.is_set():
            try:
                conn.request("POST", "/v2/models/big/infer", body=self.payload, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
            with self._lock:
                self.answered += 1
                self.failed += not ok


def batch_sizes(server: Server) -> tuple[float, float] | None:
    """Model calls and rows in them so far, from /metrics; None when it does not answer 200.

    Summed over every model and version the server holds (each run here loads one model).
    """
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if response.status != 200:
        return None
    calls = rows = 0.0
    for line in text.splitlines():
        if line.startswith(f"{BATCH_SIZE}_count"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{BATCH_SIZE}_sum"):
            rows += float(line.rsplit(" ", 1)[1])
    return calls, rows


def served(port: int, model: str) -> str:
    """The version the server's default route for `model` serves ("" if it does not answer)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", f"/v2/models/{model}")
        response = conn.getresponse()
        meta = json.loads(response.read()) if response.status == 200 else {}
    except (OSError, ValueError):
        return ""
    finally:
        conn.close()
    return str(meta.get("parameters", {}).get("modelport.version", ""))


def loaded(port: int, model: str, version: int) -> bool:
    """Whether the server answers for `model` version `version` by number."""
    return status(port, f"/v2/models/{model}/versions/{version}/ready") == 200


def workers_of(server: Server) -> set[int]:
    """The pids of the server's workers (its processes but the parent)."""
    return set(server.pids()) - {server.proc.pid}


def wait_for_workers(server: Server, old: set[int], check: Callable[[], bool]) -> None:
    """Wait until `check` holds and the workers `old` have all been replaced and have exited
    (as many workers remain); RuntimeError after 10 minutes."""
    deadline = time.monotonic() + 600
    while not check() or (workers_of(server) & old) or len(workers_of(server)) != len(old):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not follow the registry within 10 minutes")
        time.sleep(0.2)


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """Training the placeholder MLP for a few steps warns that it did not converge; it needn't."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def rss_mb(pids: list[int]) -> float:
    """Total resident set size (VmRSS) of these processes, in MB."""
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def sample_rss(server: Server, load: subprocess.Popen[str], seconds: int) -> list[dict[str, float]]:
    """The server's RSS every SOAK_SAMPLE seconds while `load` runs, and once as it ends."""
    samples: list[dict[str, float]] = []
    started = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - started
        ended = load.poll() is not None or elapsed > seconds + 60
        # A last sample as wrk ends, unless one was just taken on the grid.
        if not ended or not samples or elapsed - samples[-1]["t_s"] >= 1:
            samples.append({"t_s": round(elapsed, 1), "rss_mb": rss_mb(server.pids())})
            print(f"  {elapsed:5.0f} s  RSS {samples[-1]['rss_mb']:7.1f} MB", flush=True)
        if ended:
            return samples
        # The next sample on the 10 s grid, or as soon as wrk ends.
        with contextlib.suppress(subprocess.TimeoutExpired):
            load.wait(timeout=max(0.0, SOAK_SAMPLE * len(samples) - elapsed))


def wrk_figures(stdout: str, stderr: str) -> dict[str, Any]:
    """The figures of post.lua's `BENCH {...}` line, or {"error": ...}."""
    for line in stdout.splitlines():
        if line.startswith("BENCH "):
            result: dict[str, Any] = json.loads(line[len("BENCH ") :])
            return result
    return {"error": f"wrk gave no figures: {stderr.strip()[-200:]}"}


def describe(name: str) -> str:
    spec = models.SPECS[name]
    if name == "iris":
        return "scikit-learn LogisticRegression on load_iris"
    if name == "heavy":
        return (
            f"RandomForestClassifier, {spec['trees']} trees, max_depth {spec['max_depth']}, "
            f"{spec['features']} features, make_classification {spec['rows']:,} rows"
        )
    return f"MLPRegressor with {spec['layers']} hidden layers of {spec['hidden']} (random weights)"


def brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error']}"
    text = f"{result['rps']:9,.0f} req/s  p50 {result['p50_us'] / 1000:7.1f} ms"
    text += f"  p99 {result['p99_us'] / 1000:7.1f} ms"
    if rows_per_call(result):
        text += f"  {rows_per_call(result):5.1f} rows/call"
    if result["non2xx"] or result["socket_errors"] or result["timeouts"]:
        text += f"  non-2xx {result['non2xx']}, socket errors {result['socket_errors']}"
        text += f", timeouts {result['timeouts']}"
    return text


def rows_per_call(result: dict[str, Any]) -> float:
    """Mean rows per model call during one run, from /metrics (0 when not scraped)."""
    batch = result.get("batch") or {}
    return float(batch["rows"] / batch["calls"]) if batch.get("calls") else 0.0


def summarize(scenario: str, server: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median figures over rounds; `failed` says why if any round had an error or non-2xx."""
    ok = [r for r in runs if "error" not in r]
    reasons = sorted({r["error"] for r in runs if "error" in r})
    non2xx = sum(r["non2xx"] for r in ok)
    errors = sum(r["socket_errors"] + r["timeouts"] for r in ok)
    if non2xx:
        reasons.append(f"{non2xx} non-2xx responses")
    if errors:
        reasons.append(f"{errors} socket errors or timeouts")
    p50, p99 = median([r["p50_us"] for r in ok]), median([r["p99_us"] for r in ok])
    return {
        "scenario": scenario,
        "server": server,
        "rps": median([r["rps"] for r in ok]),
        "p50_ms": None if p50 is None else p50 / 1000,
        "p99_ms": None if p99 is None else p99 / 1000,
        "rows_per_call": median([rows_per_call(r) for r in ok if rows_per_call(r)]),
        "failed": "; ".join(reasons),
        "rounds": runs,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s, fewer scenarios")
    parser.add_argument(
        "--only",
        choices=GROUP_KEYS,
        help="run one scenario group (no start-up or memory scenario); results go to work/",
    )
    args = parser.parse_args()
    args.rounds = int(os.environ.get("ROUNDS") or (1 if args.quick else 3))
    args.duration = int(os.environ.get("DURATION") or (3 if args.quick else 10))
    return args


def main() -> None:
    args = parse_args()
    preflight()
    # The observability, overload and soak groups have no peer to install.
    peer = args.only not in ("obs", *STANDALONE)
    if peer:
        ensure_mlserver_venv()
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops its server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args.quick, args.rounds, args.duration, args.only)
    flags = " ".join(
        (["--quick"] if args.quick else []) + ([f"--only {args.only}"] if args.only else [])
    )
    partial = args.quick or args.only is not None
    results: dict[str, Any] = {
        "command": "make bench" + (f" ({flags})" if flags else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": bench.warmup,
        "start_repeats": 2 if args.quick else 5,
        "machine": machine(),
        "versions": {
            "modelport": output([str(MODELPORT_BIN), "--version"]).split()[-1],
            # Where the servers' modelport comes from (PYTHONPATH may point at a checkout).
            "modelport_source": output([sys.executable, "-c", SOURCE]).strip(),
            "mlserver": (output([str(VENV / "bin" / "mlserver"), "--version"]).split() or [""])[-1]
            if peer
            else "",
            "scikit-learn": __import__("sklearn").__version__,
            "wrk": " ".join(output(["wrk", "-v"]).split()[:2]),
            "h2load": " ".join(output(["h2load", "--version"]).split()[:2])
            if shutil.which("h2load")
            else "",
        },
    }
    results["models"] = bench.prepare()
    results["loads"] = bench.loads()
    results["overload"] = bench.overload() if args.only in (None, "overload") else None
    results["signal"] = autoscale_signal.run(bench) if args.only == "signal" else None
    for problem in autoscale_signal.failures(results["signal"]):
        bench.note(f"signal: {problem}")
    soak = args.only == "soak" or (args.only is None and os.environ.get("SOAK") == "1")
    results["soak"] = bench.soak() if soak else None
    if args.only is None and not soak:
        bench.note("soak not run (about 10 minutes): `make bench ONLY=soak`, or SOAK=1")
    if args.only in (None, "memory"):
        results["start_to_ready"] = bench.start_to_ready() if args.only is None else []
        results["memory"] = bench.memory()
    else:
        results["start_to_ready"], results["memory"] = [], []
        bench.note(f"--only {args.only}: start-up and memory scenarios skipped")
    results["notes"] = bench.notes
    results["targets"] = report.targets(results)

    for rows in (
        report.table_rows(results),
        report.grpc_rows(results),
        report.grpc_cost_rows(results) if len(report.grpc_rows(results)) > 1 else [],
        report.other_rows(results),
        report.overload_rows(results),
        report.soak_rows(results),
        autoscale_signal.table_rows(results["signal"]),
    ):
        if len(rows) > 1:
            print()
            print(report.text_table(rows))
    print()
    for t in results["targets"]:
        print(f"{t['status']:<4}  {t['target']}  ({t['detail']})")

    if partial:
        stem = "quick" if args.only is None else f"only-{args.only}"
        data, chart = WORK / f"{stem}.json", WORK / f"{stem}.png"
    else:
        data, chart = BENCH / "results" / "latest.json", ROOT / "docs" / "performance.png"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(results, indent=2) + "\n")
    if results["signal"]:
        table = report.markdown_table(autoscale_signal.table_rows(results["signal"]))
        data.with_suffix(".md").write_text(table + "\n")
    plotter = VENV / "bin" / "python"
    drawn = (
        subprocess.run([str(plotter), str(BENCH / "chart.py"), str(data), str(chart)], check=False)
        if plotter.exists() and results["loads"]
        else None
    )
    if drawn is None:
        if results["loads"]:
            print("note: no chart (it is drawn with benchmarks/.venv-mlserver, not installed)")
    elif drawn.returncode != 0:
        print("note: the chart could not be drawn (see the error above)")
    if partial:
        data.with_suffix(".md").write_text(report.partial_markdown(results, chart.name))
    else:
        page = ROOT / "docs" / "performance.md"
        page.write_text(report.markdown(results, chart.name, report.kept_sections(page)))
    shown = f", chart: {chart.relative_to(ROOT)}" if drawn and drawn.returncode == 0 else ""
    page_shown = f", {data.with_suffix('.md').relative_to(ROOT)}" if partial else ""
    print(f"\nresults: {data.relative_to(ROOT)}{page_shown}{shown}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every server was stopped on the way out (each start sits in a try/finally).
        print("\ninterrupted; all benchmark servers stopped", file=sys.stderr)
        sys.exit(130)
