"""JWT verification with real keys and real signed tokens: what is accepted and what is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from modelport.errors import InvalidInput, Unauthenticated
from modelport.security.credentials import JwtVerifier, Principal, looks_like_jwt

AUDIENCE = "modelport"
ISSUER = "https://idp.example"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pem(private_key: Any) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "svc-checkout",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
        "scope": "infer read",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def sign(private_key: Any, algorithm: str, kid: str | None = None, **overrides: Any) -> str:
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims(**overrides), private_key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, as an attacker would: no library refuses to make it."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature)}"


def verifier(public_key_pem: bytes | None = None, jwks: Any = None, **options: Any) -> JwtVerifier:
    options = {"audience": AUDIENCE, "issuer": ISSUER, **options}
    return JwtVerifier(public_key_pem, jwks, **options)


def refused(check: JwtVerifier, token: str, *words: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        check.verify(token)
    message = caught.value.message
    for word in words:
        assert word in message, message
    # Nothing of the token travels back: not its parts, not its subject.
    for part in token.split("."):
        if len(part) > 3:
            assert part not in message
    assert "svc-checkout" not in message
    return message


@pytest.mark.parametrize(
    ("key_fixture", "algorithm"),
    [
        ("rsa_key", "RS256"),
        ("rsa_key", "RS512"),
        ("rsa_key", "PS256"),
        ("ec_key", "ES256"),
        ("ed_key", "EdDSA"),
    ],
)
def test_valid_tokens_prove_their_subject_and_scopes(
    request: pytest.FixtureRequest, key_fixture: str, algorithm: str
) -> None:
    key = request.getfixturevalue(key_fixture)
    principal = verifier(pem(key)).verify(sign(key, algorithm))
    assert principal == Principal("svc-checkout", frozenset({"infer", "read"}), "jwt")


def test_scopes_as_a_list_a_nested_claim_and_unknown_names(rsa_key: rsa.RSAPrivateKey) -> None:
    listed = sign(rsa_key, "RS256", scope=["admin", "openid"])
    assert verifier(pem(rsa_key)).verify(listed).scopes == {"admin"}
    nested = sign(rsa_key, "RS256", scope=None, realm_access={"roles": ["read", "offline"]})
    check = verifier(pem(rsa_key), scope_claim="realm_access.roles")
    assert check.verify(nested).scopes == {"read"}
    custom = sign(rsa_key, "RS256", scope=None, permissions="infer profile")
    assert verifier(pem(rsa_key), scope_claim="permissions").verify(custom).scopes == {"infer"}


def test_a_token_without_scopes_proves_its_subject_with_none(rsa_key: rsa.RSAPrivateKey) -> None:
    principal = verifier(pem(rsa_key)).verify(sign(rsa_key, "RS256", scope=None, sub=None))
    assert principal == Principal("jwt", frozenset(), "jwt")


@pytest.mark.parametrize("value", [7, {"infer": True}, ["infer", 3]])
def test_a_scope_claim_of_another_type_is_refused(rsa_key: rsa.RSAPrivateKey, value: Any) -> None:
    refused(verifier(pem(rsa_key)), sign(rsa_key, "RS256", scope=value), "'scope' claim")


def test_expired_and_not_yet_valid_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    check = verifier(pem(rsa_key), leeway_s=5)
    hour_ago = int(time.time()) - 3600
    refused(check, sign(rsa_key, "RS256", exp=hour_ago), "expired")
    refused(check, sign(rsa_key, "RS256", nbf=int(time.time()) + 3600), "not valid yet")
    # Within the leeway, a token is still good: clocks differ a little.
    assert check.verify(sign(rsa_key, "RS256", exp=int(time.time()) - 1)).name == "svc-checkout"


def test_a_token_must_expire(rsa_key: rsa.RSAPrivateKey) -> None:
    refused(verifier(pem(rsa_key)), sign(rsa_key, "RS256", exp=None), "'exp' claim")


def test_audience_and_issuer(rsa_key: rsa.RSAPrivateKey) -> None:
    check = verifier(pem(rsa_key))
    refused(check, sign(rsa_key, "RS256", aud="another-service"), "audience")
    refused(check, sign(rsa_key, "RS256", aud=None), "'aud' claim")
    refused(check, sign(rsa_key, "RS256", iss="https://evil.example"), "issuer")
    refused(check, sign(rsa_key, "RS256", iss=None), "'iss' claim")
    assert check.verify(sign(rsa_key, "RS256", aud=["other", AUDIENCE])).name == "svc-checkout"
    # Without a configured audience, a token meant for some audience is refused all the same.
    refused(verifier(pem(rsa_key), audience=None), sign(rsa_key, "RS256"), "audience")
    open_check = verifier(pem(rsa_key), audience=None, issuer=None)
    token = sign(rsa_key, "RS256", aud=None, iss="anyone")
    assert open_check.verify(token).name == "svc-checkout"


def test_a_token_signed_by_another_key(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    refused(verifier(pem(rsa_key)), sign(other_rsa_key, "RS256"), "signature")


def test_a_tampered_token(rsa_key: rsa.RSAPrivateKey) -> None:
    header, _, signature = sign(rsa_key, "RS256").split(".")
    forged = b64(json.dumps(claims(scope="admin")).encode())
    refused(verifier(pem(rsa_key)), f"{header}.{forged}.{signature}", "signature")


def test_alg_none_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = handmade({"alg": "none", "typ": "JWT"}, claims(scope="admin"))
    assert looks_like_jwt(token)
    refused(verifier(pem(rsa_key)), token, "algorithm")


def test_hmac_with_the_public_key_as_secret_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    # The classic algorithm confusion: the public key is public, so anyone can MAC with it.
    public = pem(rsa_key)
    header = {"alg": "HS256", "typ": "JWT"}
    unsigned = handmade(header, claims(scope="admin")).rsplit(".", 1)[0]
    signature = hmac.new(public, unsigned.encode(), hashlib.sha256).digest()
    token = f"{unsigned}.{b64(signature)}"
    refused(verifier(public), token, "algorithm", "RS256")
    # The same trick against a JWKS key, whose JSON form an attacker may use as the secret.
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    secret = json.dumps(jwk).encode()
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    refused(verifier(jwks={"keys": [jwk]}), f"{unsigned}.{b64(signature)}", "algorithm")


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    refused(verifier(pem(rsa_key)), sign(ec_key, "ES256"), "algorithm")
    refused(verifier(pem(ec_key)), sign(rsa_key, "RS256"), "algorithm", "ES256")


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOi.x.y"])
def test_malformed_tokens(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    refused(verifier(pem(rsa_key)), token, "well-formed")


def test_looks_like_jwt(rsa_key: rsa.RSAPrivateKey) -> None:
    assert looks_like_jwt(sign(rsa_key, "RS256"))
    assert not looks_like_jwt("mp_" + "A" * 43)
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")


# -- JWKS -----------------------------------------------------------------------------------


def jwk(private_key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        found = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        found = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        found = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        found["kid"] = kid
    return {**found, **extra}


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def test_a_jwks_file_picks_the_key_by_kid(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    path = write_jwks(
        tmp_path / "jwks.json",
        jwk(rsa_key, "rsa-1", use="sig", alg="RS256"),
        jwk(ec_key, "ec-1"),
        jwk(ed_key, "ed-1"),
        jwk(other_rsa_key, "enc-1", use="enc"),
    )
    check = JwtVerifier.from_files(None, path, audience=AUDIENCE, issuer=ISSUER)
    assert check.verify(sign(rsa_key, "RS256", kid="rsa-1")).name == "svc-checkout"
    assert check.verify(sign(ec_key, "ES256", kid="ec-1")).name == "svc-checkout"
    assert check.verify(sign(ed_key, "EdDSA", kid="ed-1")).name == "svc-checkout"
    # The JWK says RS256 only; RS512 with the same key is refused.
    refused(check, sign(rsa_key, "RS512", kid="rsa-1"), "algorithm")
    # Claiming another key's kid does not help a token signed by the wrong key.
    refused(check, sign(other_rsa_key, "RS256", kid="rsa-1"), "signature")
    refused(check, sign(other_rsa_key, "RS256", kid="enc-1"), "kid", "JWKS")
    refused(check, sign(rsa_key, "RS256", kid="rotated-away"), "kid", "JWKS")
    refused(check, sign(rsa_key, "RS256"), "no key id")


def test_a_lone_jwks_key_checks_tokens_without_kid(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = write_jwks(tmp_path / "jwks.json", jwk(ec_key, None))
    check = JwtVerifier.from_files(None, path, audience=AUDIENCE, issuer=ISSUER)
    assert check.verify(sign(ec_key, "ES256")).scopes == {"infer", "read"}


def test_a_pem_key_and_a_jwks_together(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    pem_path = tmp_path / "key.pem"
    pem_path.write_bytes(pem(rsa_key))
    jwks_path = write_jwks(tmp_path / "jwks.json", jwk(ec_key, "ec-1"))
    check = JwtVerifier.from_files(pem_path, jwks_path, audience=AUDIENCE, issuer=ISSUER)
    assert check.verify(sign(ec_key, "ES256", kid="ec-1")).name == "svc-checkout"
    assert check.verify(sign(rsa_key, "RS256")).name == "svc-checkout"
    assert check.verify(sign(rsa_key, "RS256", kid="from-elsewhere")).name == "svc-checkout"


def test_a_certificate_holds_the_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    check = verifier(certificate.public_bytes(serialization.Encoding.PEM))
    assert check.verify(sign(rsa_key, "RS256")).name == "svc-checkout"


def _invalid_jwks(private: rsa.RSAPrivateKey) -> list[tuple[Any, str]]:
    private_jwk = RSAAlgorithm.to_jwk(private, as_dict=True)
    public_jwk = jwk(private, "a")
    return [
        ({"keys": []}, "no keys"),
        ({"nokeys": 1}, "no keys"),
        ({"keys": ["text"]}, "not a JSON object"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "shared secret"),
        ({"keys": [{**private_jwk, "kid": "p"}]}, "private key"),
        ({"keys": [{**public_jwk, "alg": "ES256"}]}, "does not fit"),
        ({"keys": [{**public_jwk, "alg": "HS256"}]}, "does not fit"),
        ({"keys": [{**public_jwk, "alg": "none"}]}, "does not fit"),
        ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "not a usable public key"),
        ({"keys": [public_jwk, public_jwk]}, "two keys"),
        ({"keys": [{**public_jwk, "use": "enc"}]}, "only encryption keys"),
        ({"keys": [jwk(private, None), jwk(private, "b")]}, "no `kid`"),
    ]


def test_unusable_jwks_documents_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    for document, words in _invalid_jwks(rsa_key):
        with pytest.raises(InvalidInput, match=words):
            JwtVerifier(None, document)


def test_unusable_pem_keys_are_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    private_pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidInput, match="private key") as caught:
        JwtVerifier(private_pem, None)
    assert private_pem.decode().splitlines()[1] not in caught.value.message
    with pytest.raises(InvalidInput, match="not a PEM public key"):
        JwtVerifier(b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n", None)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidInput, match="1024-bit"):
        JwtVerifier(pem(small), None)
    with pytest.raises(InvalidInput, match="curve secp256k1"):
        JwtVerifier(pem(ec.generate_private_key(ec.SECP256K1())), None)
    with pytest.raises(InvalidInput, match="public key \\(PEM\\) or a JWKS"):
        JwtVerifier(None, None)


@pytest.mark.parametrize("claim", ["", ".", "a..b", "roles."])
def test_bad_scope_claim_names(rsa_key: rsa.RSAPrivateKey, claim: str) -> None:
    with pytest.raises(InvalidInput, match="scope claim"):
        JwtVerifier(pem(rsa_key), None, scope_claim=claim)


def test_files_that_cannot_be_used_are_named_by_base_name_only(tmp_path: Path) -> None:
    secret_dir = tmp_path / "private-dir"
    secret_dir.mkdir()
    cases = [
        (secret_dir / "missing.pem", None, "cannot read the JWT public key file 'missing.pem'"),
        (None, secret_dir / "missing.json", "cannot read the JWKS file 'missing.json'"),
    ]
    not_json = secret_dir / "jwks.txt"
    not_json.write_text("keys: []")
    cases.append((None, not_json, "'jwks.txt' is not JSON"))
    a_list = secret_dir / "list.json"
    a_list.write_text("[]")
    cases.append((None, a_list, "must hold a JSON object"))
    for pem_path, jwks_path, words in cases:
        with pytest.raises(InvalidInput) as caught:
            JwtVerifier.from_files(pem_path, jwks_path)
        assert words in caught.value.message
        assert "private-dir" not in caught.value.message
