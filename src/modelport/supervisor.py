"""Pre-fork worker processes: start N, replace any that die, stop them all on SIGTERM/SIGINT.

Models are loaded in the parent before it forks, so every worker shares their memory
copy-on-write. Each worker reports on a pipe once it accepts connections.

While the workers serve, the parent may be asked (`follow`) to bring what it holds in line
with the registry: when that changed what is served, it replaces the workers one at a time
with fresh forks of itself, so a version loaded while serving is shared like the ones loaded
at start. Each new worker is ready before an old one is told to stop, and the old one drains
its in-flight requests before it exits: the port never goes unserved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import time
from collections.abc import Callable
from types import FrameType

from modelport.errors import InternalError

log = logging.getLogger("modelport.supervisor")

Worker = Callable[[int], None]
"""Runs one worker until it is told to stop; given the fd on which to report readiness."""

Follow = Callable[[], bool]
"""Brings the parent in line with the registry; True when the workers must be replaced."""

START_TIMEOUT = 60.0
"""Seconds a worker has to report ready."""
CRASH_WINDOW = 10.0
CRASH_LIMIT = 5
"""More than CRASH_LIMIT deaths within CRASH_WINDOW seconds means a crash loop: give up."""
FOLLOW_SECONDS = 1.0
"""How often the parent calls `follow`."""
_PID = struct.Struct("=i")


def report_ready(fd: int) -> None:
    """Called by a worker once it accepts connections."""
    os.write(fd, _PID.pack(os.getpid()))


class Supervisor:
    """Forks `count` workers running `worker` and keeps that many alive until stopped.

    `on_exit` is told the pid of each worker that has exited (to forget its live metrics);
    `follow`, if given, is called every `follow_every` seconds in the parent.
    """

    def __init__(
        self,
        count: int,
        worker: Worker,
        on_exit: Callable[[int], None] | None = None,
        follow: Follow | None = None,
        follow_every: float = FOLLOW_SECONDS,
    ) -> None:
        self._count = count
        self._worker = worker
        self._on_exit = on_exit
        self._follow = follow
        self._follow_every = follow_every
        self._children: dict[int, float] = {}
        """pid -> when it started, for every worker alive (serving, starting or draining)."""
        self._serving: set[int] = set()
        """The workers that count towards `count`: not the ones told to drain and exit."""
        self._ready: set[int] = set()
        self._stopping = False
        self._gave_up = False
        """Workers kept dying: the exit status is 1."""
        self._stale = False
        """The parent followed a change that not every worker serves yet: replace them."""
        self._deaths: list[float] = []
        self._ready_r, self._ready_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        """SIGCHLD and the stop signals write here, so the parent wakes at once."""

    def run(self, on_ready: Callable[[], None]) -> int:
        """Start the workers, call `on_ready` once all accept, supervise; the exit status."""
        os.set_blocking(self._wake_w, False)
        previous = {
            sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            first = [self._spawn() for _ in range(self._count)]
            for pid in first:
                if not self._await_ready(pid, starting=True):
                    return 0  # stopped while starting
            on_ready()
            return self._supervise()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()
            for fd in (self._ready_r, self._ready_w, self._wake_r, self._wake_w):
                os.close(fd)

    def _spawn(self) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (self._ready_r, self._wake_r, self._wake_w):
                    os.close(fd)
                self._worker(self._ready_w)
                status = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                # Never return into the parent's code (its finally blocks, atexit hooks).
                os._exit(status)
        self._children[pid] = time.monotonic()
        self._serving.add(pid)
        log.info("started worker %d", pid)
        return pid

    def _await_ready(self, pid: int, *, starting: bool = False) -> bool:
        """Wait until worker `pid` reports ready: True; False if stopping meanwhile.

        A worker that exits first raises InternalError while `starting`; later (replacing
        workers), it is logged and False is returned, and the old workers keep serving.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while pid not in self._ready:
            if self._stopping:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                message = f"worker {pid} did not start within {START_TIMEOUT:.0f} s"
                if starting:
                    raise InternalError(message)
                log.error("%s; stopping it, the others keep serving", message)
                self._drain(pid)
                return False
            self._wait(min(remaining, 0.5))
            for gone, status in self._reap():
                message = f"worker {gone} exited while starting ({_describe(status)})"
                if starting:
                    raise InternalError(f"{message}; see the log above")
                if gone == pid:
                    log.error("%s; the workers that serve keep serving", message)
                    self._serving.discard(pid)
                    self._count_death()
                    return False
                self._replace(gone, status)
        return True

    def _supervise(self) -> int:
        next_follow = time.monotonic() + self._follow_every
        while self._children:
            if self._stopping:
                self._wait(0.5)
                self._reap()
                continue
            for pid, status in self._reap():
                self._replace(pid, status)
            if self._follow is not None and time.monotonic() >= next_follow:
                if self._followed() or self._stale:
                    self._stale = not self._replace_all()
                next_follow = time.monotonic() + self._follow_every
            timeout = max(0.0, next_follow - time.monotonic()) if self._follow else 1.0
            self._wait(timeout)
        return 1 if self._gave_up else 0

    def _followed(self) -> bool:
        assert self._follow is not None
        try:
            return self._follow()
        except Exception:
            log.exception("could not follow the registry; the workers keep serving")
            return False

    def _replace_all(self) -> bool:
        """Replace every serving worker by a fresh fork, one at a time, new before old.

        False when a new worker did not start (the old ones it would replace keep serving).
        """
        old = sorted(self._serving)
        log.info("replacing %d worker(s) to serve what the registry now says", len(old))
        for pid in old:
            if self._stopping:
                return True
            if pid not in self._serving:
                continue  # died meanwhile; its replacement was forked from the new state
            new = self._spawn()
            if not self._await_ready(new):
                return False
            self._drain(pid)
            log.info("worker %d replaced by worker %d", pid, new)
        return True

    def _drain(self, pid: int) -> None:
        """Tell worker `pid` to finish its requests and exit; it no longer counts as serving."""
        self._serving.discard(pid)
        _signal(pid, signal.SIGTERM)

    def _replace(self, pid: int, status: int) -> None:
        """Fork a replacement for serving worker `pid`, which exited, unless stopping."""
        if pid not in self._serving or self._stopping:
            return
        self._serving.discard(pid)
        if not self._count_death():
            return
        replacement = self._spawn()
        log.warning("worker %d %s; replaced by worker %d", pid, _describe(status), replacement)

    def _count_death(self) -> bool:
        """Count a worker's death; False (and the supervisor stops) when they keep dying."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < CRASH_WINDOW] + [now]
        if len(self._deaths) <= CRASH_LIMIT:
            return True
        log.error("workers keep dying (%d in %.0f s); stopping", CRASH_LIMIT, CRASH_WINDOW)
        self._stopping = self._gave_up = True
        for child in list(self._children):
            _signal(child, signal.SIGTERM)
        return False

    def _reap(self) -> list[tuple[int, int]]:
        """Collect every worker that has exited, without blocking: (pid, status) pairs."""
        gone = []
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                break
            if not pid:
                break
            if self._children.pop(pid, None) is None:
                continue
            self._ready.discard(pid)
            if self._on_exit is not None:
                self._on_exit(pid)
            gone.append((pid, status))
        # What is replaced here is dealt with by the caller; draining ones just leave.
        return [(pid, status) for pid, status in gone if pid in self._serving]

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal, a ready report or `timeout` seconds, whichever comes first."""
        readable, _, _ = select.select([self._wake_r, self._ready_r], [], [], timeout)
        if self._wake_r in readable:
            os.read(self._wake_r, 4096)
        if self._ready_r in readable:
            data = os.read(self._ready_r, _PID.size * 64)
            self._ready.update(p for (p,) in _PID.iter_unpack(data))

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
            if self._on_exit is not None:
                self._on_exit(pid)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD's handler: the wake-up fd is what matters (the default action is no signal)."""


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"
