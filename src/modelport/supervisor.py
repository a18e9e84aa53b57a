"""Pre-fork worker processes: start N, replace any that die, stop them all on SIGTERM/SIGINT.

Models are loaded in the parent before it forks, so every worker shares their memory
copy-on-write. Each worker reports on a pipe once it accepts connections.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

from modelport.errors import InternalError

log = logging.getLogger("modelport.supervisor")

Worker = Callable[[int], None]
"""Runs one worker until it is told to stop; given the fd on which to report readiness."""

START_TIMEOUT = 60.0
"""Seconds the workers have to report ready."""
CRASH_WINDOW = 10.0
CRASH_LIMIT = 5
"""More than CRASH_LIMIT deaths within CRASH_WINDOW seconds means a crash loop: give up."""


def report_ready(fd: int) -> None:
    """Called by a worker once it accepts connections."""
    os.write(fd, b"\x01")


class Supervisor:
    """Forks `count` workers running `worker` and keeps that many alive until stopped."""

    def __init__(
        self, count: int, worker: Worker, on_exit: Callable[[int], None] | None = None
    ) -> None:
        self._count = count
        self._worker = worker
        self._on_exit = on_exit
        """Told the pid of each worker that has exited (to forget its live metrics)."""
        self._children: dict[int, float] = {}
        self._stopping = False
        self._deaths: list[float] = []
        self._ready_r, self._ready_w = os.pipe()

    def run(self, on_ready: Callable[[], None]) -> int:
        """Start the workers, call `on_ready` once all accept, supervise; the exit status."""
        previous = {
            sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for _ in range(self._count):
                self._spawn()
            self._await_ready()
            on_ready()
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()
            os.close(self._ready_r)
            os.close(self._ready_w)

    def _spawn(self) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(self._ready_r)
                self._worker(self._ready_w)
                status = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                # Never return into the parent's code (its finally blocks, atexit hooks).
                os._exit(status)
        self._children[pid] = time.monotonic()
        log.info("started worker %d", pid)
        return pid

    def _await_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        ready = 0
        while ready < self._count:
            if self._stopping:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InternalError(f"workers did not start within {START_TIMEOUT:.0f} s")
            readable, _, _ = select.select([self._ready_r], [], [], min(remaining, 0.5))
            if readable:
                ready += len(os.read(self._ready_r, self._count - ready))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self._children.pop(pid, None)
                raise InternalError(
                    f"worker {pid} exited while starting ({_describe(status)}); see the log above"
                )

    def _supervise(self) -> int:
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = self._children.pop(pid, None)
            if self._on_exit is not None:
                self._on_exit(pid)
            if started is None or self._stopping:
                continue
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < CRASH_WINDOW] + [now]
            if len(self._deaths) > CRASH_LIMIT:
                log.error("workers keep dying (%d in %.0f s); stopping", CRASH_LIMIT, CRASH_WINDOW)
                self._stopping = True
                self._stop_all()
                return 1
            replacement = self._spawn()
            log.warning("worker %d %s; replaced by worker %d", pid, _describe(status), replacement)
        return 0

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info(
                "stopping %d worker(s) on %s", len(self._children), signal.Signals(signum).name
            )
        self._stopping = True
        for pid in list(self._children):
            _signal(pid, signal.SIGTERM)

    def _stop_all(self) -> None:
        """SIGTERM every worker still alive and reap them."""
        for pid in list(self._children):
            _signal(pid, signal.SIGTERM)
        for pid in list(self._children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._children.pop(pid, None)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
