"""The JWT cache: a hit skips verification, and never answers where verification would refuse."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelport.config import AuthSettings
from modelport.errors import InvalidInput, Unauthenticated
from modelport.security.credentials import JwtVerifier, Principal, Verified
from modelport.security.policy import build_policy
from modelport.security.token_cache import DEFAULT_MAX_ENTRIES, TokenCache

AUDIENCE = "modelport"
T0 = 1_900_000_000.0
"""A fixed instant for the fake clock (2030), far from the real one."""


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeVerifier:
    """Accepts the tokens it was told about with their span, refuses others; counts calls."""

    def __init__(self) -> None:
        self.spans: dict[str, tuple[float, float]] = {}
        self.calls = 0

    def accept(self, token: str, not_before: float = -math.inf, expires: float = T0 + 60) -> str:
        self.spans[token] = (not_before, expires)
        return token

    def verified(self, token: str) -> Verified:
        self.calls += 1
        if token not in self.spans:
            raise Unauthenticated("the bearer token's signature does not match")
        not_before, expires = self.spans[token]
        return Verified(Principal(f"sub-{token}", frozenset({"infer"}), "jwt"), not_before, expires)


def cached(verifier: Any, clock: Callable[[], float], **options: Any) -> TokenCache:
    return TokenCache(verifier, clock=clock, **options)


def test_a_hit_skips_verification() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock)
    token = fake.accept("a.b.c")
    first = cache.verify(token)
    assert cache.verify(token) == first == Principal("sub-a.b.c", frozenset({"infer"}), "jwt")
    assert fake.calls == 1
    assert len(cache) == 1


def test_a_token_stops_being_answered_at_its_exp() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock)
    token = fake.accept("a.b.c", expires=T0 + 60)
    cache.verify(token)
    clock.now = T0 + 59.999
    cache.verify(token)
    assert fake.calls == 1
    clock.now = T0 + 60  # exp itself: no longer valid, whatever the leeway
    del fake.spans[token]  # verification now refuses it (expired)
    with pytest.raises(Unauthenticated):
        cache.verify(token)
    assert fake.calls == 2
    assert len(cache) == 0
    with pytest.raises(Unauthenticated):
        cache.verify(token)  # and it stays refused
    assert fake.calls == 3


def test_a_token_accepted_past_its_exp_within_the_leeway_is_not_remembered() -> None:
    fake, clock = FakeVerifier(), Clock(T0 + 10)
    cache = cached(fake, clock)
    token = fake.accept("a.b.c", expires=T0)  # the verifier's leeway still accepts it
    cache.verify(token)
    cache.verify(token)
    assert fake.calls == 2
    assert len(cache) == 0


def test_a_hit_respects_not_before() -> None:
    fake, clock = FakeVerifier(), Clock(T0 - 10)
    cache = cached(fake, clock)
    # Accepted before its nbf (inside the verifier's leeway): verified again until nbf.
    token = fake.accept("a.b.c", not_before=T0, expires=T0 + 60)
    cache.verify(token)
    cache.verify(token)
    assert fake.calls == 2
    clock.now = T0
    cache.verify(token)
    cache.verify(token)
    assert fake.calls == 2
    # A clock set back before nbf: the entry does not answer, verification decides.
    clock.now = T0 - 3600
    del fake.spans[token]
    with pytest.raises(Unauthenticated):
        cache.verify(token)
    assert fake.calls == 3


def test_different_tokens_do_not_share_an_entry() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock)
    one, two = fake.accept("a.b.c"), fake.accept("a.b.d")
    assert cache.verify(one).name == "sub-a.b.c"
    assert cache.verify(two).name == "sub-a.b.d"
    assert cache.verify(one).name == "sub-a.b.c"
    assert fake.calls == 2
    with pytest.raises(Unauthenticated):
        cache.verify("a.b.e")


def test_the_bound_holds_and_the_least_recently_used_goes_first() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock, max_entries=3)
    tokens = [fake.accept(f"t.{index}.s") for index in range(4)]
    for token in tokens[:3]:
        cache.verify(token)
    cache.verify(tokens[0])  # used again: now the newest
    cache.verify(tokens[3])  # evicts tokens[1], the least recently used
    assert len(cache) == 3
    assert fake.calls == 4
    for token in (tokens[0], tokens[2], tokens[3]):
        cache.verify(token)
    assert fake.calls == 4
    cache.verify(tokens[1])
    assert fake.calls == 5
    assert len(cache) == 3


def test_a_refused_token_is_never_remembered() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            cache.verify("a.b.c")
    assert fake.calls == 3
    assert len(cache) == 0
    # Later accepted (say, the server's key now fits): it is, from then on.
    fake.accept("a.b.c")
    cache.verify("a.b.c")
    assert fake.calls == 4


def test_the_cache_keeps_only_hashes_of_tokens() -> None:
    fake, clock = FakeVerifier(), Clock()
    cache = cached(fake, clock)
    cache.verify(fake.accept("header.payload.signature"))
    (key,) = cache._entries  # the one stored key
    assert key == hashlib.sha256(b"header.payload.signature").digest()


def test_a_cache_needs_room_for_a_token() -> None:
    with pytest.raises(InvalidInput, match="at least one token"):
        TokenCache(FakeVerifier(), max_entries=0)  # type: ignore[arg-type]
    assert DEFAULT_MAX_ENTRIES >= 1000


# Real keys, real tokens: the cache in front of the real verifier.


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private_key: Any, algorithm: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "svc", "aud": AUDIENCE, "iat": now, "exp": now + 600, "scope": "infer"}
    claims.update(overrides)
    present = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(present, private_key, algorithm=algorithm)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decodes (verifies) during the test."""
    seen: list[str] = []
    decode = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


