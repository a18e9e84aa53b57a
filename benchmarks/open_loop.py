"""Open-loop HTTP/1.1 load: POSTs at a fixed arrival rate, whatever the server answers.

wrk is closed-loop: each connection sends again only once answered, so it never offers more than
the server takes. Here request i of a phase is due at the phase's start + i / rate, phase after
phase on the same connections. A due request goes out on an idle keep-alive connection, or waits
in a client-side queue while every connection is busy; its latency counts from when it was due,
so time spent waiting at the client counts too (no coordinated omission).

Usage (with the project venv; the runner pins it with `taskset -c 1`):
  python benchmarks/open_loop.py --port PORT --path /v2/models/iris/infer --body FILE \
      --phase 3000:10 --phase 12000:10 --phase 3000:10 [--connections 256]
Prints one `OPENLOOP {...}` line: per phase and per second of due time, the requests offered,
answered 200 (admitted), 503 (shed), anything else, lost; admitted p50/p99; the client's
queue and lateness. Only 127.0.0.1 is ever called; it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from time import perf_counter
from typing import Any, cast

HOST = "127.0.0.1"
TICK = 0.001
"""Seconds between pacing ticks: the finest timer uvloop has (shorter ones do not sleep)."""
SLOT = 0.1
"""Latencies are kept per 100 ms of due time, so the first second after a change has detail."""
DRAIN = 10.0
"""Seconds to wait for answers after the last phase; requests still unanswered count as lost."""


def percentile(sorted_values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time, parsing just the status line,
    Content-Length and (for 503) Retry-After."""

    def __init__(self, load: OpenLoop) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.due: float | None = None
        self.buffer = b""
        self.status = 0
        self.end = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            if self.end < 0:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    self.buffer = buffer
                    return
                head = buffer[:head_end].lower()
                self.status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    # Not what modelport sends; drop the connection rather than misparse.
                    self.buffer = b""
                    self.load.odd_responses += 1
                    assert self.transport is not None
                    self.transport.close()
                    return
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                if self.status == 503 and b"\r\nretry-after:" not in head:
                    self.load.shed_without_retry_after += 1
                self.end = head_end + 4 + length
            if len(buffer) < self.end:
                self.buffer = buffer
                return
            buffer = buffer[self.end :]
            self.end = -1
            due, self.due = self.due, None
            if due is not None:
                self.load.answered(self, due, self.status)
            if not buffer:
                self.buffer = b""
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.load.lost(self)


