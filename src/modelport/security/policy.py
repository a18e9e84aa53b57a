"""Who may do what: one policy that REST and gRPC both consult, with the same answers.

A request presents at most one credential: `Authorization: Bearer TOKEN` (a JWT or an API key)
or `x-api-key: KEY` (an HTTP header or gRPC metadata). Each scope grants a set of actions; health
checks are always open. With `required` off every request is allowed, but a credential that is
presented must still be valid, so a client learns of a bad key before auth is switched on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

from modelport.config import AuthSettings
from modelport.errors import Forbidden, Unauthenticated
from modelport.registry.keys import SCOPES, ApiKey, looks_like_key, secret_digest
from modelport.security.credentials import JwtVerifier, Principal, TokenVerifier, looks_like_jwt
from modelport.security.rate_limit import RateLimiter
from modelport.security.token_cache import TokenCache
from modelport.serving.guard import Action

__all__ = ["GRANTS", "Action", "KeyLookup", "Policy", "Principal"]

KeyLookup = Callable[[str], ApiKey | None]
"""An API key's secret -> its unrevoked record, else None (KeyStore.verify)."""

HOW_TO_SEND: Final = "send `Authorization: Bearer KEY` or `x-api-key: KEY`"
_DEFAULT_CACHE_TTL_S: Final = 5.0
# Bounds the memory that a stream of distinct made-up keys can take; when full, the cache
# starts over, which costs one database lookup per key in use.
_CACHE_LIMIT: Final = 10_000


DOING: Final[Mapping[Action, str]] = {
    Action.HEALTH: "checking health",
    Action.INFER: "inference",
    Action.METADATA: "reading metadata",
    Action.METRICS: "reading metrics",
    Action.LOGS: "reading logs",
    Action.ADMIN: "administration",
}
"""Each action as the error messages name it."""


GRANTS: Final[Mapping[str, frozenset[Action]]] = {
    "infer": frozenset({Action.INFER, Action.METADATA}),
    "read": frozenset({Action.METADATA, Action.METRICS, Action.LOGS}),
    "admin": frozenset(Action),
}
"""The actions each scope (registry.keys.SCOPES) allows; health needs none."""


