"""Coroutines handed from threads to an event loop (the gRPC handlers' way to the dataplane)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelport.transports.grpc_bridge import LoopBridge


class CountingBridge(LoopBridge):
    """Counts the loop's wake-ups."""

    wakeups = 0

    def _start_queued(self) -> None:
        self.wakeups += 1
        super()._start_queued()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_a_result_and_an_error_cross_back(loop: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(loop)

    async def where() -> bool:
        return asyncio.get_running_loop() is loop

    async def fail() -> None:
        raise KeyError("no such thing")

    assert bridge.run(where()) is True
    with pytest.raises(KeyError, match="no such thing"):
        bridge.run(fail())


def test_calls_from_many_threads_each_get_their_own_answer(
    loop: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge(loop)

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: bridge.run(double(x)), range(500)))
    assert answers == [2 * x for x in range(500)]


def test_calls_queued_while_the_loop_is_busy_cross_in_one_wakeup(
    loop: asyncio.AbstractEventLoop,
) -> None:
    bridge = CountingBridge(loop)
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(timeout=30)

    loop.call_soon_threadsafe(hold)
    assert busy.wait(timeout=30)

    async def one() -> int:
        return 1

    handoffs = [bridge.submit(one()) for _ in range(10)]
    release.set()
    assert [h.result() for h in handoffs] == [1] * 10
    assert bridge.wakeups == 1


def test_cancel_stops_a_running_call_and_one_not_yet_started(
    loop: asyncio.AbstractEventLoop,
) -> None:
    bridge = LoopBridge(loop)
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    running = bridge.submit(forever())
    assert started.wait(timeout=30)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        running.result()

    busy, release = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(timeout=30)))
    assert busy.wait(timeout=30)
    ran = threading.Event()

    async def mark() -> None:
        ran.set()

    queued = bridge.submit(mark())
    queued.cancel()  # reaches the loop before the call has taken its first step
    release.set()
    with pytest.raises(asyncio.CancelledError):
        queued.result()
    assert bridge.run(asyncio.sleep(0)) is None  # the loop has gone past both
    assert not ran.is_set()


def test_cancel_after_the_answer_changes_nothing(loop: asyncio.AbstractEventLoop) -> None:
    bridge = LoopBridge(loop)

    async def seven() -> int:
        return 7

    handoff = bridge.submit(seven())
    assert handoff.result() == 7
    handoff.cancel()
    assert handoff.result() == 7