class OpenLoop:
    """The pacer, the connection pool, the client-side queue and the per-slot tallies."""

    def __init__(self, port: int, path: str, body: bytes, connections: int) -> None:
        self.port, self.connections = port, connections
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.idle: deque[Connection] = deque()
        self.busy: set[Connection] = set()
        self.waiting: deque[float] = deque()
        self.start = 0.0
        self.slots = 0
        self.offered: list[int] = []
        self.ok: list[list[float]] = []
        self.shed: list[int] = []
        self.other: list[int] = []
        self.errors: list[int] = []
        self.backlog: list[int] = []
        self.lag: list[float] = []
        self.done: list[int] = []
        """Answers per slot of the time they arrived (the server's answer rate)."""
        self.reconnects = 0
        self.refused = 0
        self.odd_responses = 0
        self.shed_without_retry_after = 0
        self.statuses: dict[int, int] = {}
        self.closing = False

    def slot(self, due: float) -> int:
        return min(self.slots - 1, max(0, int((due - self.start) / SLOT + 1e-9)))

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(self), HOST, self.port)
        self.ready(conn)

    def ready(self, conn: Connection) -> None:
        """An idle connection: give it the oldest waiting request, else park it."""
        if self.waiting and not self.closing:
            self.busy.add(conn)
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)

    def dispatch(self, due: float) -> None:
        self.offered[self.slot(due)] += 1
        if self.idle:
            # First in, first out: every connection is used often, so none idles into the
            # server's keep-alive timeout.
            conn = self.idle.popleft()
            self.busy.add(conn)
            conn.send(due)
        else:
            self.waiting.append(due)

    def answered(self, conn: Connection, due: float, status: int) -> None:
        now = perf_counter()
        index = self.slot(due)
        arrived = int((now - self.start) / SLOT)
        if arrived < self.slots:
            self.done[arrived] += 1
        if status == 200:
            self.ok[index].append(now - due)
        elif status == 503:
            self.shed[index] += 1
        else:
            self.other[index] += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.busy.discard(conn)
        self.ready(conn)

    def lost(self, conn: Connection) -> None:
        """A closed connection: its request (if any) is lost; a new one takes its place."""
        if conn.due is not None:
            self.errors[self.slot(conn.due)] += 1
            conn.due = None
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if not self.closing:
            self.reconnects += 1
            asyncio.get_running_loop().create_task(self.reconnect())

    async def reconnect(self) -> None:
        """Replace a closed connection; a server that refuses counts once and gets no retry."""
        try:
            await self.connect()
        except OSError:
            self.refused += 1

    async def run(self, phases: list[tuple[float, float]]) -> dict[str, Any]:
        """Open the connections, offer each (rate, seconds) phase in turn, await the answers."""
        # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds.
        for _ in range(self.connections):
            await self.connect()
        total = sum(seconds for _, seconds in phases)
        self.slots = max(1, round(total / SLOT))
        self.offered, self.shed, self.other, self.errors, self.backlog, self.done = (
            [0] * self.slots for _ in range(6)
        )
        self.ok = [[] for _ in range(self.slots)]
        self.lag = [0.0] * self.slots
        cpu_before = _cpu_seconds()
        self.start = begin = perf_counter()
        # Wall-clock time, so another process can line its own samples up with the phases.
        started_unix = time.time()
        for rate, seconds in phases:
            count, sent = int(rate * seconds), 0
            while sent < count:
                now = perf_counter()
                upto = min(count, int((now - begin) * rate) + 1)
                if sent < upto:
                    index = self.slot(begin + sent / rate)
                    # How late this tick sends its first due request: the client's own delay.
                    self.lag[index] = max(self.lag[index], now - (begin + sent / rate))
                while sent < upto:
                    self.dispatch(begin + sent / rate)
                    sent += 1
                index = self.slot(now)
                self.backlog[index] = max(self.backlog[index], len(self.waiting))
                await asyncio.sleep(TICK)
            begin += seconds
        cpu = _cpu_seconds() - cpu_before
        wall = perf_counter() - self.start
        deadline = perf_counter() + DRAIN
        while (self.busy or self.waiting) and perf_counter() < deadline:
            await asyncio.sleep(0.01)
        self.closing = True
        unanswered = len(self.waiting) + len(self.busy)
        for due in self.waiting:
            self.errors[self.slot(due)] += 1
        for conn in list(self.busy) + list(self.idle):
            if conn.due is not None:
                self.errors[self.slot(conn.due)] += 1
                conn.due = None
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        return {
            "connections": self.connections,
            "started_unix": started_unix,
            "client_cpu": cpu / wall if wall else 0.0,
            "reconnects": self.reconnects,
            "refused": self.refused,
            "unanswered": unanswered,
            "odd_responses": self.odd_responses,
            "shed_without_retry_after": self.shed_without_retry_after,
            "other_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "phases": self.tally(phases),
        }

    def tally(self, phases: list[tuple[float, float]]) -> list[dict[str, Any]]:
        """Per phase: totals, admitted p50/p99, one row per second, and the admitted p99 of
        every 100 ms (how fast latency follows a change of load)."""
        out = []
        first = 0
        per = round(1 / SLOT)
        for rate, seconds in phases:
            last = min(self.slots, first + round(seconds / SLOT))
            whole = self.window(range(first, last))
            whole["rate"], whole["seconds"] = rate, seconds
            whole["per_second"] = [
                self.window(range(start, min(last, start + per)))
                for start in range(first, last, per)
            ]
            whole["p99_ms_by_100ms"] = [
                self.window(range(i, i + 1))["p99_ms"] for i in range(first, last)
            ]
            out.append(whole)
            first = last
        return out

    def window(self, slots: range) -> dict[str, Any]:
        latencies = sorted(x for i in slots for x in self.ok[i])
        span = len(slots) * SLOT
        p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        return {
            "offered": sum(self.offered[i] for i in slots),
            "ok": len(latencies),
            "shed": sum(self.shed[i] for i in slots),
            "other": sum(self.other[i] for i in slots),
            "errors": sum(self.errors[i] for i in slots),
            "admitted_rps": len(latencies) / span if span else 0.0,
            "answered_rps": sum(self.done[i] for i in slots) / span if span else 0.0,
            "p50_ms": None if p50 is None else p50 * 1000,
            "p99_ms": None if p99 is None else p99 * 1000,
            "backlog_max": max((self.backlog[i] for i in slots), default=0),
            "lag_ms_max": max((self.lag[i] for i in slots), default=0.0) * 1000,
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    port: int,
    path: str,
    body_file: Path,
    phases: list[tuple[float, float]],
    cpu: str,
    connections: int = 256,
) -> dict[str, Any]:
    """Run this script pinned to `cpu` against 127.0.0.1:port; its figures, or {"error": ...}."""
    argv = ["taskset", "-c", cpu, sys.executable, __file__, "--port", str(port), "--path", path]
    argv += ["--body", str(body_file), "--connections", str(connections)]
    for rate, seconds in phases:
        argv += ["--phase", f"{rate:.0f}:{seconds:g}"]
    limit = sum(s for _, s in phases) + DRAIN + 60
    done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("OPENLOOP "):
            result: dict[str, Any] = json.loads(line[len("OPENLOOP ") :])
            return result
    return {"error": f"open-loop load gave no figures: {done.stderr.strip()[-300:]}"}


def phase(text: str) -> tuple[float, float]:
    rate, _, seconds = text.partition(":")
    if float(rate) <= 0 or float(seconds) <= 0:
        raise argparse.ArgumentTypeError("a phase is RATE:SECONDS, both positive")
    return float(rate), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", type=Path, required=True, help="the JSON request body file")
    parser.add_argument("--phase", type=phase, action="append", required=True, help="RATE:SECONDS")
    parser.add_argument("--connections", type=int, default=256)
    args = parser.parse_args()
    load = OpenLoop(args.port, args.path, args.body.read_bytes(), args.connections)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    started = perf_counter()
    result = runner(load.run(args.phase))
    result["wall_s"] = perf_counter() - started
    print("OPENLOOP " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
