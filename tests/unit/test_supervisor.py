"""The supervisor with real forked workers: it starts N, replaces one that dies, stops them all.

Each scenario runs in a forked child of the test process, in a process group of its own: the
supervisor installs signal handlers and reaps whichever child exits (`os.wait()`), and it must
not do either to the test runner. Each worker writes its pid on a pipe as it starts, so the
scenario learns of every start by reading, never by sleeping or polling.

The scenario asks the supervisor to stop from the supervisor's own main thread (in its
on_ready and on_exit callbacks), where `signal.raise_signal` runs the handler at once. A
SIGTERM sent from another thread could land just before the main thread blocks in
`os.wait()`; its handler would then wait for the next worker to exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from modelport import supervisor
from modelport.errors import InternalError
from modelport.supervisor import Supervisor, report_ready


class Workers:
    """What a scenario sees of the workers: each one's pid as it starts."""

    def __init__(self, fd: int) -> None:
        self._pids = os.fdopen(fd, "r")
        self.ready = threading.Event()
        """Set once the supervisor has called on_ready."""
        self.started: list[int] = []
        self.notes: dict[str, Any] = {}
        """What the scenario observed, handed back to the test with the outcome."""

    def next_started(self) -> int:
        """Block until the next worker has started and return its pid."""
        pid = int(self._pids.readline())
        self.started.append(pid)
        return pid

    def stop(self) -> None:
        """Stop the supervisor as `kill -TERM` would; call it from on_ready or on_exit only."""
        signal.raise_signal(signal.SIGTERM)


