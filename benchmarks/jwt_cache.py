"""Microseconds per JWT bearer-token verification, without and with the token cache.

Verifies the same RS256 (2048-bit) and ES256 (P-256) token NUMBER times per repeat with the
full verifier (`JwtVerifier.verify`: signature, claims, clock) and through a warm
`TokenCache` in front of it (a hit: one SHA-256 and a dictionary lookup), and prints the
median over REPEATS repeats:

    PYTHONPATH=src .venv/bin/python benchmarks/jwt_cache.py [--number 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelport.security.credentials import JwtVerifier
from modelport.security.token_cache import TokenCache


def _keys() -> dict[str, Any]:
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
    }


def _median_us(call: Callable[[], object], number: int, repeats: int) -> float:
    runs = timeit.repeat(call, number=number, repeat=repeats)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    """Print one line per algorithm: µs per verification, full and cached, and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="verifications per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats; the median is shown")
    args = parser.parse_args()
    now = int(time.time())
    claims = {"sub": "svc", "aud": "modelport", "iat": now, "exp": now + 3600, "scope": "infer"}
    print(f"{'alg':<6} {'full µs':>9} {'cached µs':>10} {'ratio':>7}")
    for algorithm, private in _keys().items():
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        verifier = JwtVerifier(public, audience="modelport")
        cache = TokenCache(verifier)
        token = jwt.encode(claims, private, algorithm=algorithm)
        cache.verify(token)  # warm: every timed call below is a hit
        full = _median_us(functools.partial(verifier.verify, token), args.number, args.repeats)
        cached = _median_us(functools.partial(cache.verify, token), args.number, args.repeats)
        print(f"{algorithm:<6} {full:>9.1f} {cached:>10.2f} {full / cached:>6.0f}x")


if __name__ == "__main__":
    main()