class Policy:
    """Authenticates the credential a request presents, and authorizes its action.

    API keys are looked up through `key_lookup` and remembered, found or not, for
    `cache_ttl_s` seconds (by the hash of the secret), so the hot path reaches the database
    once per key per period: a revoked key is refused at most `cache_ttl_s` after the revoke.
    A lookup that misses the cache runs on the calling thread (one indexed query). Bearer
    JWTs go to `jwt`: a JwtVerifier checks each one in full, a TokenCache in front of it only
    the first time until the token's exp.
    """

    __slots__ = (
        "_cache",
        "_cache_ttl_s",
        "_clock",
        "_jwt",
        "_key_lookup",
        "_limiter",
        "_lock",
        "_required",
    )

    def __init__(
        self,
        key_lookup: KeyLookup | None,
        jwt: TokenVerifier | None,
        required: bool,
        *,
        cache_ttl_s: float = _DEFAULT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._limiter = limiter
        self._key_lookup = key_lookup
        self._jwt = jwt
        self._required = required
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether requests other than health checks need a credential."""
        return self._required

    def check(
        self, action: Action, authorization: str | None, api_key: str | None, address: str
    ) -> str:
        """The transports' `Guard`: admit the request, then spend from its caller's rate limit.

        The caller is the credential's name, else (anonymous) the client's address. Returns
        the name ("" when anonymous).
        """
        try:
            principal = self.admit(authorization, api_key, action)
        except Unauthenticated:
            # Failed attempts spend from the address's bucket too: guessing keys gets a 429.
            if self._limiter is not None:
                self._limiter.take(address)
            raise
        if self._limiter is not None and action is not Action.HEALTH:
            self._limiter.take(principal.name if principal is not None else address)
        return "" if principal is None else principal.name

    def admit(
        self, authorization: str | None, api_key: str | None, action: Action
    ) -> Principal | None:
        """Authenticate, then authorize `action`: the principal (None when none is needed).

        Health checks are admitted without looking at credentials at all.
        """
        if action is Action.HEALTH:
            return None
        principal = self.authenticate(authorization, api_key)
        self.authorize(principal, action)
        return principal

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal | None:
        """The principal the request's credential proves; None when it presents none.

        `authorization` is the Authorization header's value, `api_key` the x-api-key one
        (None when absent). Unauthenticated for an invalid, unknown or revoked credential,
        and for two credentials at once.
        """
        bearer = None
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = value.strip()
                if not bearer:
                    raise Unauthenticated(f"the Bearer credential is empty; {HOW_TO_SEND}")
            elif api_key is None and self._required:
                # Another scheme (Basic, for a proxy in front) is no modelport credential.
                raise Unauthenticated(
                    f"the Authorization header must use the Bearer scheme; {HOW_TO_SEND}"
                )
        if api_key is not None:
            if bearer is not None:
                raise Unauthenticated(
                    "the request carries both a Bearer credential and an x-api-key; send one"
                )
            return self._key(api_key.strip())
        if bearer is None:
            return None
        if looks_like_jwt(bearer):
            return self._token(bearer)
        return self._key(bearer)

    def authorize(self, principal: Principal | None, action: Action) -> None:
        """Allow `action` or raise: Unauthenticated (no credential) or Forbidden (wrong scope).

        With `required` off, and for health checks, everything is allowed.
        """
        if action is Action.HEALTH or not self._required:
            return
        needed = _scopes_for(action)
        if principal is None:
            raise Unauthenticated(
                f"{DOING[action]} needs a credential with the {needed} scope; {HOW_TO_SEND} "
                "(an operator creates keys with `modelport keys create`)"
            )
        if any(action in GRANTS[scope] for scope in principal.scopes):
            return
        held = ", ".join(repr(scope) for scope in sorted(principal.scopes)) or "no modelport scope"
        raise Forbidden(f"{DOING[action]} needs the {needed} scope; this credential has {held}")

    def _key(self, secret: str) -> Principal:
        if self._key_lookup is None:
            raise Unauthenticated("this server accepts no API keys; send a JWT bearer token")
        if not looks_like_key(secret):
            raise Unauthenticated(
                "the API key is malformed: modelport keys start with `mp_` and are 46 "
                f"characters long; {HOW_TO_SEND}"
            )
        key = self._lookup(secret)
        if key is None:
            raise Unauthenticated(
                "the API key is unknown or revoked; ask an operator for a valid key "
                "(`modelport keys list` shows which exist)"
            )
        return Principal.of_key(key)

    def _lookup(self, secret: str) -> ApiKey | None:
        """The key behind `secret`, from the cache while fresh, else from `key_lookup`."""
        assert self._key_lookup is not None
        digest = secret_digest(secret)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = self._key_lookup(secret)
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (now + self._cache_ttl_s, key)
        return key

    def _token(self, token: str) -> Principal:
        if self._jwt is None:
            raise Unauthenticated(
                "this server accepts no JWT bearer tokens; send an API key "
                "(`Authorization: Bearer KEY` or `x-api-key: KEY`)"
            )
        return self._jwt.verify(token)


def _scopes_for(action: Action) -> str:
    """The scopes that allow `action`, as a message names them: 'infer' or 'admin'."""
    names = [repr(scope) for scope in SCOPES if action in GRANTS[scope]]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def build_policy(settings: AuthSettings, keys: KeyLookup | None) -> Policy:
    """The policy `serve` enforces: API keys through `keys`, JWTs when a key is configured
    (each accepted token remembered until its exp), credentials required with `require_auth`,
    and the rate limit if one is set. Call it before the workers fork: the rate limit's
    buckets are in memory every process forked afterwards shares."""
    verifier = None
    if settings.jwt_public_key or settings.jwks_file:
        full = JwtVerifier.from_files(
            settings.jwt_public_key or None,
            settings.jwks_file or None,
            audience=settings.jwt_audience or None,
            issuer=settings.jwt_issuer or None,
            scope_claim=settings.jwt_scope_claim,
        )
        verifier = TokenCache(full)
    limiter = None
    if settings.rate_limit:
        burst = settings.rate_burst or max(1.0, settings.rate_limit)
        limiter = RateLimiter(settings.rate_limit, burst)
    return Policy(keys, verifier, settings.require_auth, limiter=limiter)
