"""TLS material for REST and gRPC: checked once at start-up, then handed to each server.

`--tls-cert` and `--tls-key` turn TLS on for every port; `--tls-client-ca` also requires each
client to present a certificate signed by that CA (mutual TLS). A metrics port of its own may
serve otherwise (`--metrics-tls`, see `metrics_port_tls`), so that probes and scrapers without a
client certificate reach it. REST keeps Python's `ssl` defaults for protocol versions and
ciphers (TLS 1.2 or newer, forward-secret suites); gRPC, being HTTP/2, narrows TLS 1.2 to the
AEAD suites HTTP/2 allows.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelport.errors import InvalidInput

CERT_FLAG = "--tls-cert"
KEY_FLAG = "--tls-key"
CLIENT_CA_FLAG = "--tls-client-ca"

H2_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
"""TLS 1.2 suites for HTTP/2: ephemeral key exchange and AEAD only (TLS 1.3's are all fine)."""

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKER = b"PRIVATE KEY-----"


class _EncryptedKey(Exception):
    """Raised by the password callback: the key needs a passphrase, which modelport never asks."""


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal and hang a server's start.
    raise _EncryptedKey


@dataclass(frozen=True)
class TlsFiles:
    """PEM files that together make a working server TLS configuration."""

    cert: Path
    """The server's certificate, optionally followed by its intermediate CAs."""
    key: Path
    """The private key that matches `cert`, unencrypted."""
    client_ca: Path | None = None
    """CA certificates that sign the client certificates to accept; None: no client certs."""

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by `client_ca`."""
        return self.client_ca is not None

    def server_only(self) -> TlsFiles:
        """The same server identity, asking clients for no certificate."""
        return replace(self, client_ca=None)

    @classmethod
    def load(cls, cert: Path, key: Path, client_ca: Path | None = None) -> TlsFiles:
        """Check that the files exist, are PEM, and that the key matches the certificate.

        InvalidInput names the flag to fix; messages show base names only, never contents.
        """
        cert_pem = _read(cert, CERT_FLAG)
        key_pem = _read(key, KEY_FLAG)
        ca_pem = None if client_ca is None else _read(client_ca, CLIENT_CA_FLAG)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _check_certificates(context, cert_pem, cert, CERT_FLAG)
        if _CERT_MARKER not in key_pem and _KEY_MARKER not in key_pem:
            raise InvalidInput(
                f"{KEY_FLAG} file {key.name!r} holds no PEM private key "
                "(a '-----BEGIN PRIVATE KEY-----' block); pass the server's key in PEM form"
            )
        if _KEY_MARKER not in key_pem:
            raise InvalidInput(
                f"{KEY_FLAG} file {key.name!r} holds a certificate, not a private key; "
                f"pass the certificate with {CERT_FLAG} and its key with {KEY_FLAG}"
            )
        try:
            context.load_cert_chain(cert, key, _no_passphrase)
        except _EncryptedKey:
            raise InvalidInput(
                f"{KEY_FLAG} file {key.name!r} is encrypted; pass an unencrypted key "
                "(e.g. `openssl pkey -in KEY -out PLAIN`) and restrict who can read it"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise InvalidInput(
                    f"{KEY_FLAG} file {key.name!r} does not match the certificate in "
                    f"{CERT_FLAG} file {cert.name!r}; pass the key the certificate was issued for"
                ) from None
            raise InvalidInput(
                f"{KEY_FLAG} file {key.name!r} is not a usable PEM private key "
                f"for {CERT_FLAG} file {cert.name!r}; pass the server's unencrypted PEM key"
            ) from None
        if client_ca is not None and ca_pem is not None:
            _check_certificates(context, ca_pem, client_ca, CLIENT_CA_FLAG)
        return cls(cert=cert, key=key, client_ca=client_ca)


def load_tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
    """The TLS files the three flags name, checked; None when TLS is off (no flag given).

    InvalidInput when only some flags are given or a file is unusable (see TlsFiles.load).
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise InvalidInput(f"{CLIENT_CA_FLAG} needs TLS: also pass {CERT_FLAG} and {KEY_FLAG}")
        return None
    if cert is None or key is None:
        given, missing = (CERT_FLAG, KEY_FLAG) if key is None else (KEY_FLAG, CERT_FLAG)
        raise InvalidInput(
            f"{given} needs {missing}: pass both the certificate and its key, or neither"
        )
    return TlsFiles.load(cert, key, client_ca)


def metrics_port_tls(api: TlsFiles | None, mode: str) -> TlsFiles | None:
    """The TLS of a metrics port of its own, given the API's and `--metrics-tls` `mode`.

    "" (not set) and "mtls" serve as the API does, "tls" with the server certificate alone,
    "plain" without TLS. InvalidInput when `mode` asks for more than the API's files give
    (the settings refuse that first; this keeps the rule where the files are).
    """
    if mode == "plain":
        return None
    if mode in ("tls", "mtls") and api is None:
        raise InvalidInput(f"--metrics-tls {mode} needs TLS: add {CERT_FLAG} and {KEY_FLAG}")
    if mode == "mtls" and api is not None and not api.mutual:
        raise InvalidInput(f"--metrics-tls mtls needs client certificates: add {CLIENT_CA_FLAG}")
    if mode == "tls" and api is not None:
        return api.server_only()
    return api


def uvicorn_options(files: TlsFiles) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` that serve TLS with `files`.

    uvicorn builds one SSLContext in `Config.load` and wraps every listening socket of that
    server with it, so a metrics port that serves otherwise has a server (and options) of its
    own. The ciphers are set to None because uvicorn before 0.48 defaulted to the
    "TLSv1" cipher string, which drops the TLS 1.2 AEAD suites; None keeps Python's defaults.
    """
    return {
        "ssl_certfile": str(files.cert),
        "ssl_keyfile": str(files.key),
        "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        "ssl_ciphers": None,
        "ssl_ca_certs": None if files.client_ca is None else str(files.client_ca),
        "ssl_cert_reqs": ssl.CERT_REQUIRED if files.mutual else ssl.CERT_NONE,
    }


def grpc_context(files: TlsFiles) -> ssl.SSLContext:
    """The SSLContext the gRPC port serves with, read from `files` now.

    TLS 1.2 or newer, with ALPN "h2" (gRPC speaks only HTTP/2) and, for TLS 1.2, only the
    forward-secret AEAD suites HTTP/2 allows (RFC 9113 §9.2.2). With a client CA, a client
    without a certificate signed by it cannot connect.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(H2_CIPHERS)
    context.set_alpn_protocols(["h2"])
    # Read again rather than kept from load(): the files may have been renewed in between.
    context.load_cert_chain(files.cert, files.key, _no_passphrase)
    if files.client_ca is not None:
        context.load_verify_locations(cafile=files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _read(path: Path, flag: str) -> bytes:
    """The bytes of the regular file `path`; InvalidInput naming `flag` when it cannot be read."""
    if not path.exists():
        raise InvalidInput(f"{flag} file {path.name!r} does not exist; check the path")
    if not path.is_file():
        raise InvalidInput(f"{flag} {path.name!r} is not a regular file; pass a PEM file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {flag} file {path.name!r}: {exc.strerror}; "
            "check that the server's user may read it"
        ) from None


def _check_certificates(context: ssl.SSLContext, pem: bytes, path: Path, flag: str) -> None:
    """Raise InvalidInput naming `flag` unless `pem` holds at least one parseable certificate."""
    if _CERT_MARKER not in pem:
        if _KEY_MARKER not in pem:
            hint = "expected '-----BEGIN CERTIFICATE-----' blocks"
        elif flag == CERT_FLAG:
            hint = f"it holds a private key: pass that with {KEY_FLAG}"
        else:
            hint = "it holds a private key: pass the CA's certificate, never a key"
        raise InvalidInput(f"{flag} file {path.name!r} holds no PEM certificate ({hint})")
    try:
        # Only to parse every certificate block; the context is a throwaway.
        context.load_verify_locations(cadata=pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise InvalidInput(
            f"{flag} file {path.name!r} holds a damaged PEM certificate; "
            "pass the certificate file as issued"
        ) from None
