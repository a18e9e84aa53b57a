"""The adaptive batcher: combines concurrent requests, splits answers back, isolates failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.model_policy import ModelPolicy
from modelport.protocol.signature import Signature, TensorSpec
from modelport.serving.batching import (
    COMPANY_MEMORY,
    DEFAULT_BATCH_DELAY,
    Batcher,
    BatchPolicy,
    policy_for,
)
from modelport.serving.executor import Executor

Arrays = dict[str, np.ndarray[Any, Any]]


class Recorder:
    """A row-wise model (y = 2x, s = row sum) that records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        x = inputs["x"]
        self.calls.append(len(x))
        if np.isnan(x).any():
            raise InvalidInput("x holds NaN")
        result = {"y": x * 2, "s": x.sum(axis=1)}
        return {name: result[name] for name in outputs}


def gather(
    batcher: Batcher, requests: Sequence[tuple[np.ndarray[Any, Any], Sequence[str]]]
) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(batcher.predict({"x": x}, outs) for x, outs in requests), return_exceptions=True
        )

    return asyncio.run(main())


@pytest.fixture
def executor() -> Any:
    pool = Executor(threads=1)
    yield pool
    pool.shutdown()


def rows(n: int, start: float) -> np.ndarray[Any, Any]:
    return np.arange(start, start + 3 * n, dtype=np.float32).reshape(n, 3)


