"""Per-caller rate limits: a token bucket for each key (or address) that sends requests."""

from __future__ import annotations

import time
from collections.abc import Callable

from modelport.errors import InvalidInput, RateLimited

MAX_CALLERS = 100_000
"""Buckets kept at most; the oldest full ones are forgotten first (a full bucket is the default)."""


class RateLimiter:
    """Allows each caller `rate` requests a second on average, in bursts of up to `burst`."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidInput(
                f"rate limits need a rate above 0 and a burst of at least 1, got {rate} and {burst}"
            )
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """caller -> (tokens, when they were counted)."""

    def take(self, caller: str) -> None:
        """Spend one token of `caller`'s bucket; RateLimited (with the wait) when it is empty."""
        now = self._clock()
        tokens, then = self._buckets.get(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            wait = (1 - tokens) / self._rate
            raise RateLimited(
                f"too many requests from {caller}: the limit is {self._rate:g} a second "
                f"(bursts of {self._burst:g}); retry in {wait:.2f} s",
                retry_after=wait,
            )
        self._buckets[caller] = (tokens - 1, now)
        if len(self._buckets) > MAX_CALLERS:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        self._buckets = {
            caller: (tokens, then)
            for caller, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * self._rate < self._burst
        }
