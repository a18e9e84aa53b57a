"""The token bucket: bursts, refill, the wait it reports, and callers kept apart."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidInput, RateLimited
from modelport.security.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("key-a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("key-a")
    assert refused.value.retry_after == pytest.approx(0.5)
    assert "2 a second" in refused.value.message
    clock.now += 0.5
    limiter.take("key-a")
    with pytest.raises(RateLimited):
        limiter.take("key-a")


def test_callers_have_their_own_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    limiter.take("key-a")
    limiter.take("key-b")
    with pytest.raises(RateLimited):
        limiter.take("key-a")


def test_refill_stops_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=2, clock=clock)
    limiter.take("k")
    clock.now += 3600
    limiter.take("k")
    limiter.take("k")
    with pytest.raises(RateLimited):
        limiter.take("k")


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (1, 0.5)])
def test_nonsense_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(InvalidInput):
        RateLimiter(rate=rate, burst=burst)


def test_failed_logins_spend_from_the_address_bucket() -> None:
    from modelport.errors import Unauthenticated
    from modelport.security.policy import Policy
    from modelport.serving.guard import Action

    policy = Policy(lambda secret: None, None, True, limiter=RateLimiter(rate=0.001, burst=2))
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            policy.check(Action.INFER, None, "mp_" + "x" * 43, "203.0.113.9")
    with pytest.raises(RateLimited):
        policy.check(Action.INFER, None, "mp_" + "x" * 43, "203.0.113.9")
    # Health checks stay open, whatever the bucket says.
    assert policy.check(Action.HEALTH, None, None, "203.0.113.9") == ""
