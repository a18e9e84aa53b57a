"""The time source and timers that scheduling decisions read, so tests can drive them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None:
        """Do not run the callback (no effect once it ran)."""


class Clock(Protocol):
    """Monotonic seconds and callbacks after a delay on that same scale."""

    def now(self) -> float:
        """Seconds on a monotonic scale with an arbitrary origin."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the event loop once `delay` seconds have passed."""


class SystemClock:
    """The real clock: `time.monotonic` and the running event loop's timers."""

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """`loop.call_later` on the running loop."""
        return asyncio.get_running_loop().call_later(delay, callback)


SYSTEM_CLOCK = SystemClock()
