"""Credentials and who they prove: API keys from the registry, JWT bearer tokens from an issuer.

JWTs are verified offline against a configured public key (PEM) or a local JWKS file: only
asymmetric algorithms that match the key's type are accepted, so `alg: none` and HMAC tokens
signed with the public key as a secret are refused. No message repeats any part of a token.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, Self

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from modelport.errors import InvalidInput, Unauthenticated
from modelport.registry.keys import SCOPES, ApiKey

_PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

# Three dot-separated base64url parts; the last may be empty (`alg: none`), so such tokens
# still reach the verifier and are refused with a clear message rather than as an API key.
_JWT_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_MIN_RSA_BITS: Final = 2048
_DEFAULT_LEEWAY_S: Final = 30.0
_JWT_SUBJECT: Final = "jwt"
"""The principal name of a token without a `sub` claim."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented a valid credential, and the scopes (a subset of SCOPES) it carries."""

    name: str
    """The key's name (else its public id), or the token's `sub` claim; for logs, never secret."""
    scopes: frozenset[str]
    kind: Literal["key", "jwt"]

    @classmethod
    def of_key(cls, key: ApiKey) -> Self:
        """The principal an unrevoked API key proves."""
        return cls(name=key.label, scopes=frozenset((key.scope,)), kind="key")


@dataclass(frozen=True, slots=True)
class Verified:
    """A token that verification accepted: who it proves, and when its claims let it be used."""

    principal: Principal
    not_before: float
    """The latest of its `nbf` and `iat` (seconds since the epoch); -inf when it has neither."""
    expires: float
    """Its `exp` as the verifier reads it (seconds since the epoch, a whole number)."""


class TokenVerifier(Protocol):
    """What the policy asks of JWT verification: the principal, or Unauthenticated."""

    def verify(self, token: str) -> Principal:
        """The principal a valid token proves; Unauthenticated says why a token is refused."""
        ...


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer token has a JWT's shape (three base64url parts); says nothing more."""
    return _JWT_SHAPE.fullmatch(token) is not None


@dataclass(frozen=True, slots=True)
class _VerificationKey:
    key: _PublicKey
    algorithms: tuple[str, ...]


