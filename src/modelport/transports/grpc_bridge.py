"""From gRPC's threads to the event loop: coroutines handed over, answers waited for.

The gRPC server runs its handlers in threads (grpcio's synchronous server, which costs far less
per call than grpc.aio), while the dataplane, its batchers, the guard and the telemetry live on
the worker's event loop, shared with REST. A handler thread hands its coroutine over with
`submit` and blocks on the returned `Handoff`; the loop is woken once for everything queued
since its last wake-up, not once per call, so under load many calls cross for one wake-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    """One coroutine handed to the loop: wait for its result in the thread that handed it."""

    __slots__ = ("_coroutine", "_done", "_error", "_loop", "_result", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> None:
        self._loop = loop
        self._coroutine: Coroutine[Any, Any, T] | None = coroutine
        self._done = threading.Lock()
        self._done.acquire()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._task: asyncio.Task[T] | None = None

    def result(self) -> T:
        """Block until the coroutine has finished; its result, or raise what it raised."""
        self._done.acquire()
        self._done.release()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def cancel(self) -> None:
        """Cancel the coroutine if it is still running (from any thread); `result` then
        raises CancelledError. Once it has finished, this costs the loop nothing."""
        if self._done.locked() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        elif self._coroutine is not None:
            # Not started yet: it never will be.
            self._coroutine.close()
            self._coroutine = None
            self._finish(None, asyncio.CancelledError())

    def _start(self) -> None:
        coroutine = self._coroutine
        if coroutine is None:
            return
        self._coroutine = None
        task = self._task = self._loop.create_task(coroutine)
        task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self._finish(None, asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self._finish(None, error)
        else:
            self._finish(task.result(), None)

    def _finish(self, result: T | None, error: BaseException | None) -> None:
        self._result = result
        self._error = error
        self._done.release()


class LoopBridge:
    """Hands coroutines from other threads to one event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[Handoff[Any]] = deque()
        self._woken = False

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Handoff[T]:
        """Start `coroutine` on the loop soon; never call from the loop's own thread."""
        handoff = Handoff(self._loop, coroutine)
        self._queue.append(handoff)
        # A wake-up already asked for takes this one too: `_start_queued` clears the flag
        # before it empties the queue, so nothing appended is left behind.
        if not self._woken:
            self._woken = True
            self._loop.call_soon_threadsafe(self._start_queued)
        return handoff

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """`submit`, then wait for the result."""
        return self.submit(coroutine).result()

    def _start_queued(self) -> None:
        self._woken = False
        queue = self._queue
        while queue:
            queue.popleft()._start()
