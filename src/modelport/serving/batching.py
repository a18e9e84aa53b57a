"""Adaptive batching: concurrent requests for one model become one runtime call.

While a batch runs, new requests queue; when it finishes, everything queued (up to
`max_batch_size` rows) runs next as one call. A request that arrives when the model is idle
while no batch has had company lately runs at once, so one request in flight waits for nothing.
Under load batches grow by themselves. Within COMPANY_MEMORY of a batch that had company, the
next one may wait up to `max_batch_delay` to fill, but only while requests keep arriving: it
stops as soon as none came for twice the usual gap between arrivals. That is what lets
transports that hand over requests one at a time (gRPC) still batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from modelport.model_policy import DEFAULT_MAX_BATCH_DELAY_MS, DEFAULT_MAX_BATCH_SIZE, ModelPolicy
from modelport.protocol.signature import Signature
from modelport.serving.clock import SYSTEM_CLOCK, Clock
from modelport.serving.executor import Executor
from modelport.serving.telemetry import Timing

Arrays = dict[str, np.ndarray[Any, Any]]
PredictFn = Callable[[Arrays, Sequence[str]], Arrays]

# Calls faster than this run on the event loop: a hop to a thread would cost more than the
# call itself. Slower ones go to the executor so the loop keeps reading requests meanwhile.
# Call durations and trace stamps are measured with time.perf_counter, not the clock: they
# time real work, while the clock decides when a batch runs.
INLINE_BELOW_SECONDS = 0.0005
_EWMA = 0.2
DEFAULT_BATCH_DELAY = DEFAULT_MAX_BATCH_DELAY_MS / 1000
"""Seconds a batch may wait to fill up when no delay is configured."""
COMPANY_MEMORY = 0.1
"""Seconds after a batch with company during which the next batches may wait for company."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one model batches; `max_batch_size` 1 turns batching off."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay: float = DEFAULT_BATCH_DELAY
    """Seconds a batch may wait to fill up, only shortly after a batch with company and while
    requests keep arriving; 0 never waits."""

    @property
    def enabled(self) -> bool:
        """True when requests may be combined."""
        return self.max_batch_size > 1


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    outputs: Sequence[str]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Arrays]
    timing: Timing | None = None


