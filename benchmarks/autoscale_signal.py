"""The autoscaling signal: requests in flight and CPU against p99 as open-loop load rises.

`--only signal` of the runner (`make bench ONLY=signal`). For each model (iris, the heavy
forest), ROUNDS times, on a fresh server each time: `modelport serve` with its defaults and
/metrics on a port of its own (as in deploy/kubernetes/base), pinned to CPU 0; a closed-loop wrk
run (b1 c256, DURATION seconds, after a warm-up) gives the capacity R; then open_loop.py, pinned
to CPU 1, offers FACTORS x R requests a second, DURATION seconds each, phase after phase
without a pause. Meanwhile a sampler thread, also on CPU 1, scrapes the metrics port every
SAMPLE seconds for `modelport_requests_in_flight` (summed over model and version) and reads the
server's CPU time from /proc. Per phase: offered and answered rates, p50/p99 of the 200s (from
when each request was due), in-flight median, mean and p90 of the samples, and CPU as a share
of one core (the HPA's utilisation, with the base Deployment's request of 1 CPU). The JSON
keeps every sample (seconds from the first phase's start, in flight, server CPU seconds).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import open_loop
from scenarios import Load, Variant
from servers import HOST, LOAD_CPU, Server, ServerFailed, free_port

MODELS = ("iris", "heavy")
FACTORS = (0.10, 0.25, 0.50, 0.70, 0.85, 0.95, 1.05, 1.20)
"""The open-loop phases, as shares of the closed-loop capacity R, in this order."""
CONNECTIONS = 256
"""Keep-alive connections of the open-loop load, so server-side in-flight tops out here; a
request due while all are busy waits at the client, and its latency counts that wait."""
CAPACITY = Load("iris", 1, CONNECTIONS, tag="capacity")
"""The closed-loop wrk load whose req/s is taken as the capacity (its model is replaced): as
many connections as the open-loop load, so batches can grow as large in both. (With 64, the
forest's open-loop load still had flat p99 at 1.2 times the wrk rate.)"""
SAMPLE = 0.2
"""Seconds between scrapes of /metrics."""
GAUGE = "modelport_requests_in_flight"
SERVER = "modelport, defaults, --metrics-port"


class Runner(Protocol):
    """What the sweep needs of the benchmark runner (run.Bench)."""

    rounds: int
    duration: int

    def serve(self, variant: Variant, model: str) -> contextlib.AbstractContextManager[Server]:
        """A ready server for the variant, stopped on exit."""

    def sustainable_rate(
        self, port: int, path: str, load: Load, out: dict[str, Any]
    ) -> float | None:
        """req/s of a closed-loop wrk run after its warm-up, in out["closed"]; None when it
        failed (out["failed"] says why)."""

    def body_file(self, model: str, rows: int) -> Path:
        """The request body file of `rows` rows for `model`."""


def gauge_total(page: str, name: str = GAUGE) -> float:
    """The sum of every series of gauge `name` on a Prometheus text page (0 when absent)."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far, in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Sampler:
    """A thread on LOAD_CPU scraping the in-flight gauge and the server's CPU time every SAMPLE
    seconds until stopped: (unix time, in flight, CPU seconds) per sample."""

    def __init__(self, metrics_port: int, pids: list[int]) -> None:
        self.port, self.pids = metrics_port, pids
        self.samples: list[tuple[float, float, float]] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # Pins this thread only (Linux affinity is per thread), off the server's core.
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                conn.request("GET", "/metrics")
                response = conn.getresponse()
                page = response.read().decode()
                if response.status != 200:
                    raise OSError(f"/metrics answered {response.status}")
                self.samples.append((time.time(), gauge_total(page), cpu_seconds(self.pids)))
            except (OSError, http.client.HTTPException, ValueError):
                self.failed += 1
                conn.close()
            next_at += SAMPLE
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()


def quantile(values: list[float], share: float) -> float | None:
    """Nearest-rank quantile (None when empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


def phase_rows(
    load: dict[str, Any], samples: list[tuple[float, float, float]], capacity: float
) -> list[dict[str, Any]]:
    """One row per open-loop phase: its load figures and the samples taken while it ran."""
    rows = []
    begin = load["started_unix"]
    for factor, ph in zip(FACTORS, load["phases"], strict=True):
        end = begin + ph["seconds"]
        inside = [s for s in samples if begin <= s[0] < end]
        begin = end
        counts = [s[1] for s in inside]
        cpu = None
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            cpu = (inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0])
        rows.append(
            {
                "factor": factor,
                "offered_rps": ph["offered"] / ph["seconds"],
                "answered_rps": ph["answered_rps"],
                "ok": ph["ok"],
                "not_ok": ph["shed"] + ph["other"] + ph["errors"],
                "p50_ms": ph["p50_ms"],
                "p99_ms": ph["p99_ms"],
                "in_flight_median": statistics.median(counts) if counts else None,
                # What the adapter's avg_over_time comes nearest to.
                "in_flight_mean": statistics.fmean(counts) if counts else None,
                "in_flight_p90": quantile(counts, 0.90),
                "cpu": cpu,
                "samples": len(inside),
                "client_backlog_max": ph["backlog_max"],
                "capacity_rps": capacity,
            }
        )
    return rows


def sweep(bench: Runner, model: str, round_no: int) -> dict[str, Any]:
    """One fresh server for `model`: its capacity, then the rising open-loop phases."""
    metrics_port = free_port()
    variant = Variant(SERVER, "modelport", model, ("--metrics-port", str(metrics_port)))
    path = f"/v2/models/{model}/infer"
    closed = Load(model, CAPACITY.rows, CAPACITY.connections, tag=CAPACITY.tag)
    out: dict[str, Any] = {"model": model, "round": round_no, "failed": "", "phases": []}
    print(f"signal: round {round_no}/{bench.rounds}, {SERVER} serving {model}", flush=True)
    try:
        with bench.serve(variant, model) as server:
            rate = bench.sustainable_rate(server.port, path, closed, out)
            if rate is None:
                return out
            capacity = out["capacity_rps"] = rate
            print(f"  capacity (wrk {closed.name}, closed loop): {capacity:,.0f} req/s", flush=True)
            phases = [(capacity * f, float(bench.duration)) for f in FACTORS]
            with Sampler(metrics_port, server.pids()) as sampler:
                load = open_loop.run(
                    server.port, path, bench.body_file(model, 1), phases, LOAD_CPU, CONNECTIONS
                )
            out["scrape_failures"] = sampler.failed
    except ServerFailed as exc:
        out["failed"] = str(exc)
        print(f"  FAILED: {exc}", flush=True)
        return out
    if "error" in load:
        out["failed"] = load["error"]
        return out
    out["client_cpu"] = load["client_cpu"]
    out["phases"] = phase_rows(load, sampler.samples, capacity)
    start = load["started_unix"]
    out["samples"] = [[round(t - start, 3), n, round(c, 3)] for t, n, c in sampler.samples]
    for row in out["phases"]:
        print(f"  {brief(row)}", flush=True)
    return out


def run(bench: Runner) -> dict[str, Any]:
    """Every model's sweep, ROUNDS times each (models alternating round by round)."""
    sweeps = [
        sweep(bench, model, round_no) for round_no in range(1, bench.rounds + 1) for model in MODELS
    ]
    return {
        "server": SERVER,
        "factors": list(FACTORS),
        "connections": CONNECTIONS,
        "phase_s": bench.duration,
        "sample_s": SAMPLE,
        "sweeps": sweeps,
    }


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def brief(row: dict[str, Any]) -> str:
    """One phase as a line of the runner's output."""
    return (
        f"{row['factor']:4.0%}  offered {row['offered_rps']:7,.0f}/s  answered "
        f"{row['answered_rps']:7,.0f}/s  p50 {_num(row['p50_ms'], '7.1f')} ms  p99 "
        f"{_num(row['p99_ms'], '7.1f')} ms  in flight {_num(row['in_flight_median'], '5.0f')} "
        f"(p90 {_num(row['in_flight_p90'], '.0f')})  CPU {_num(row['cpu'], '4.0%')}"
    )


def table_rows(signal: dict[str, Any] | None) -> list[list[str]]:
    """Header plus one row per model and load step; each cell holds every round, " / "."""
    header = [
        "model",
        "load (x R)",
        "offered req/s",
        "answered req/s",
        "p50 ms",
        "p99 ms",
        "in flight, median",
        "in flight, mean",
        "in flight, p90",
        "CPU (1 core)",
    ]
    rows = [header]
    if not signal:
        return rows
    columns = (
        ("offered_rps", ",.0f"),
        ("answered_rps", ",.0f"),
        ("p50_ms", ".1f"),
        ("p99_ms", ".1f"),
        ("in_flight_median", ".0f"),
        ("in_flight_mean", ".0f"),
        ("in_flight_p90", ".0f"),
        ("cpu", ".0%"),
    )
    for model in MODELS:
        done = [s for s in signal["sweeps"] if s["model"] == model and s["phases"]]
        if not done:
            continue
        capacity = " / ".join(f"{s['capacity_rps']:,.0f}" for s in done)
        rows.append([f"{model} (R {capacity})", *[""] * (len(header) - 1)])
        for i, factor in enumerate(FACTORS):
            cells = [
                " / ".join(_num(s["phases"][i][key], fmt) for s in done) for key, fmt in columns
            ]
            rows.append(["", f"{factor:.2f}", *cells])
    return rows


def failures(signal: dict[str, Any] | None) -> list[str]:
    """Why sweeps failed, and phases whose requests were not all answered 200."""
    out = []
    for s in (signal or {}).get("sweeps", []):
        if s["failed"]:
            out.append(f"{s['model']} round {s['round']}: {s['failed']}")
        bad = sum(row["not_ok"] for row in s["phases"])
        if bad:
            out.append(f"{s['model']} round {s['round']}: {bad} requests not answered 200")
        if s.get("scrape_failures"):
            out.append(f"{s['model']} round {s['round']}: {s['scrape_failures']} failed scrapes")
    return out
