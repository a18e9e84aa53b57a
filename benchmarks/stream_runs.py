"""One measured consumer run of the stream benchmark: start it pinned, watch, stop, check.

A consumer (`modelport stream`, a raw loop, MLServer) runs pinned to SERVER_CPU in a session
of its own, started after its messages are in the source. The runner polls its progress every
POLL seconds (messages acknowledged by its group, or answers seen in the sink), stops it with
SIGTERM once all COUNT are done (or when it makes no progress for STALL seconds, or none at
all within START_DEADLINE), then reads the sink back and checks it (stream_data.check): the
figure is answers per second by the sink's own timestamps. CPU time is sampled when the first
messages are done and at the end, for the consumer's CPU microseconds per message (start-up
excluded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from servers import SERVER_CPU, Server
from stream_data import Answer, check

POLL = 0.1
STALL = 30.0
"""Seconds without progress after which a run is stopped and reported as stalled."""
START_DEADLINE = 120.0
"""Seconds a consumer may take to do its first messages (start-up, a Kafka group's join)."""


def watch(server: Server, progress: Callable[[], int], count: int) -> dict[str, Any]:
    """Poll `progress()` until it reaches `count`, the process exits, or it stalls."""
    changed = time.perf_counter()
    done, first = 0, None
    error = ""
    while True:
        now_done = progress()
        now = time.perf_counter()
        if now_done != done:
            done, changed = now_done, now
        if first is None and done > 0:
            first = (done, server.cpu_seconds(), now)
        if done >= count:
            break
        if server.proc.poll() is not None:
            error = f"{server.name} exited with status {server.proc.returncode}; see {server.log}"
            break
        limit = STALL if first is not None else START_DEADLINE
        if now - changed > limit:
            error = f"stalled at {done:,} of {count:,} messages for {limit:.0f} s; see {server.log}"
            break
        time.sleep(POLL)
    result: dict[str, Any] = {"done": done, "error": error, "cpu_us_per_msg": None}
    if first is not None and done > first[0]:
        cpu = server.cpu_seconds() - first[1]
        result["cpu_us_per_msg"] = cpu / (done - first[0]) * 1e6
        result["cpu_share"] = cpu / (time.perf_counter() - first[2])
    return result


def summary(log: Path) -> dict[str, Any] | None:
    """The last `{"stopped": {...}}` line a consumer printed, if any."""
    found = None
    for line in log.read_bytes().splitlines():
        if line.startswith(b'{"stopped"'):
            found = orjson.loads(line)["stopped"]
    return found


def consume(
    label: str,
    argv: list[str],
    log: Path,
    cwd: Path,
    progress: Callable[[], int],
    answers: Callable[[], list[Answer]],
    count: int,
    kind: str,
    expected: np.ndarray[Any, Any] | None,
) -> dict[str, Any]:
    """One run of the consumer `argv` over `count` messages already in its source."""
    print(f"{label}: {count:,} messages ...", flush=True)
    server = Server(label, argv, 0, log, cwd, cpu=SERVER_CPU)
    try:
        watched = watch(server, progress, count)
    finally:
        server.stop()
    result: dict[str, Any] = {"label": label, "messages": count, **watched}
    result["summary"] = summary(log)
    result |= check(answers(), count, kind, expected)
    if result["error"]:
        print(f"  FAILED: {result['error']}", flush=True)
    else:
        rate = result["messages_per_s"] or 0
        print(
            f"  {rate:,.0f} msg/s; {result['answers']:,} answers, {result['missing']:,} missing,"
            f" {result['duplicated']:,} duplicated",
            flush=True,
        )
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median messages/s among `runs`, with every run's rate in `runs_per_s`;
    a failed run (an error, or answers missing) if there is one: its failure is the figure."""
    failed = [r for r in runs if r["error"] or r["missing"] or not r["messages_per_s"]]
    rates = [round(r["messages_per_s"] or 0) for r in runs]
    if failed:
        chosen = dict(failed[0])
    else:
        ordered = sorted(runs, key=lambda r: r["messages_per_s"])
        chosen = dict(ordered[len(ordered) // 2])
    chosen["runs_per_s"] = rates
    return chosen