class JwtVerifier:
    """Verifies JWT bearer tokens offline and reads their modelport scopes.

    Keys come from a PEM public key (or certificate), a JWKS document, or both: a token whose
    header names a `kid` in the JWKS is checked with that key; otherwise with the PEM key, or
    the JWKS's only key. Tokens must carry `exp`; `aud` and `iss` must match when configured
    (a token naming an audience is refused when none is configured). `scope_claim` names the
    claim holding the scopes, a space-separated string or a list; a dotted name reaches into
    nested objects (`realm_access.roles`). Scopes other than SCOPES are ignored.
    """

    __slots__ = ("_audience", "_by_kid", "_default", "_issuer", "_leeway_s", "_scope_path")

    def __init__(
        self,
        public_key_pem: bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        scope_claim: str = "scope",
        leeway_s: float = _DEFAULT_LEEWAY_S,
    ) -> None:
        """InvalidInput when neither key source is given or one does not hold usable keys."""
        if public_key_pem is None and jwks is None:
            raise InvalidInput(
                "JWT verification needs a public key (PEM) or a JWKS file to check tokens with"
            )
        if not scope_claim or any(not part for part in scope_claim.split(".")):
            raise InvalidInput(
                f"invalid JWT scope claim name {scope_claim!r}: give a claim name such as "
                "'scope', or a dotted path such as 'realm_access.roles'"
            )
        if leeway_s < 0:
            raise InvalidInput(f"the JWT clock leeway must not be negative, got {leeway_s}")
        self._default = None if public_key_pem is None else _pem_key(public_key_pem)
        self._by_kid, unnamed = _jwks_keys(jwks) if jwks is not None else ({}, [])
        if self._default is None and len(self._by_kid) + len(unnamed) == 1:
            # A lone JWKS key checks tokens that name no kid, as a PEM key would.
            self._default = unnamed[0] if unnamed else next(iter(self._by_kid.values()))
        elif self._default is None and unnamed:
            raise InvalidInput(
                "the JWKS holds several keys, and some have no `kid`: give every key a "
                "distinct `kid` so that tokens can name the one that signed them"
            )
        self._audience = audience or None
        self._issuer = issuer or None
        self._scope_path = tuple(scope_claim.split("."))
        self._leeway_s = leeway_s

    @classmethod
    def from_files(
        cls,
        public_key_path: str | os.PathLike[str] | None,
        jwks_path: str | os.PathLike[str] | None,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        scope_claim: str = "scope",
        leeway_s: float = _DEFAULT_LEEWAY_S,
    ) -> Self:
        """A verifier from a PEM file and/or a JWKS JSON file (local files, never fetched).

        InvalidInput, naming the file by its base name, when one cannot be read or used.
        """
        pem = None if public_key_path is None else _read(public_key_path, "JWT public key")
        jwks: Any = None
        if jwks_path is not None:
            text = _read(jwks_path, "JWKS")
            try:
                jwks = json.loads(text)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise InvalidInput(
                    f"the JWKS file {os.path.basename(jwks_path)!r} is not JSON; give a JSON "
                    'Web Key Set ({"keys": [...]}) such as an issuer serves at its jwks_uri'
                ) from None
            if not isinstance(jwks, dict):
                raise InvalidInput(
                    f"the JWKS file {os.path.basename(jwks_path)!r} must hold a JSON object "
                    '{"keys": [...]}'
                )
        return cls(
            pem,
            jwks,
            audience=audience,
            issuer=issuer,
            scope_claim=scope_claim,
            leeway_s=leeway_s,
        )

    def verify(self, token: str) -> Principal:
        """The principal a valid token proves; Unauthenticated says why a token is refused."""
        return self.verified(token).principal

    def verified(self, token: str) -> Verified:
        """The token checked in full (signature, claims, clock), with the span it is valid in.

        Unauthenticated says why a token is refused.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated(
                "the bearer token is not a well-formed JWT; send a token from your identity "
                "provider, or an API key"
            ) from None
        choice = self._key_for(header.get("kid"))
        required = ["exp"]
        required += ["aud"] if self._audience else []
        required += ["iss"] if self._issuer else []
        try:
            claims = jwt.decode(
                token,
                choice.key,
                algorithms=list(choice.algorithms),
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": required},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_refusal(exc, choice.algorithms)) from None
        subject = claims.get("sub")
        principal = Principal(
            name=subject if isinstance(subject, str) and subject else _JWT_SUBJECT,
            scopes=self._scopes(claims),
            kind="jwt",
        )
        starts = [_instant(claims.get(name)) for name in ("nbf", "iat") if name in claims]
        return Verified(principal, max(starts, default=-math.inf), _instant(claims["exp"]))

    def _key_for(self, kid: object) -> _VerificationKey:
        if isinstance(kid, str) and kid in self._by_kid:
            return self._by_kid[kid]
        if self._default is not None:
            return self._default
        if kid is None:
            raise Unauthenticated(
                "the bearer token names no key id (`kid` header) and the server's JWKS holds "
                "several keys; have the issuer set `kid`"
            )
        raise Unauthenticated(
            "the bearer token was signed by a key (`kid`) that is not in the server's JWKS; "
            "if the issuer rotated its keys, update the server's JWKS file"
        )

    def _scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        value: Any = claims
        for part in self._scope_path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            return frozenset()
        claim = ".".join(self._scope_path)
        if isinstance(value, str):
            granted = value.split()
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            granted = value
        else:
            raise Unauthenticated(
                f"the bearer token's {claim!r} claim must be a space-separated string or a "
                "list of strings"
            )
        return frozenset(scope for scope in granted if scope in SCOPES)


def _instant(value: Any) -> float:
    """A time claim read as PyJWT reads it (`int(value)`), once it has accepted the claim."""
    return float(int(value))


def _refusal(exc: jwt.PyJWTError, algorithms: Sequence[str]) -> str:
    """Why a token was refused, from PyJWT's exception: never its text, which may quote claims."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the bearer token has expired; get a new one from your identity provider"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the bearer token is not valid yet (nbf or iat in the future); check the clocks"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the bearer token lacks the {exc.claim!r} claim, which this server requires"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the bearer token was issued for another audience (`aud`) than this server's"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the bearer token comes from another issuer (`iss`) than the one configured"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return (
            "the bearer token's signing algorithm is not accepted; for this server's key, sign "
            f"with {' or '.join(algorithms)}"
        )
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the bearer token's signature does not match the server's key for its issuer"
    if isinstance(exc, jwt.DecodeError):
        return "the bearer token is not a well-formed JWT"
    return "the bearer token is invalid; get a new one from your identity provider"


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the {what} file {os.path.basename(path)!r}: {exc.strerror}"
        ) from None


