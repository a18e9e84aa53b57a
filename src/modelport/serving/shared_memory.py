"""Memory and locks that every server process shares: made in the parent, before it forks.

With `--workers N` the numbers a user reads as per server (a caller's rate limit, a model's
queue bound, a drift window) must be counted by all workers together. They live in anonymous
shared mappings made before the fork: every worker inherits the same pages and writes to them
in place, with no copy and no message. A `ProcessLock` orders the writes that need it.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import time
from typing import Any

import numpy as np

_FORK = multiprocessing.get_context("fork")

STALE_SECONDS = 0.2
"""How long a lock may be held before `hold` checks whether its holder is still alive."""


def shared_buffer(nbytes: int) -> mmap.mmap:
    """`nbytes` of zeroed memory shared with every process forked after this call."""
    return mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def shared_array(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray[Any, Any]:
    """A zeroed numpy array in shared memory (see `shared_buffer`); not for object dtypes."""
    kind = np.dtype(dtype)
    if kind.hasobject:
        raise TypeError("shared arrays hold plain numbers or bytes, not Python objects")
    dims = (shape,) if isinstance(shape, int) else shape
    count = int(np.prod(dims, dtype=np.int64))
    return np.frombuffer(shared_buffer(count * kind.itemsize), dtype=kind, count=count).reshape(
        dims
    )


class ProcessLock:
    """A lock across processes that survives a holder killed while holding it.

    `hold` waits up to `timeout` seconds; past STALE_SECONDS it checks whether the holder's
    process still exists and, if it died (kill -9 in the middle of an update), releases the
    lock in its place. A caller that cannot get the lock in time is told so and skips its
    update, rather than stalling a request.
    """

    __slots__ = ("_holder", "_lock", "_recovery")

    def __init__(self) -> None:
        self._lock = _FORK.Lock()
        self._recovery = _FORK.Lock()
        """Held while a waiter checks for a dead holder, so only one takes its place."""
        self._holder = (ctypes.c_int64 * 1).from_buffer(shared_buffer(8))

    def hold(self, timeout: float = 1.0) -> Holding:
        """Hold the lock for the block; it gets False (not holding it) if it could not be had."""
        return Holding(self, timeout)

    def _acquire(self, timeout: float) -> bool:
        """Take the lock within `timeout` seconds, recording the holder; whether it was had."""
        if not (self._lock.acquire(timeout=min(timeout, STALE_SECONDS)) or self._wait(timeout)):
            return False
        self._holder[0] = os.getpid()
        return True

    def _release(self) -> None:
        self._holder[0] = 0
        self._lock.release()

    def _wait(self, timeout: float) -> bool:
        """Wait out the rest of `timeout`, taking the lock over from a holder that died."""
        deadline = time.monotonic() + max(timeout - STALE_SECONDS, 0.0)
        while True:
            if self._recovery.acquire(timeout=STALE_SECONDS):
                try:
                    if self._lock.acquire(block=False):
                        return True
                    holder = self._holder[0]
                    if holder and not _alive(holder):
                        # Killed while holding it: nobody would ever release it. Take it over.
                        return True
                finally:
                    self._recovery.release()
            if self._lock.acquire(timeout=STALE_SECONDS):
                return True
            if time.monotonic() >= deadline:
                return False


class Holding:
    """What `ProcessLock.hold` returns: the block gets whether it holds the lock.

    A class rather than a generator-based context manager: rate limits take the lock once per
    request, and the generator costs about 1 us more each time.
    """

    __slots__ = ("_held", "_lock", "_timeout")

    def __init__(self, lock: ProcessLock, timeout: float) -> None:
        self._lock = lock
        self._timeout = timeout
        self._held = False

    def __enter__(self) -> bool:
        self._held = self._lock._acquire(self._timeout)
        return self._held

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
            self._lock._release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