class Batcher:
    """Runs one model's predictions, combining concurrent requests into batches.

    Without an `executor` every call runs in place, on the caller's event loop. `clock` says
    what time it is and wakes a batch that waits to fill.
    """

    def __init__(
        self,
        predict: PredictFn,
        output_order: Sequence[str],
        executor: Executor | None,
        policy: BatchPolicy,
        on_call: Callable[[int, int], None] | None = None,
        inline: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._predict = predict
        self._clock = clock
        self._inline = inline
        """Whether fast calls may run on the event loop (only for steady runtimes)."""
        self._on_call = on_call
        """Told each model call's rows and how many requests still wait (for metrics)."""
        self._order = tuple(output_order)
        self._executor = executor
        self._policy = policy
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._worker: asyncio.Task[None] | None = None
        self._full: asyncio.Future[None] | None = None
        """Set while a batch waits to fill; resolved early once max_batch_size rows queue."""
        self._last_arrival = 0.0
        self._gap: float | None = None
        """Seconds between arrivals (EWMA, each sample capped by the delay); None until two."""
        self._cost = 1.0  # seconds per call (EWMA); pessimistic until measured
        self._company_at = -COMPANY_MEMORY  # when a batch last ran with company (clock time)
        self.batches = 0
        """Runtime calls made so far (for tests and metrics)."""

    @property
    def policy(self) -> BatchPolicy:
        """The batching policy in force."""
        return self._policy

    async def predict(
        self, inputs: Arrays, outputs: Sequence[str], timing: Timing | None = None
    ) -> Arrays:
        """Predict `outputs` for validated `inputs`, possibly as part of a larger batch.

        `timing`, when given, receives when its batch and model call ran (for tracing).
        """
        if not self._policy.enabled:
            return await self._timed_call(inputs, outputs, [timing] if timing else [])
        first = next(iter(inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim else 0
        key = tuple((name, a.shape[1:], a.dtype.str) for name, a in inputs.items())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        if timing is not None:
            timing.queued = time.perf_counter()
        self._queue.append(_Pending(inputs, outputs, rows, key, future, timing))
        self._queued_rows += rows
        self._arrival()
        if self._full is not None and self._queued_rows >= self._policy.max_batch_size:
            _resolve(self._full)
        if self._worker is None:
            self._worker = loop.create_task(self._drain())
        return await future

    def _arrival(self) -> None:
        now = self._clock.now()
        if self._last_arrival:
            sample = min(now - self._last_arrival, self._policy.max_batch_delay)
            gap = self._gap
            self._gap = sample if gap is None else gap + _EWMA * (sample - gap)
        self._last_arrival = now

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        worker = self._worker
        if worker is not None:
            await asyncio.shield(worker)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._fill()
                batch = self._take()
                _mark_batch(batch)
                try:
                    await self._run(batch)
                except BaseException as exc:
                    # Never leave a caller waiting forever, whatever went wrong here.
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    raise
        finally:
            self._worker = None

    async def _fill(self) -> None:
        """Wait for company while requests keep coming, up to the policy's delay."""
        policy = self._policy
        clock = self._clock
        if policy.max_batch_delay <= 0 or clock.now() - self._company_at > COMPANY_MEMORY:
            return
        loop = asyncio.get_running_loop()
        deadline = clock.now() + policy.max_batch_delay
        while self._queued_rows < policy.max_batch_size:
            now = clock.now()
            until = min(deadline, self._last_arrival + 2 * (self._gap or 0.0))
            if until <= now:
                return
            full = self._full = loop.create_future()
            timer = clock.call_later(until - now, partial(_resolve, full))
            try:
                await full
            finally:
                timer.cancel()
                self._full = None

    def _take(self) -> list[_Pending]:
        """The oldest request plus the following compatible ones, within max_batch_size rows.

        Requests nobody waits for any more (past their deadline) are dropped on the way.
        """
        while self._queue[0].future.done() and len(self._queue) > 1:
            self._queued_rows -= self._queue.popleft().rows
        head = self._queue.popleft()
        batch = [head]
        rows = head.rows
        skipped: list[_Pending] = []
        while self._queue and rows < self._policy.max_batch_size:
            item = self._queue.popleft()
            if item.future.done():
                self._queued_rows -= item.rows
                continue
            if item.key != head.key or rows + item.rows > self._policy.max_batch_size:
                skipped.append(item)
                continue
            batch.append(item)
            rows += item.rows
        self._queue.extendleft(reversed(skipped))
        self._queued_rows -= rows
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            self._company_at = self._clock.now()
        if len(batch) == 1:
            await self._settle(batch[0])
            return
        wanted = set().union(*(p.outputs for p in batch))
        outputs = [name for name in self._order if name in wanted]
        names = batch[0].inputs.keys()
        merged = {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}
        total = sum(p.rows for p in batch)
        try:
            result = await self._timed_call(merged, outputs, [p.timing for p in batch if p.timing])
        except Exception:
            # One bad row must not fail its neighbours: retry each request on its own.
            for pending in batch:
                await self._settle(pending)
            return
        if any(np.ndim(a) == 0 or len(a) != total for a in result.values()):
            # Outputs not aligned with input rows cannot be split; answer one by one.
            for pending in batch:
                await self._settle(pending)
            return
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({n: result[n][start:end] for n in pending.outputs})
            start = end

    async def _settle(self, pending: _Pending) -> None:
        try:
            timings = [pending.timing] if pending.timing else []
            result = await self._timed_call(pending.inputs, pending.outputs, timings)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
        else:
            if not pending.future.done():
                pending.future.set_result(result)

    async def _timed_call(
        self, inputs: Arrays, outputs: Sequence[str], timings: list[Timing]
    ) -> Arrays:
        """`_call`, noting in each of `timings` when it started and ended."""
        if not timings:
            return await self._call(inputs, outputs)
        started = time.perf_counter()
        try:
            return await self._call(inputs, outputs)
        finally:
            ended = time.perf_counter()
            first = next(iter(inputs.values()), None)
            rows = int(first.shape[0]) if first is not None and first.ndim else 1
            for timing in timings:
                timing.batch_started = timing.batch_started or started
                timing.queued = timing.queued or started
                timing.predict_started, timing.predict_ended, timing.rows = started, ended, rows

    async def _call(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        if self._on_call is not None:
            first = next(iter(inputs.values()), None)
            rows = int(first.shape[0]) if first is not None and first.ndim else 1
            self._on_call(rows, len(self._queue))
        executor = self._executor
        if executor is None or (self._inline and self._cost < INLINE_BELOW_SECONDS):
            result, seconds = self._timed(inputs, outputs)
        else:
            result, seconds = await executor.run(self._timed, inputs, outputs)
        self._observe(seconds)
        if isinstance(result, BaseException):
            raise result
        return result

    def _timed(self, inputs: Arrays, outputs: Sequence[str]) -> tuple[Arrays | Exception, float]:
        """The call's result (or the exception it raised) and how long it took."""
        start = time.perf_counter()
        try:
            result: Arrays | Exception = self._predict(inputs, outputs)
        except Exception as exc:
            result = exc
        return result, time.perf_counter() - start

    def _observe(self, seconds: float) -> None:
        self.batches += 1
        if self._cost >= 1.0:
            self._cost = seconds
        else:
            self._cost += _EWMA * (seconds - self._cost)


def _mark_batch(batch: list[_Pending]) -> None:
    """Note, for traced requests, when their batch left the queue."""
    now = 0.0
    for pending in batch:
        if pending.timing is not None:
            now = now or time.perf_counter()
            pending.timing.batch_started = now


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def policy_for(signature: Signature, row_independent: bool, policy: ModelPolicy) -> BatchPolicy:
    """The batching policy for one model version, whose model's policy is `policy`.

    Batching is on where the model's policy says so, or, when it leaves it open, where the
    runtime is row-independent; either way only when every input and output has a variable
    first (batch) dimension.
    """
    batch_dim = all(s.shape[:1] == (-1,) for s in (*signature.inputs, *signature.outputs))
    wanted = row_independent if policy.batching is None else policy.batching
    if not (wanted and batch_dim):
        return BatchPolicy(max_batch_size=1)
    return BatchPolicy(policy.max_batch_size, policy.max_batch_delay_ms / 1000)