def test_concurrent_requests_share_one_call_and_get_their_own_rows(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(model, ("y", "s"), executor, BatchPolicy(max_batch_size=64))
    requests = [(rows(i % 3 + 1, 10.0 * i), ("y", "s") if i % 2 else ("s",)) for i in range(10)]
    results = gather(batcher, requests)
    assert model.calls == [sum(len(x) for x, _ in requests)]
    for (x, outs), got in zip(requests, results, strict=True):
        assert list(got) == list(outs)  # each request keeps its own outputs, in its order
        np.testing.assert_array_equal(got["s"], x.sum(axis=1))
        if "y" in outs:
            np.testing.assert_array_equal(got["y"], x * 2)


def test_a_lone_request_runs_at_once(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(
        model, ("y", "s"), executor, BatchPolicy(max_batch_size=64, max_batch_delay=5)
    )
    (got,) = gather(batcher, [(rows(2, 0), ("y",))])
    # A five-second delay was allowed, but with nothing else in flight it is never used.
    assert model.calls == [2]
    np.testing.assert_array_equal(got["y"], rows(2, 0) * 2)


class ManualClock:
    """A clock that moves only when told; `advance` runs the timers it passes, in time order."""

    def __init__(self, start: float = 1024.0) -> None:
        self._now = start
        self._timers: list[ManualTimer] = []

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self._now + delay, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = sorted((t for t in self._timers if t.at <= self._now), key=lambda t: t.at)
        self._timers = [t for t in self._timers if t.at > self._now and not t.cancelled]
        for timer in due:
            if not timer.cancelled:
                timer.callback()


@dataclass
class ManualTimer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


async def turns() -> None:
    """Let every task that can run do so (the model runs in place: no thread is involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


SPACING = 0.5
"""Seconds between the first arrivals below: what the batcher learns as the usual gap."""


def clocked(model: Recorder, policy: BatchPolicy) -> tuple[Batcher, ManualClock]:
    """A batcher on a manual clock that calls `model` in place."""
    clock = ManualClock()
    return Batcher(model, ("y",), None, policy, clock=clock), clock


async def _after_a_shared_batch(batcher: Batcher, model: Recorder, clock: ManualClock) -> None:
    """One lone request, then two together SPACING later: the last batch had company."""
    await batcher.predict({"x": rows(1, 0)}, ("y",))
    clock.advance(SPACING)
    await asyncio.gather(*(batcher.predict({"x": rows(1, i)}, ("y",)) for i in (1, 2)))
    assert model.calls == [1, 2]


def test_after_a_shared_batch_requests_still_arriving_join_the_next() -> None:
    model = Recorder()
    # A delay far longer than the test: only the arrivals decide how long the batch waits.
    batcher, clock = clocked(model, BatchPolicy(max_batch_size=64, max_batch_delay=60))

    async def main() -> list[Arrays]:
        await _after_a_shared_batch(batcher, model, clock)
        calls = []
        for i in range(3):
            # Arrivals ten times closer together than the gap learnt above: they keep coming.
            calls.append(asyncio.ensure_future(batcher.predict({"x": rows(1, 10 + i)}, ("y",))))
            await turns()
            clock.advance(SPACING / 10)
        await turns()
        assert model.calls == [1, 2]  # the first of the three still waits for company
        clock.advance(SPACING)  # quiet for longer than the learnt gap
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    # Handed over one at a time (as a gRPC server does), they still ran as one call.
    assert model.calls == [1, 2, 3]
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got["y"], rows(1, 10 + i) * 2)


def test_a_batch_stops_waiting_soon_after_arrivals_stop() -> None:
    model = Recorder()
    batcher, clock = clocked(model, BatchPolicy(max_batch_size=64, max_batch_delay=60))

    async def main() -> Arrays:
        await _after_a_shared_batch(batcher, model, clock)
        call = asyncio.ensure_future(batcher.predict({"x": rows(1, 5)}, ("y",)))
        await turns()
        assert model.calls == [1, 2]  # waiting for company
        # Nothing follows: twice the learnt gap (at most SPACING) ends the wait, not the 60 s.
        clock.advance(2 * SPACING)
        return await call

    got = asyncio.run(main())
    assert model.calls == [1, 2, 1]
    np.testing.assert_array_equal(got["y"], rows(1, 5) * 2)


def test_the_delay_caps_the_wait_however_steady_the_arrivals() -> None:
    model = Recorder()
    batcher, clock = clocked(model, BatchPolicy(max_batch_size=64, max_batch_delay=1.0))
    step = 1 / 16  # exact in binary, so sixteen steps are exactly the delay

    async def main() -> None:
        await _after_a_shared_batch(batcher, model, clock)
        calls = []
        for i in range(16):
            calls.append(asyncio.ensure_future(batcher.predict({"x": rows(1, i)}, ("y",))))
            await turns()
            assert model.calls == [1, 2]  # arrivals keep coming: the batch keeps waiting
            clock.advance(step)
        await asyncio.gather(*calls)

    asyncio.run(main())
    # The one-second delay ran out as the sixteenth request arrived: one call for all of them.
    assert model.calls == [1, 2, 16]


def test_once_company_is_a_memory_a_request_runs_at_once_again() -> None:
    model = Recorder()
    batcher, clock = clocked(model, BatchPolicy(max_batch_size=64, max_batch_delay=60))

    async def main() -> None:
        await _after_a_shared_batch(batcher, model, clock)
        clock.advance(COMPANY_MEMORY * 1.5)
        call = asyncio.ensure_future(batcher.predict({"x": rows(1, 5)}, ("y",)))
        await turns()
        # The learnt gap would have held it for most of a second; traffic went quiet instead.
        assert model.calls == [1, 2, 1]
        await call

    asyncio.run(main())


def test_a_full_batch_stops_waiting_at_once() -> None:
    model = Recorder()
    batcher, clock = clocked(model, BatchPolicy(max_batch_size=4, max_batch_delay=60))

    async def main() -> None:
        await _after_a_shared_batch(batcher, model, clock)
        calls = [asyncio.ensure_future(batcher.predict({"x": rows(1, 10)}, ("y",)))]
        await turns()
        assert model.calls == [1, 2]  # waiting for company
        calls.append(asyncio.ensure_future(batcher.predict({"x": rows(3, 20)}, ("y",))))
        await turns()
        # Four rows fill the batch: it ran without the clock moving at all.
        assert model.calls == [1, 2, 4]
        await asyncio.gather(*calls)

    asyncio.run(main())


def test_without_an_executor_calls_run_in_place() -> None:
    model = Recorder()
    batcher = Batcher(model, ("y",), None, BatchPolicy(max_batch_size=1))
    got = asyncio.run(batcher.predict({"x": rows(2, 0)}, ("y",)))
    assert model.calls == [2]
    np.testing.assert_array_equal(got["y"], rows(2, 0) * 2)


def test_batches_respect_max_batch_size(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(model, ("y", "s"), executor, BatchPolicy(max_batch_size=8))
    requests = [(rows(3, i), ("y",)) for i in range(7)]
    results = gather(batcher, requests)
    assert all(size <= 8 for size in model.calls)
    assert sum(model.calls) == 21
    assert len(model.calls) < len(requests)
    for (x, _), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got["y"], x * 2)


def test_a_bad_row_fails_only_its_own_request(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(model, ("y", "s"), executor, BatchPolicy(max_batch_size=64))
    bad = rows(2, 0)
    bad[1, 1] = np.nan
    requests = [(rows(1, 1), ("y",)), (bad, ("y",)), (rows(2, 5), ("y",))]
    results = gather(batcher, requests)
    assert isinstance(results[1], InvalidInput)
    np.testing.assert_array_equal(results[0]["y"], rows(1, 1) * 2)
    np.testing.assert_array_equal(results[2]["y"], rows(2, 5) * 2)
    assert model.calls == [5, 1, 2, 2]  # the batch, then each request on its own


def test_requests_with_other_trailing_shapes_are_not_mixed(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(model, ("y", "s"), executor, BatchPolicy(max_batch_size=64))
    wide = np.ones((2, 5), np.float32)
    results = gather(batcher, [(rows(1, 0), ("s",)), (wide, ("s",)), (rows(2, 3), ("s",))])
    assert sorted(model.calls) == [2, 3]
    np.testing.assert_array_equal(results[1]["s"], [5, 5])


def test_outputs_not_aligned_with_rows_fall_back_to_one_call_each(executor: Executor) -> None:
    calls: list[int] = []

    def summary(inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        calls.append(len(inputs["x"]))
        return {"total": np.array([inputs["x"].sum()])}  # one value whatever the batch

    batcher = Batcher(summary, ("total",), executor, BatchPolicy(max_batch_size=64))
    results = gather(batcher, [(rows(2, 0), ("total",)), (rows(3, 9), ("total",))])
    assert calls == [5, 2, 3]
    assert results[0]["total"][0] == rows(2, 0).sum()
    assert results[1]["total"][0] == rows(3, 9).sum()


def test_batching_off_calls_once_per_request(executor: Executor) -> None:
    model = Recorder()
    batcher = Batcher(model, ("y", "s"), executor, BatchPolicy(max_batch_size=1))
    gather(batcher, [(rows(1, i), ("y",)) for i in range(4)])
    assert model.calls == [1, 1, 1, 1]


BATCHED = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1,)),))
FIXED = Signature((TensorSpec("x", "FP32", (2, 3)),), (TensorSpec("y", "FP32", (2,)),))


def policy(**chosen: Any) -> ModelPolicy:
    return ModelPolicy(compiled=True, max_queue=8, **chosen)


def test_policy_defaults() -> None:
    assert policy_for(BATCHED, True, policy()) == BatchPolicy(64, DEFAULT_BATCH_DELAY)
    assert not policy_for(BATCHED, False, policy()).enabled  # not row-independent
    assert not policy_for(FIXED, True, policy()).enabled  # no batch dimension
    assert not policy_for(BATCHED, True, policy(batching=False)).enabled


def test_policy_follows_the_model_policy() -> None:
    chosen = policy(max_batch_size=16, max_batch_delay_ms=2.5)
    assert policy_for(BATCHED, True, chosen) == BatchPolicy(16, 0.0025)
    # A custom runtime may opt in through its model's policy.
    assert policy_for(BATCHED, False, policy(batching=True)).enabled
    # Nothing turns it on for tensors without a batch dimension.
    assert not policy_for(FIXED, True, policy(batching=True)).enabled
