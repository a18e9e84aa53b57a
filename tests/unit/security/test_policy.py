"""The authorization policy over real API keys (a SQLite registry) and real signed JWTs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelport.errors import Forbidden, Unauthenticated
from modelport.registry.keys import SCOPES, ApiKey, KeyStore
from modelport.registry.store import Registry
from modelport.security.credentials import JwtVerifier, Principal
from modelport.security.policy import GRANTS, HOW_TO_SEND, Action, Policy

EVERY_ACTION = tuple(Action)
PROTECTED = tuple(action for action in Action if action is not Action.HEALTH)


class Clock:
    """A clock that moves only when told to, so cache expiry is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLookup:
    """The real KeyStore.verify, counting how often the policy reaches the database."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.calls = 0

    def __call__(self, secret: str) -> ApiKey | None:
        self.calls += 1
        return self.store.verify(secret)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    location = tmp_path / "registry"
    Registry.open(location).close()
    with KeyStore.open(location) as opened:
        yield opened


@pytest.fixture
def secrets(store: KeyStore) -> dict[str, str]:
    """One key per scope: scope -> secret."""
    return {scope: store.create(scope, name=scope, created_by="tests")[0] for scope in SCOPES}


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier(signing_key: rsa.RSAPrivateKey) -> JwtVerifier:
    public = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return JwtVerifier(public, None, audience="modelport", issuer=None)


def token(signing_key: rsa.RSAPrivateKey, scope: str) -> str:
    now = int(time.time())
    payload = {"sub": "svc", "aud": "modelport", "exp": now + 600, "scope": scope}
    return jwt.encode(payload, signing_key, algorithm="RS256")


@pytest.fixture
def policy(store: KeyStore, verifier: JwtVerifier) -> Policy:
    return Policy(store.verify, verifier, required=True)


def test_the_grants_are_the_documented_ones() -> None:
    assert set(GRANTS) == set(SCOPES)
    assert GRANTS["infer"] == {Action.INFER, Action.METADATA}
    assert GRANTS["read"] == {Action.METADATA, Action.METRICS, Action.LOGS}
    assert set(PROTECTED) <= GRANTS["admin"]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_each_scope_allows_exactly_its_actions(
    policy: Policy, secrets: dict[str, str], scope: str, header: str
) -> None:
    secret = secrets[scope]
    credentials = (f"Bearer {secret}", None) if header == "authorization" else (None, secret)
    for action in PROTECTED:
        if action in GRANTS[scope]:
            principal = policy.admit(*credentials, action)
            assert principal == Principal(scope, frozenset({scope}), "key")
        else:
            with pytest.raises(Forbidden) as caught:
                policy.admit(*credentials, action)
            assert f"this credential has {scope!r}" in caught.value.message
            assert secret not in caught.value.message


def test_forbidden_names_the_scope_needed(policy: Policy, secrets: dict[str, str]) -> None:
    read = f"Bearer {secrets['read']}"
    infer = f"Bearer {secrets['infer']}"
    with pytest.raises(Forbidden, match="administration needs the 'admin' scope"):
        policy.admit(read, None, Action.ADMIN)
    with pytest.raises(Forbidden, match="inference needs the 'infer' or 'admin' scope"):
        policy.admit(read, None, Action.INFER)
    with pytest.raises(Forbidden, match="reading metrics needs the 'read' or 'admin' scope"):
        policy.admit(infer, None, Action.METRICS)


@pytest.mark.parametrize("action", PROTECTED)
def test_no_credential_is_unauthenticated_and_says_how_to_send_one(
    policy: Policy, action: Action
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        policy.admit(None, None, action)
    assert HOW_TO_SEND in caught.value.message
    assert "Authorization: Bearer KEY" in caught.value.message
    assert "x-api-key" in caught.value.message


def test_health_is_open_whatever_is_presented(policy: Policy) -> None:
    for authorization, api_key in [
        (None, None),
        ("Bearer mp_garbage", None),
        (None, "nonsense"),
        ("Basic dXNlcjpwYXNz", None),
    ]:
        assert policy.admit(authorization, api_key, Action.HEALTH) is None
    policy.authorize(None, Action.HEALTH)


@pytest.mark.parametrize(
    ("authorization", "api_key", "words"),
    [
        ("Bearer mp_" + "A" * 43, None, "unknown or revoked"),
        (None, "mp_" + "B" * 43, "unknown or revoked"),
        ("Bearer sk-live-1234", None, "malformed"),
        (None, "hunter2", "malformed"),
        (None, "", "malformed"),
        ("Bearer ", None, "empty"),
        ("Bearer", None, "empty"),
        ("Basic dXNlcjpwYXNz", None, "Bearer scheme"),
        ("Bearer a.b.c", None, "well-formed JWT"),
    ],
)
def test_invalid_credentials_are_unauthenticated_without_echoing_them(
    policy: Policy, authorization: str | None, api_key: str | None, words: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        policy.admit(authorization, api_key, Action.METADATA)
    message = caught.value.message
    assert words in message
    presented = (authorization or "").removeprefix("Bearer").strip() or api_key
    if presented:
        assert presented not in message


def test_two_credentials_at_once_are_refused(policy: Policy, secrets: dict[str, str]) -> None:
    with pytest.raises(Unauthenticated, match="send one"):
        policy.admit(f"Bearer {secrets['admin']}", secrets["admin"], Action.INFER)


def test_another_authorization_scheme_leaves_x_api_key_in_charge(
    policy: Policy, secrets: dict[str, str]
) -> None:
    # A proxy in front may add its own Authorization header.
    principal = policy.admit("Basic dXNlcjpwYXNz", secrets["infer"], Action.INFER)
    assert principal is not None
    assert principal.name == "infer"


def test_scheme_and_whitespace_are_lenient(policy: Policy, secrets: dict[str, str]) -> None:
    assert policy.admit(f"bearer  {secrets['read']} ", None, Action.LOGS) is not None
    assert policy.admit(None, f" {secrets['read']}\t", Action.LOGS) is not None


def test_jwt_bearer_tokens(policy: Policy, signing_key: rsa.RSAPrivateKey) -> None:
    principal = policy.admit(f"Bearer {token(signing_key, 'read')}", None, Action.METRICS)
    assert principal == Principal("svc", frozenset({"read"}), "jwt")
    with pytest.raises(Forbidden, match="'admin' scope"):
        policy.admit(f"Bearer {token(signing_key, 'read')}", None, Action.ADMIN)
    with pytest.raises(Forbidden, match="has no modelport scope"):
        policy.admit(f"Bearer {token(signing_key, 'openid')}", None, Action.METADATA)


def test_a_server_without_jwt_refuses_tokens_clearly(
    store: KeyStore, signing_key: rsa.RSAPrivateKey
) -> None:
    policy = Policy(store.verify, None, required=True)
    with pytest.raises(Unauthenticated, match="accepts no JWT"):
        policy.admit(f"Bearer {token(signing_key, 'admin')}", None, Action.INFER)


def test_a_server_without_keys_refuses_keys_clearly(
    verifier: JwtVerifier, secrets: dict[str, str]
) -> None:
    policy = Policy(None, verifier, required=True)
    with pytest.raises(Unauthenticated, match="accepts no API keys"):
        policy.admit(None, secrets["admin"], Action.INFER)


def test_when_not_required_everything_is_allowed_but_bad_credentials_are_not(
    store: KeyStore, verifier: JwtVerifier, secrets: dict[str, str]
) -> None:
    policy = Policy(store.verify, verifier, required=False)
    assert not policy.required
    for action in EVERY_ACTION:
        assert policy.admit(None, None, action) is None
        # A valid key is recognised, and its scope does not limit it while auth is off.
        principal = policy.admit(None, secrets["infer"], action)
        expected = None if action is Action.HEALTH else Principal("infer", {"infer"}, "key")
        assert principal == expected
    assert policy.admit("Basic dXNlcjpwYXNz", None, Action.ADMIN) is None
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        policy.admit(None, "mp_" + "C" * 43, Action.INFER)
    with pytest.raises(Unauthenticated, match="well-formed"):
        policy.admit("Bearer x.y.z", None, Action.INFER)


def test_a_revoke_takes_effect_when_the_cache_expires(store: KeyStore) -> None:
    secret, key = store.create("infer", name="app", created_by="tests")
    clock = Clock()
    lookup = CountingLookup(store)
    policy = Policy(lookup, None, required=True, cache_ttl_s=5.0, clock=clock)
    for _ in range(50):
        policy.admit(f"Bearer {secret}", None, Action.INFER)
    assert lookup.calls == 1  # the hot path does not reach the database per request
    store.revoke(key.id, revoked_by="tests")
    clock.now += 4.9
    assert policy.admit(f"Bearer {secret}", None, Action.INFER) is not None  # still cached
    clock.now += 0.2
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        policy.admit(f"Bearer {secret}", None, Action.INFER)
    assert lookup.calls == 2


def test_misses_are_cached_too(store: KeyStore) -> None:
    clock = Clock()
    lookup = CountingLookup(store)
    policy = Policy(lookup, None, required=True, cache_ttl_s=5.0, clock=clock)
    unknown = "mp_" + "D" * 43
    for _ in range(20):
        with pytest.raises(Unauthenticated):
            policy.admit(None, unknown, Action.INFER)
    assert lookup.calls == 1
    # Malformed keys never reach the database at all.
    with pytest.raises(Unauthenticated, match="malformed"):
        policy.admit(None, "not-a-key", Action.INFER)
    assert lookup.calls == 1


def test_with_no_cache_a_revoke_takes_effect_at_once(store: KeyStore) -> None:
    secret, _ = store.create("admin", name="ops", created_by="tests")
    policy = Policy(store.verify, None, required=True, cache_ttl_s=0)
    assert policy.admit(None, secret, Action.ADMIN) is not None
    store.revoke("ops", revoked_by="tests")
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        policy.admit(None, secret, Action.ADMIN)
