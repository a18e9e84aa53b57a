"""The token buckets: bursts, refill, the wait they report, callers kept apart, the table's
bound, and one bucket for every process forked after the limiter was made."""

from __future__ import annotations

import pytest

from modelport.errors import InvalidInput, RateLimited
from modelport.security.rate_limit import RateLimiter

from ...conftest import in_child


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


def admitted(limiter: RateLimiter, caller: str) -> bool:
    try:
        limiter.take(caller)
    except RateLimited:
        return False
    return True


def test_callers_that_share_a_window_keep_their_own_buckets() -> None:
    # One window of four slots for everyone: every caller lands in the same place.
    limiter = RateLimiter(rate=0.001, burst=2, clock=Clock(), slots=1, probes=4)
    callers = ["key-a", "key-b", "key-c", "key-d"]
    for caller in callers:
        assert admitted(limiter, caller)
    for caller in callers:
        assert admitted(limiter, caller)
    assert not any(admitted(limiter, caller) for caller in callers)


def test_a_refilled_bucket_gives_up_its_slot_first() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=3, clock=clock, slots=1, probes=2)
    for _ in range(3):
        limiter.take("empty")  # full again in 3 s
    limiter.take("nearly-full")  # full again in 1 s
    clock.now += 1
    assert admitted(limiter, "new")  # takes the refilled slot
    # "empty" kept its bucket: one token back after 1 s, then refused.
    assert admitted(limiter, "empty")
    assert not admitted(limiter, "empty")


def test_a_full_table_forgets_the_bucket_nearest_to_full() -> None:
    limiter = RateLimiter(rate=1.0, burst=3, clock=Clock(), slots=1, probes=2)
    for _ in range(3):
        limiter.take("empty")  # full again in 3 s
    for _ in range(2):
        limiter.take("half")  # full again in 2 s
    assert admitted(limiter, "new")  # no free slot: "half" is forgotten
    assert not admitted(limiter, "empty")
    for _ in range(3):  # forgotten: "half" starts again with a full bucket ("new" goes)
        assert admitted(limiter, "half")
    assert not admitted(limiter, "half")
    assert not admitted(limiter, "empty")


def test_a_forked_child_spends_from_the_parents_bucket() -> None:
    limiter = RateLimiter(rate=0.001, burst=3)
    limiter.take("key-a")

    def twice() -> None:
        limiter.take("key-a")
        limiter.take("key-a")

    assert in_child(twice) == 0
    with pytest.raises(RateLimited) as refused:
        limiter.take("key-a")
    assert refused.value.retry_after > 100
    # And the other way round: what the parent spent, the child sees.
    assert in_child(lambda: limiter.take("key-a")) == 1
    assert in_child(lambda: limiter.take("key-b")) == 0


def test_a_request_is_admitted_when_the_table_is_locked() -> None:
    limiter = RateLimiter(rate=0.001, burst=1)
    limiter.take("key-a")
    with limiter._lock.hold() as held:  # a worker stuck inside an update
        assert held
        assert in_child(lambda: limiter.take("key-a")) == 0
    assert not admitted(limiter, "key-a")


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
