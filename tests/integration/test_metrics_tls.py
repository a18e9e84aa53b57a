"""The metrics port beside a mutual-TLS API (`--metrics-tls`): probes and scrapes without a
client certificate, on real `modelport serve` processes.

The API port always keeps asking for the client certificate; the metrics port serves /metrics
and the health checks as `--metrics-tls` says.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from modelport.registry.keys import KeyStore

from .conftest import ServerFactory, ServerProcess, assert_dropped, free_port

pytestmark = pytest.mark.integration

READY = "/v2/health/ready"
LIVE = "/v2/health/live"
TIMEOUT = 30.0


@dataclass(frozen=True)
class Pki:
    """The server's files as flags, the CA that signed them, and a client certificate."""

    flags: tuple[str, ...]
    """--tls-cert, --tls-key and --tls-client-ca."""
    ca: Path
    client: trustme.LeafCert

    def trusting(self, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context that trusts the server's CA, presenting `client` if asked."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            self.client.configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    cert = server_ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    cert.private_key_pem.write_to_path(str(root / "server.key"))
    server_ca.cert_pem.write_to_path(str(root / "ca.pem"))
    client_ca.cert_pem.write_to_path(str(root / "clients-ca.pem"))
    flags = (
        "--tls-cert", str(root / "server.pem"), "--tls-key", str(root / "server.key"),
        "--tls-client-ca", str(root / "clients-ca.pem"),
    )  # fmt: skip
    return Pki(flags, root / "ca.pem", client_ca.issue_cert("client@example.com"))


def serve(
    start_server: ServerFactory, registry_dir: Path, pki: Pki, *extra: str
) -> tuple[ServerProcess, int]:
    port = free_port()
    server = start_server(
        "--registry", str(registry_dir), *pki.flags, "--metrics-port", str(port), *extra
    )
    return server, port


def get(url: str, verify: ssl.SSLContext | bool = True, **headers: str) -> httpx.Response:
    return httpx.get(url, verify=verify, headers=headers, timeout=TIMEOUT)


def assert_api_needs_the_certificate(server: ServerProcess, pki: Pki) -> None:
    assert server.url.startswith("https://")
    assert_dropped(server.url + READY, pki.trusting())
    assert get(server.url + READY, pki.trusting(with_certificate=True)).status_code == 200


@pytest.mark.parametrize("mode", [None, "mtls"])
def test_mtls_on_the_metrics_port_by_default_and_on_request(
    start_server: ServerFactory, registry_dir: Path, pki: Pki, mode: str | None
) -> None:
    extra = () if mode is None else ("--metrics-tls", mode)
    server, port = serve(start_server, registry_dir, pki, *extra)
    assert f"metrics and health at https://127.0.0.1:{port}" in server.output[0]
    metrics = f"https://127.0.0.1:{port}"
    for path in ("/metrics", READY):
        assert_dropped(metrics + path, pki.trusting())
        assert get(metrics + path, pki.trusting(with_certificate=True)).status_code == 200
    assert_api_needs_the_certificate(server, pki)


def test_tls_on_the_metrics_port_asks_no_client_certificate(
    start_server: ServerFactory, registry_dir: Path, pki: Pki
) -> None:
    server, port = serve(start_server, registry_dir, pki, "--metrics-tls", "tls")
    assert f"at https://127.0.0.1:{port} (no client certificate)" in server.output[0]
    metrics = f"https://127.0.0.1:{port}"
    scrape = get(metrics + "/metrics", pki.trusting())
    assert scrape.status_code == 200
    assert "modelport_requests_total" in scrape.text
    assert get(metrics + READY, pki.trusting()).json() == {"ready": True}
    assert get(metrics + LIVE, pki.trusting()).json() == {"live": True}
    # Still TLS: plain HTTP is dropped, and the server's certificate is the API's.
    assert_dropped(f"http://127.0.0.1:{port}{READY}")
    with pytest.raises(httpx.ConnectError):
        get(metrics + READY, ssl.create_default_context())
    # The metrics port answers nothing else, as before.
    other = get(metrics + "/v2/models/iris", pki.trusting())
    assert other.status_code == 404
    assert "/metrics and the health checks" in other.json()["error"]
    assert_api_needs_the_certificate(server, pki)


def test_plain_metrics_port_with_workers_and_require_auth(
    start_server: ServerFactory, registry_dir: Path, pki: Pki
) -> None:
    with KeyStore.open(registry_dir) as keys:
        read_key = keys.create("read", name="prometheus", created_by="tests")[0]
    server, port = serve(
        start_server, registry_dir, pki,
        "--metrics-tls", "plain", "--require-auth", "--workers", "2",
    )  # fmt: skip
    assert f"metrics and health at http://127.0.0.1:{port} (plain HTTP)" in server.output[0]
    metrics = f"http://127.0.0.1:{port}"
    # Probes send no credential, and need none; scrapes need a key with the read scope.
    assert get(metrics + READY).status_code == 200
    assert get(metrics + LIVE).status_code == 200
    refused = get(metrics + "/metrics")
    assert refused.status_code == 401
    assert "read" in refused.json()["error"]
    assert get(metrics + "/metrics", **{"x-api-key": read_key}).status_code == 200
    with pytest.raises(httpx.ConnectError):
        get(f"https://127.0.0.1:{port}{READY}", pki.trusting())
    assert_api_needs_the_certificate(server, pki)


def test_a_plain_metrics_port_beyond_loopback_needs_authentication(
    start_server: ServerFactory, registry_dir: Path, pki: Pki
) -> None:
    server = start_server(
        "--registry", str(registry_dir), *pki.flags, "--host", "0.0.0.0",
        "--metrics-port", str(free_port()), "--metrics-tls", "plain", ready=False,
    )  # fmt: skip
    assert server.wait() == 1
    output = server.log()
    assert "refusing to serve the metrics port" in output
    assert "in plain text on 0.0.0.0 without authentication" in output
    assert "--require-auth" in output
    assert "--allow-insecure" in output


def test_metrics_tls_asks_for_the_port_and_files_it_needs(
    start_server: ServerFactory, registry_dir: Path, pki: Pki
) -> None:
    no_port = start_server(
        "--registry", str(registry_dir), *pki.flags, "--metrics-tls", "tls", ready=False
    )
    assert no_port.wait() == 1
    assert "metrics_tls (--metrics-tls) applies to a metrics port of its own" in no_port.log()
    no_tls = start_server(
        "--registry", str(registry_dir), "--metrics-port", str(free_port()),
        "--metrics-tls", "mtls", ready=False,
    )  # fmt: skip
    assert no_tls.wait() == 1
    assert "metrics_tls = mtls needs TLS: add --tls-cert and --tls-key" in no_tls.log()