def supervise(
    count: int,
    on_ready: Callable[[Workers], None] | None = None,
    on_exit: Callable[[Workers, int], None] | None = None,
    drive: Callable[[Workers], None] | None = None,
    start: bool = True,
    follow: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run a Supervisor of `count` workers in a forked child and return what it saw.

    `on_ready` and `on_exit` run in the supervisor's callbacks; `drive` runs on a thread of
    its own from the start. The outcome holds `status` (run's return value) or `raised` (its
    error message), the pids `started` and `exited` (in on_exit's order), `ready` (whether
    on_ready was called), `alive` (started pids that still exist once run has returned) and
    the scenario's `notes`. `start=False` makes every worker fail before it reports ready.
    `follow` is the supervisor's, called every 50 ms.
    """
    result_r, result_w = os.pipe()
    child = os.fork()
    if child == 0:  # the scenario's own process
        code = 1
        try:
            os.close(result_r)
            os.setpgid(0, 0)
            outcome = _run_here(count, on_ready, on_exit, drive, start, follow, result_w)
            os.write(result_w, json.dumps(outcome).encode())
            code = 0
        except BaseException:
            os.write(result_w, json.dumps({"error": traceback.format_exc()}).encode())
        finally:
            os._exit(code)
    os.close(result_w)
    try:
        with os.fdopen(result_r) as results:
            outcome: dict[str, Any] = json.loads(results.read())
    finally:
        # Whatever is left of the scenario (only after a failure) goes with its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert "error" not in outcome, outcome["error"]
    return outcome


def _run_here(
    count: int,
    on_ready: Callable[[Workers], None] | None,
    on_exit: Callable[[Workers, int], None] | None,
    drive: Callable[[Workers], None] | None,
    start: bool,
    follow: Callable[[], bool] | None,
    result_fd: int,
) -> dict[str, Any]:
    pids_r, pids_w = os.pipe()

    def worker(ready_fd: int) -> None:
        # The test reads the result pipe to its end: no worker may hold it open.
        os.close(result_fd)
        os.write(pids_w, f"{os.getpid()}\n".encode())
        if not start:
            raise RuntimeError("this worker cannot start")
        report_ready(ready_fd)
        while True:  # until SIGTERM, whose default action ends the worker
            signal.pause()

    workers = Workers(pids_r)
    exited: list[int] = []

    def ready() -> None:
        workers.ready.set()
        if on_ready is not None:
            on_ready(workers)

    def gone(pid: int) -> None:
        exited.append(pid)
        if on_exit is not None:
            on_exit(workers, pid)

    driver = None if drive is None else threading.Thread(target=drive, args=(workers,))
    if driver is not None:
        driver.start()
    outcome: dict[str, Any] = {}
    try:
        outcome["status"] = Supervisor(count, worker, gone, follow, follow_every=0.05).run(ready)
    except InternalError as e:
        outcome["raised"] = str(e)
    if driver is not None:
        driver.join()
    return outcome | {
        "started": workers.started,
        "exited": exited,
        "ready": workers.ready.is_set(),
        "alive": [pid for pid in workers.started if _exists(pid)],
        "notes": workers.notes,
    }


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_starts_the_workers_and_stops_them_all() -> None:
    def on_ready(workers: Workers) -> None:
        pids = [workers.next_started() for _ in range(3)]
        workers.notes["running"] = [_exists(pid) for pid in pids]
        workers.stop()

    outcome = supervise(3, on_ready=on_ready)
    assert outcome["status"] == 0
    assert len(set(outcome["started"])) == 3
    assert outcome["notes"]["running"] == [True, True, True]
    assert sorted(outcome["exited"]) == sorted(outcome["started"])
    assert outcome["alive"] == []


def test_a_worker_that_dies_is_replaced() -> None:
    def on_ready(workers: Workers) -> None:
        first, _ = workers.next_started(), workers.next_started()
        os.kill(first, signal.SIGKILL)

    def on_exit(workers: Workers, pid: int) -> None:
        first, second = workers.started[:2]
        if pid == first:
            # Told before the replacement starts; the second death comes after it.
            os.kill(second, signal.SIGKILL)
        elif pid == second:
            workers.notes["replacement"] = workers.next_started()
            workers.stop()

    outcome = supervise(2, on_ready=on_ready, on_exit=on_exit)
    assert outcome["status"] == 0
    first, second, replacement = outcome["started"]
    assert outcome["notes"]["replacement"] == replacement
    assert len({first, second, replacement}) == 3
    # The second worker died while the supervisor was stopping: not replaced.
    assert outcome["exited"] == [first, second, replacement]
    assert outcome["alive"] == []


def test_workers_that_keep_dying_make_it_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    deaths = supervisor.CRASH_LIMIT + 1
    # Every death falls in the crash window by construction, however slow the machine.
    monkeypatch.setattr(supervisor, "CRASH_WINDOW", float("inf"))

    def drive(workers: Workers) -> None:
        workers.ready.wait()
        for _ in range(deaths):
            os.kill(workers.next_started(), signal.SIGKILL)

    outcome = supervise(1, drive=drive)
    assert outcome["status"] == 1
    assert len(set(outcome["started"])) == deaths
    assert outcome["exited"] == outcome["started"]
    assert outcome["alive"] == []


def test_a_worker_that_fails_to_start_is_an_error() -> None:
    outcome = supervise(1, drive=Workers.next_started, start=False)
    (pid,) = outcome["started"]
    started = f"worker {pid} exited while starting (exited with status 1)"
    assert outcome["raised"].startswith(started)
    assert outcome["ready"] is False
    assert outcome["alive"] == []


def test_a_change_followed_replaces_every_worker_new_before_old() -> None:
    calls: list[bool] = []

    def follow() -> bool:
        calls.append(not calls)  # what is served changes once, at the first call
        return calls[-1]

    def on_ready(workers: Workers) -> None:
        workers.notes["first"] = [workers.next_started(), workers.next_started()]

    def on_exit(workers: Workers, pid: int) -> None:
        if pid not in workers.notes["first"]:
            return  # a replacement, stopped with the supervisor
        # Each old worker is told to stop only once its replacement serves.
        replacement = workers.next_started()
        serving = [p for p in workers.started if p != pid and _exists(p)]
        workers.notes.setdefault("serving_at_exit", []).append(len(serving))
        workers.notes.setdefault("replacements", []).append(replacement)
        if len(workers.notes["replacements"]) == 2:
            workers.notes["follows"] = len(calls)
            workers.stop()

    outcome = supervise(2, on_ready=on_ready, on_exit=on_exit, follow=follow)
    assert outcome["status"] == 0
    first, replacements = outcome["notes"]["first"], outcome["notes"]["replacements"]
    assert outcome["exited"][:2] == sorted(first)
    assert len(set(first + replacements)) == 4
    assert outcome["notes"]["serving_at_exit"] == [2, 2]
    assert outcome["notes"]["follows"] >= 1
    assert outcome["alive"] == []
