"""Verified JWTs remembered until they expire, so that a caller's token is checked once.

Verifying a token (parsing it, checking its signature and claims) costs tens of microseconds,
and a client sends the same token with every request until it expires. The cache holds what
verification proved, keyed by the SHA-256 of the token (never the token itself), and answers
only while the token's own claims still allow it: from its `nbf` (and `iat`) up to, and not
including, its `exp`, with no clock leeway. Outside that span, and for any token not in the
cache, the token is verified in full again. A refused token is never remembered, so a cache
can only ever repeat an acceptance that verification gave, inside the span it gave it for.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from modelport.errors import InvalidInput
from modelport.security.credentials import JwtVerifier, Principal, Verified

DEFAULT_MAX_ENTRIES: Final = 4096
"""Tokens remembered at most (about 1 MB); the least recently used one goes first."""


class TokenCache:
    """A JWT verifier that remembers accepted tokens by their hash, at most `max_entries`.

    `clock` gives seconds since the epoch, the scale of `exp` and `nbf` (the wall clock by
    default, as the verifier's own checks use). Safe to share between threads: the cache's
    bookkeeping is done under a lock, verification outside it.
    """

    __slots__ = ("_clock", "_entries", "_lock", "_max_entries", "_verifier")

    def __init__(
        self,
        verifier: JwtVerifier,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """InvalidInput when `max_entries` is not positive."""
        if max_entries < 1:
            raise InvalidInput(f"the JWT cache must hold at least one token, got {max_entries}")
        self._verifier = verifier
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many tokens are remembered now (expired ones included until looked up)."""
        return len(self._entries)

    def verify(self, token: str) -> Principal:
        """The principal a valid token proves; Unauthenticated says why a token is refused."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            hit = self._entries.get(digest)
            if hit is not None:
                if hit.not_before <= now < hit.expires:
                    self._entries.move_to_end(digest)
                    return hit.principal
                if now >= hit.expires:
                    del self._entries[digest]
        verified = self._verifier.verified(token)
        if now < verified.expires:
            # One accepted past its exp, inside the clock leeway, is not remembered: a hit
            # never stretches the leeway. One accepted before its nbf is, and hits from nbf on.
            self._remember(digest, verified)
        return verified.principal

    def _remember(self, digest: bytes, verified: Verified) -> None:
        with self._lock:
            self._entries[digest] = verified
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