@pytest.mark.parametrize(("key_fixture", "algorithm"), [("rsa_key", "RS256"), ("ec_key", "ES256")])
def test_real_tokens_are_verified_once(
    request: pytest.FixtureRequest, decodes: list[str], key_fixture: str, algorithm: str
) -> None:
    private = request.getfixturevalue(key_fixture)
    cache = TokenCache(JwtVerifier(pem(private), audience=AUDIENCE))
    token = sign(private, algorithm)
    for _ in range(5):
        assert cache.verify(token) == Principal("svc", frozenset({"infer"}), "jwt")
    assert decodes == [token]


def test_a_real_token_is_verified_again_from_its_exp(
    rsa_key: rsa.RSAPrivateKey, decodes: list[str]
) -> None:
    now = int(time.time())
    clock = Clock(now)
    cache = TokenCache(JwtVerifier(pem(rsa_key), audience=AUDIENCE), clock=clock)
    token = sign(rsa_key, "RS256", exp=now + 600)
    cache.verify(token)
    clock.now = now + 599
    cache.verify(token)
    assert len(decodes) == 1
    clock.now = now + 600
    cache.verify(token)  # the real clock is before exp, so verification still accepts
    assert len(decodes) == 2


def test_the_span_comes_from_the_tokens_claims(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JwtVerifier(pem(rsa_key), audience=AUDIENCE)
    now = int(time.time())
    plain = verifier.verified(sign(rsa_key, "RS256", iat=None, exp=now + 600))
    assert (plain.not_before, plain.expires) == (-math.inf, now + 600)
    dated = verifier.verified(sign(rsa_key, "RS256", iat=now - 5, nbf=now - 60, exp=now + 60))
    assert (dated.not_before, dated.expires) == (now - 5, now + 60)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"aud": "another"}, "audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ],
)
def test_refused_real_tokens_stay_refused(
    rsa_key: rsa.RSAPrivateKey, decodes: list[str], overrides: dict[str, Any], words: str
) -> None:
    cache = TokenCache(JwtVerifier(pem(rsa_key), audience=AUDIENCE))
    token = sign(rsa_key, "RS256", **overrides)
    for _ in range(3):
        with pytest.raises(Unauthenticated, match=words):
            cache.verify(token)
    assert len(decodes) == 3
    assert len(cache) == 0


def test_a_token_signed_by_another_key_is_not_answered_from_a_lookalike(
    rsa_key: rsa.RSAPrivateKey, decodes: list[str]
) -> None:
    cache = TokenCache(JwtVerifier(pem(rsa_key), audience=AUDIENCE))
    good = sign(rsa_key, "RS256")
    cache.verify(good)
    header, payload, _ = good.split(".")
    forged = f"{header}.{payload}.{'A' * 342}"  # same claims, another signature
    with pytest.raises(Unauthenticated, match="signature"):
        cache.verify(forged)
    assert decodes == [good, forged]


def test_the_served_policy_caches_tokens(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, decodes: list[str]
) -> None:
    key_file = tmp_path / "issuer.pub"
    key_file.write_bytes(pem(rsa_key))
    policy = build_policy(AuthSettings(jwt_public_key=str(key_file), jwt_audience=AUDIENCE), None)
    token = sign(rsa_key, "RS256")
    for _ in range(3):
        assert policy.authenticate(f"Bearer {token}", None) == Principal(
            "svc", frozenset({"infer"}), "jwt"
        )
    assert decodes == [token]