def _pem_key(pem: bytes) -> _VerificationKey:
    """The public key in `pem` (a public key or a certificate) and the algorithms it verifies."""
    if b"PRIVATE KEY-----" in pem:
        raise InvalidInput(
            "the JWT public key is a private key; give only its public half "
            "(`openssl pkey -in KEY.pem -pubout`), which is all a verifier needs"
        )
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            loaded: object = x509.load_pem_x509_certificate(pem).public_key()
        else:
            loaded = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(
            "the JWT public key is not a PEM public key or certificate; give a file that starts "
            "with -----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE-----"
        ) from None
    return _verification_key(loaded, "the JWT public key")


def _jwks_keys(
    jwks: Mapping[str, Any],
) -> tuple[dict[str, _VerificationKey], list[_VerificationKey]]:
    """The signing keys of a JWKS: those with a `kid` by kid, and those without one."""
    entries = jwks.get("keys")
    if not isinstance(entries, list) or not entries:
        raise InvalidInput('the JWKS holds no keys; give a JSON Web Key Set {"keys": [...]}')
    by_kid: dict[str, _VerificationKey] = {}
    unnamed: list[_VerificationKey] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInput(f"JWKS key {index} is not a JSON object")
        kid = entry.get("kid")
        where = f"JWKS key {kid!r}" if isinstance(kid, str) else f"JWKS key {index}"
        if entry.get("use") == "enc":
            continue  # an encryption key never signs tokens
        if "d" in entry:
            raise InvalidInput(f"{where} holds a private key; publish only public keys in the JWKS")
        if entry.get("kty") == "oct":
            raise InvalidInput(
                f"{where} is a shared secret (kty oct); only public keys (RSA, EC, OKP) verify "
                "tokens here, so that holding the verifying key never lets anyone sign"
            )
        try:
            # Parsed by its kty alone: a declared alg is checked against the key below.
            parsed = jwt.PyJWK({name: value for name, value in entry.items() if name != "alg"})
        except jwt.PyJWTError:
            raise InvalidInput(
                f"{where} is not a usable public key; check its kty, crv, alg and key fields"
            ) from None
        key = _verification_key(parsed.key, where)
        alg = entry.get("alg")
        if alg is not None:
            if alg not in key.algorithms:
                raise InvalidInput(
                    f"{where} declares alg {alg!r}, which does not fit its key; expected one "
                    f"of {', '.join(key.algorithms)}"
                )
            key = _VerificationKey(key.key, (alg,))
        if not isinstance(kid, str):
            unnamed.append(key)
        elif kid in by_kid:
            raise InvalidInput(f"the JWKS holds two keys with kid {kid!r}; key ids must differ")
        else:
            by_kid[kid] = key
    if not by_kid and not unnamed:
        raise InvalidInput("the JWKS holds only encryption keys (use enc); add a signing key")
    return by_kid, unnamed


def _verification_key(key: object, where: str) -> _VerificationKey:
    """`key` with the algorithms that may use it; InvalidInput for keys that cannot sign JWTs."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise InvalidInput(
                f"{where} is a {key.key_size}-bit RSA key; use at least {_MIN_RSA_BITS} bits"
            )
        return _VerificationKey(key, _RSA_ALGORITHMS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise InvalidInput(
                f"{where} is on curve {key.curve.name}; use P-256, P-384 or P-521 (ES256, "
                "ES384, ES512)"
            )
        return _VerificationKey(key, (algorithm,))
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _VerificationKey(key, ("EdDSA",))
    raise InvalidInput(f"{where} is not an RSA, EC or Ed25519/Ed448 public key")
