"""Per-caller rate limits for the whole server: token buckets in a table in shared memory.

The table is made in the parent before the workers fork, so with `--workers N` every worker
spends from the same bucket and a caller gets its rate once per server, not once per worker.

A bucket is one number, the time at which it will be full again (`full_at`): a bucket holds
`burst - (full_at - now) * rate` tokens while `full_at` is ahead of the clock, `burst` once it
has passed. A bucket that has refilled is therefore the same as no bucket at all, and its slot
can be given to another caller without changing anything.

The table has SLOTS slots of (hash, full_at). A caller's 64-bit hash picks a window of PROBES
consecutive slots; its bucket is the slot in that window that holds its hash. A caller without
one takes the slot whose bucket is full soonest: an empty or refilled one when there is one
(nothing is forgotten), else the bucket nearest to full (that caller starts again with a full
bucket, the smallest gift the table can make). Storing the whole hash keeps two callers that
share a window apart.

The hash is the interpreter's own string hash: SipHash keyed by a secret drawn when the server
starts (clients cannot choose names that crowd one window), the same in every worker because
they are forked from one parent, and a tenth of the cost of blake2b on a request's path.
"""

from __future__ import annotations

import ctypes
import struct
import time
from collections.abc import Callable

from modelport.errors import InvalidInput, RateLimited
from modelport.serving.shared_memory import ProcessLock, shared_buffer

SLOTS = 1 << 18
"""Buckets in the table (4 MiB of shared memory). With 100,000 callers whose buckets are all
still refilling, about 3 in 100,000 new callers find every slot of their window taken."""

PROBES = 16
"""Consecutive slots a caller's bucket may be in: the bound on the work of one lookup."""

LOCK_TIMEOUT_S = 0.05
"""How long a request waits for the table's lock before it is admitted unchecked."""

_HASH_BYTES = 8
_HASH_MASK = (1 << 64) - 1
_SLOT_BYTES = 16  # an unsigned 64-bit hash and a float64 full_at


class RateLimiter:
    """Allows each caller `rate` requests a second on average, in bursts of up to `burst`.

    Counted once for every process forked after the limiter was made: they share its table.
    `take` waits for the table's lock at most LOCK_TIMEOUT_S (plus what `ProcessLock.hold`
    needs to notice a holder that died); if it cannot have it, the request is admitted
    without spending: the limiter never stalls or fails a request of its own accord.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_full_at",
        "_hashes",
        "_lock",
        "_probes",
        "_rate",
        "_slots",
        "_window",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        slots: int = SLOTS,
        probes: int = PROBES,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidInput(
                f"rate limits need a rate above 0 and a burst of at least 1, got {rate} and {burst}"
            )
        self._rate = rate
        self._burst = burst
        # time.monotonic is CLOCK_MONOTONIC, one clock for the whole system: every worker
        # reads the same time, so a full_at written by one means the same to the others.
        self._clock = clock
        self._slots = slots
        self._probes = probes
        # PROBES - 1 slots past the end, so that no window wraps around.
        count = slots + probes - 1
        memory = shared_buffer(count * _SLOT_BYTES)
        self._hashes = memory
        """The hashes, read a window at a time with `_window` (one call, no per-slot work)."""
        self._window = struct.Struct(f"={probes}Q")
        self._full_at = (ctypes.c_double * count).from_buffer(memory, count * _HASH_BYTES)
        self._lock = ProcessLock()

    def take(self, caller: str) -> None:
        """Spend one token of `caller`'s bucket; RateLimited (with the wait) when it is empty."""
        hashed = hash(caller) & _HASH_MASK
        with self._lock.hold(LOCK_TIMEOUT_S) as held:
            if not held:
                return
            now = self._clock()
            tokens = self._spend(hashed, now)
        if tokens < 1:
            wait = (1 - tokens) / self._rate
            raise RateLimited(
                f"too many requests from {caller}: the limit is {self._rate:g} a second "
                f"(bursts of {self._burst:g}); retry in {wait:.2f} s",
                retry_after=wait,
            )

    def _spend(self, hashed: int, now: float) -> float:
        """Spend a token from the bucket of `hashed` if it has one: the tokens it had."""
        start = hashed % self._slots
        try:
            slot = start + self._window.unpack_from(self._hashes, start * _HASH_BYTES).index(hashed)
        except ValueError:
            slot = self._claim(start, hashed)
            tokens = self._burst
        else:
            ahead = self._full_at[slot] - now
            tokens = self._burst - ahead * self._rate if ahead > 0 else self._burst
        if tokens >= 1:
            self._full_at[slot] = now + (self._burst - tokens + 1) / self._rate
        return tokens

    def _claim(self, start: int, hashed: int) -> int:
        """Give `hashed` the slot of the window at `start` whose bucket is full soonest."""
        window = self._full_at[start : start + self._probes]
        slot = start + window.index(min(window))
        struct.pack_into("=Q", self._hashes, slot * _HASH_BYTES, hashed)
        return slot
