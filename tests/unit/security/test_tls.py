"""TlsFiles.load and load_tls: every unusable file is refused up front, naming the flag to fix."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn
from cryptography.hazmat.primitives import serialization

from modelport.errors import InvalidInput
from modelport.security.tls import TlsFiles, load_tls, metrics_port_tls, uvicorn_options


@dataclass(frozen=True)
class Pki:
    """A server certificate, its key, and a client CA, as files in one directory."""

    root: Path
    cert: Path
    key: Path
    client_ca: Path
    other_key: Path
    """A valid key that belongs to a different certificate."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(root / "server.pem")
    server.private_key_pem.write_to_path(root / "server.key")
    trustme.CA().cert_pem.write_to_path(root / "clients-ca.pem")
    ca.issue_cert("localhost").private_key_pem.write_to_path(root / "other.key")
    return Pki(
        root=root,
        cert=root / "server.pem",
        key=root / "server.key",
        client_ca=root / "clients-ca.pem",
        other_key=root / "other.key",
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def refused(call: Callable[[], Any], pki: Pki, *fragments: str) -> str:
    """Run `call`, expect InvalidInput, check it names `fragments` and leaks no path or PEM."""
    with pytest.raises(InvalidInput) as caught:
        call()
    message = caught.value.message
    for fragment in fragments:
        assert fragment in message, message
    assert str(pki.root) not in message, message
    for pem in (pki.cert, pki.key, pki.client_ca, pki.other_key):
        for line in pem.read_text().splitlines():
            if not line.startswith("-----"):
                assert line not in message, f"{message!r} quotes {pem.name}"
    return message


def test_a_working_pair_loads(pki: Pki) -> None:
    files = TlsFiles.load(pki.cert, pki.key)
    assert files == TlsFiles(pki.cert, pki.key, None)
    assert not files.mutual


def test_a_client_ca_makes_it_mutual(pki: Pki) -> None:
    files = TlsFiles.load(pki.cert, pki.key, pki.client_ca)
    assert files.client_ca == pki.client_ca
    assert files.mutual


def test_a_chain_and_a_combined_key_file_load(pki: Pki, tmp_path: Path) -> None:
    # Certificate files often carry the intermediates; key files sometimes carry the cert too.
    chain = write(tmp_path / "chain.pem", pki.cert.read_bytes() + pki.client_ca.read_bytes())
    combined = write(tmp_path / "combined.pem", pki.key.read_bytes() + pki.cert.read_bytes())
    assert TlsFiles.load(chain, combined).cert == chain


@pytest.mark.parametrize("which", ["cert", "key", "client_ca"])
def test_missing_file(pki: Pki, which: str) -> None:
    paths = {"cert": pki.cert, "key": pki.key, "client_ca": pki.client_ca}
    paths[which] = pki.root / "absent.pem"
    flag = {"cert": "--tls-cert", "key": "--tls-key", "client_ca": "--tls-client-ca"}[which]
    refused(lambda: TlsFiles.load(**paths), pki, flag, "'absent.pem'", "does not exist")


def test_a_directory_is_not_a_file(pki: Pki) -> None:
    refused(lambda: TlsFiles.load(pki.root, pki.key), pki, "--tls-cert", "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key(pki: Pki, tmp_path: Path) -> None:
    key = write(tmp_path / "locked.key", pki.key.read_bytes())
    key.chmod(0)
    refused(lambda: TlsFiles.load(pki.cert, key), pki, "--tls-key", "cannot read", "'locked.key'")


def test_certificate_not_pem(pki: Pki, tmp_path: Path) -> None:
    der = write(tmp_path / "server.der", ssl.PEM_cert_to_DER_cert(pki.cert.read_text()))
    refused(lambda: TlsFiles.load(der, pki.key), pki, "--tls-cert", "'server.der'", "no PEM")


def test_certificate_and_key_swapped(pki: Pki) -> None:
    message = refused(lambda: TlsFiles.load(pki.key, pki.cert), pki, "--tls-cert", "--tls-key")
    assert "private key" in message


def test_damaged_certificate(pki: Pki, tmp_path: Path) -> None:
    text = pki.cert.read_text().splitlines()
    text[3] = "!" * len(text[3])
    bad = write(tmp_path / "bad.pem", "\n".join(text).encode())
    refused(lambda: TlsFiles.load(bad, pki.key), pki, "--tls-cert", "damaged")


def test_key_not_pem(pki: Pki, tmp_path: Path) -> None:
    junk = write(tmp_path / "junk.key", b"not a key at all\n")
    refused(lambda: TlsFiles.load(pki.cert, junk), pki, "--tls-key", "'junk.key'", "no PEM")


def test_key_that_is_a_certificate(pki: Pki) -> None:
    refused(lambda: TlsFiles.load(pki.cert, pki.cert), pki, "--tls-key", "not a private key")


def test_damaged_key(pki: Pki, tmp_path: Path) -> None:
    lines = pki.key.read_text().splitlines()
    broken = write(tmp_path / "broken.key", "\n".join([lines[0], "AAAA", lines[-1]]).encode())
    refused(lambda: TlsFiles.load(pki.cert, broken), pki, "--tls-key", "not a usable")


def test_key_that_does_not_match_the_certificate(pki: Pki) -> None:
    refused(
        lambda: TlsFiles.load(pki.cert, pki.other_key),
        pki,
        "--tls-key",
        "'other.key'",
        "does not match",
        "'server.pem'",
    )


def test_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.key.read_bytes(), password=None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    encrypted = write(tmp_path / "encrypted.key", locked)
    refused(lambda: TlsFiles.load(pki.cert, encrypted), pki, "--tls-key", "encrypted")


def test_client_ca_not_pem(pki: Pki, tmp_path: Path) -> None:
    junk = write(tmp_path / "ca.txt", b"hello\n")
    refused(lambda: TlsFiles.load(pki.cert, pki.key, junk), pki, "--tls-client-ca", "'ca.txt'")


def test_client_ca_that_is_a_key(pki: Pki) -> None:
    refused(
        lambda: TlsFiles.load(pki.cert, pki.key, pki.key), pki, "--tls-client-ca", "private key"
    )


def test_no_flags_means_no_tls() -> None:
    assert load_tls(None, None, None) is None


def test_flags_load_the_files(pki: Pki) -> None:
    assert load_tls(pki.cert, pki.key, pki.client_ca) == TlsFiles(pki.cert, pki.key, pki.client_ca)


@pytest.mark.parametrize(
    ("given", "fragments"),
    [
        ({"cert": True}, ("--tls-cert needs --tls-key",)),
        ({"key": True}, ("--tls-key needs --tls-cert",)),
        ({"client_ca": True}, ("--tls-client-ca needs TLS",)),
        ({"cert": True, "client_ca": True}, ("--tls-cert needs --tls-key",)),
    ],
)
def test_partial_flags(pki: Pki, given: dict[str, bool], fragments: tuple[str, ...]) -> None:
    refused(
        lambda: load_tls(
            pki.cert if given.get("cert") else None,
            pki.key if given.get("key") else None,
            pki.client_ca if given.get("client_ca") else None,
        ),
        pki,
        *fragments,
    )


def uvicorn_context(files: TlsFiles) -> ssl.SSLContext:
    """The SSLContext uvicorn itself builds from `uvicorn_options(files)`."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(app, log_config=None, **uvicorn_options(files))
    config.load()
    assert config.ssl is not None
    return config.ssl


def test_uvicorn_context_without_client_ca(pki: Pki) -> None:
    context = uvicorn_context(TlsFiles.load(pki.cert, pki.key))
    assert context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_uvicorn_context_requires_client_certificates(pki: Pki) -> None:
    context = uvicorn_context(TlsFiles.load(pki.cert, pki.key, pki.client_ca))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # The client CA is the only trust anchor: no system CAs sign acceptable clients.
    assert len(context.get_ca_certs()) == 1


def test_uvicorn_ciphers_are_forward_secret_and_strong(pki: Pki) -> None:
    ciphers = uvicorn_context(TlsFiles.load(pki.cert, pki.key)).get_ciphers()
    assert ciphers
    for cipher in ciphers:
        assert cipher["kea"] in ("kx-ecdhe", "kx-dhe", "kx-any"), cipher["name"]
        assert cipher["symmetric"].startswith(("aes", "chacha20")), cipher["name"]
        assert cipher["digest"] in (None, "sha256", "sha384"), cipher["name"]


def test_the_metrics_port_tls_follows_the_api_unless_asked(pki: Pki) -> None:
    mutual = TlsFiles(pki.cert, pki.key, pki.client_ca)
    server_only = TlsFiles(pki.cert, pki.key)
    assert metrics_port_tls(mutual, "") == mutual
    assert metrics_port_tls(mutual, "mtls") == mutual
    assert metrics_port_tls(mutual, "tls") == server_only
    assert not server_only.mutual
    assert uvicorn_options(mutual.server_only())["ssl_cert_reqs"] == ssl.CERT_NONE
    assert metrics_port_tls(mutual, "plain") is None
    assert metrics_port_tls(server_only, "tls") == server_only
    assert metrics_port_tls(server_only, "") == server_only
    assert metrics_port_tls(None, "") is None
    assert metrics_port_tls(None, "plain") is None


@pytest.mark.parametrize(
    ("with_tls", "mode", "fragment"),
    [
        (False, "tls", "--metrics-tls tls needs TLS: add --tls-cert and --tls-key"),
        (False, "mtls", "--metrics-tls mtls needs TLS"),
        (True, "mtls", "--metrics-tls mtls needs client certificates: add --tls-client-ca"),
    ],
)
def test_the_metrics_port_tls_cannot_ask_more_than_the_files_give(
    pki: Pki, with_tls: bool, mode: str, fragment: str
) -> None:
    files = TlsFiles(pki.cert, pki.key) if with_tls else None
    with pytest.raises(InvalidInput) as caught:
        metrics_port_tls(files, mode)
    assert caught.value.message.startswith(fragment)
