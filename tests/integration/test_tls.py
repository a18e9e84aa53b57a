"""TLS and mutual TLS on real servers: uvicorn on pre-bound sockets (as `modelport serve` runs
it) serving the real REST app, and modelport's gRPC front end with the health service.

The servers are configured only through `uvicorn_options` and `grpc_context`; the clients
are httpx, Python's ssl module and grpc's own channel, each trusting the test CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import trustme
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelport.registry.store import Registry
from modelport.security.tls import TlsFiles, grpc_context, uvicorn_options
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle
from modelport.transports.grpc_endpoint import GrpcEndpoint
from modelport.transports.grpc_health import SERVING, HealthService
from modelport.transports.rest import RestApp

from .conftest import assert_dropped

pytestmark = pytest.mark.integration

START_TIMEOUT = 30.0
"""Seconds a server may take to start or stop."""
CALL_TIMEOUT = 10.0
"""Upper bound on one client call; the calls here answer or fail at once."""
LIVE = "/v2/health/live"


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    def configure(self, context: ssl.SSLContext) -> ssl.SSLContext:
        context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class Pki:
    """The CA the clients trust, the server's identity, and client identities."""

    ca: Path
    server: TlsFiles
    mutual: TlsFiles
    """The server's files plus `client_ca`, the CA that signs `client`."""
    client: Identity
    stranger: Identity
    """A client certificate from a CA the server does not trust."""


def write_identity(cert: trustme.LeafCert, root: Path, name: str) -> Identity:
    identity = Identity(root / f"{name}.pem", root / f"{name}.key")
    identity.cert.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(identity.key)
    return identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("tls")
    server_ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(root / "ca.pem")
    client_ca.cert_pem.write_to_path(root / "clients-ca.pem")
    server = write_identity(server_ca.issue_cert("127.0.0.1", "localhost"), root, "server")
    return Pki(
        ca=root / "ca.pem",
        server=TlsFiles.load(server.cert, server.key),
        mutual=TlsFiles.load(server.cert, server.key, root / "clients-ca.pem"),
        client=write_identity(client_ca.issue_cert("client@example.com"), root, "client"),
        stranger=write_identity(other_ca.issue_cert("client@example.com"), root, "stranger"),
    )


def client_context(pki: Pki, identity: Identity | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    return context if identity is None else identity.configure(context)


# -- REST -------------------------------------------------------------------------------------


class _ReadyServer(uvicorn.Server):
    """uvicorn's server that says when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.accepting = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.accepting.set()


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def rest_server(files: TlsFiles, root: Path, sockets: int = 1) -> Iterator[list[int]]:
    """The REST app under uvicorn, TLS from `files`, on `sockets` pre-bound sockets; their ports."""
    listening = [listening_socket() for _ in range(sockets)]
    registry = Registry.open(root / "registry")
    executor = Executor(threads=1)
    app = RestApp(DataPlane(Lifecycle(registry, Catalog(), executor)), max_body_bytes=1 << 20)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        **uvicorn_options(files),
    )
    server = _ReadyServer(config)

    def run() -> None:
        try:
            server.run(sockets=listening)
        finally:
            # Also when start-up fails, so the wait below ends at once.
            server.accepting.set()

    thread = threading.Thread(target=run, name="uvicorn-tls", daemon=True)
    thread.start()
    try:
        assert server.accepting.wait(START_TIMEOUT), "uvicorn did not start"
        assert server.started, "uvicorn failed to start (see the log above)"
        yield [sock.getsockname()[1] for sock in listening]
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        for sock in listening:
            sock.close()
        executor.shutdown()
        registry.close()


@pytest.fixture(scope="module")
def rest_ports(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Two pre-bound sockets (as with a separate /metrics port), server TLS only."""
    with rest_server(pki.server, tmp_path_factory.mktemp("rest"), sockets=2) as ports:
        yield ports


@pytest.fixture(scope="module")
def rest_mutual_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with rest_server(pki.mutual, tmp_path_factory.mktemp("rest-mtls")) as ports:
        yield ports[0]


def get(url: str, verify: ssl.SSLContext | bool = True) -> httpx.Response:
    return httpx.get(url, verify=verify, timeout=CALL_TIMEOUT)


def ssl_reasons(exc: BaseException) -> list[str]:
    """The OpenSSL reasons in an exception's chain of causes (httpx wraps ssl's errors)."""
    reasons: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and seen.reason:
            reasons.append(seen.reason)
        seen = seen.__cause__ or seen.__context__
    return reasons


def hung_up(exc: ssl.SSLError) -> bool:
    """Whether the server ended a handshake: with an alert, or by closing the connection."""
    return isinstance(exc, ssl.SSLEOFError) or "ALERT" in (exc.reason or "")


def test_https_with_the_ca_answers(pki: Pki, rest_ports: list[int]) -> None:
    response = get(f"https://127.0.0.1:{rest_ports[0]}{LIVE}", client_context(pki))
    assert response.status_code == 200
    assert response.json() == {"live": True}


def test_every_pre_bound_socket_serves_tls(pki: Pki, rest_ports: list[int]) -> None:
    # uvicorn wraps each socket handed to run(sockets=...) with the same context: a second
    # port (such as /metrics) is TLS too.
    response = get(f"https://127.0.0.1:{rest_ports[1]}{LIVE}", client_context(pki))
    assert response.status_code == 200
    assert_dropped(f"http://127.0.0.1:{rest_ports[1]}{LIVE}")


def test_the_server_presents_its_certificate(rest_ports: list[int]) -> None:
    # Trusting only the system CAs, the test CA's certificate must fail verification.
    with pytest.raises(httpx.ConnectError) as caught:
        get(f"https://127.0.0.1:{rest_ports[0]}{LIVE}", ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in ssl_reasons(caught.value)


def test_plain_http_is_refused(rest_ports: list[int]) -> None:
    assert_dropped(f"http://127.0.0.1:{rest_ports[0]}{LIVE}")


def legacy_context(pki: Pki) -> ssl.SSLContext:
    """A client that offers only TLS 1.0 and 1.1 (OpenSSL 3 allows them at security level 0)."""
    context = client_context(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(port: int, context: ssl.SSLContext) -> str | None:
    """Complete a TLS handshake with 127.0.0.1:`port`; the protocol version agreed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


def test_rest_refuses_tls_below_1_2(pki: Pki, rest_ports: list[int]) -> None:
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(rest_ports[0], tls12) == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as caught:
        handshake(rest_ports[0], legacy_context(pki))
    assert hung_up(caught.value), caught.value


def test_mutual_tls_accepts_a_client_signed_by_the_ca(pki: Pki, rest_mutual_port: int) -> None:
    context = pki.client.configure(client_context(pki))
    response = get(f"https://127.0.0.1:{rest_mutual_port}{LIVE}", context)
    assert response.status_code == 200


def test_mutual_tls_refuses_a_client_without_certificate(pki: Pki, rest_mutual_port: int) -> None:
    # With TLS 1.3 the client finishes its side of the handshake before the server checks the
    # certificate, so the refusal shows on the first read (see test_mutual_tls_handshake).
    assert_dropped(f"https://127.0.0.1:{rest_mutual_port}{LIVE}", client_context(pki))


def test_mutual_tls_refuses_a_client_from_another_ca(pki: Pki, rest_mutual_port: int) -> None:
    context = pki.stranger.configure(client_context(pki))
    assert_dropped(f"https://127.0.0.1:{rest_mutual_port}{LIVE}", context)


# -- gRPC -------------------------------------------------------------------------------------


class GrpcHealthServer:
    """modelport's gRPC front end with the health service, on its own event loop in a thread."""

    def __init__(self, files: TlsFiles) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-tls", daemon=True)
        self._thread.start()
        self._server: GrpcEndpoint | None = None
        self.port = self._call(self._start(files))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT)

    async def _start(self, files: TlsFiles) -> int:
        health = HealthService()
        health.set("", SERVING)
        self._server = GrpcEndpoint(health.methods(), max_message_bytes=1 << 20)
        return await self._server.start("127.0.0.1", 0, grpc_context(files))

    def close(self) -> None:
        if self._server is not None:
            self._call(self._server.stop(1.0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._loop.close()


@pytest.fixture(scope="module")
def grpc_port(pki: Pki) -> Iterator[int]:
    server = GrpcHealthServer(pki.server)
    yield server.port
    server.close()


@pytest.fixture(scope="module")
def grpc_mutual_port(pki: Pki) -> Iterator[int]:
    server = GrpcHealthServer(pki.mutual)
    yield server.port
    server.close()


def channel_credentials(pki: Pki, identity: Identity | None = None) -> grpc.ChannelCredentials:
    if identity is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=identity.key.read_bytes(),
        certificate_chain=identity.cert.read_bytes(),
    )


def health_check(port: int, credentials: grpc.ChannelCredentials | None) -> Any:
    """One Check call on 127.0.0.1:`port` (plaintext when `credentials` is None)."""
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs type no methods
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT).status


def refused_call(port: int, credentials: grpc.ChannelCredentials | None) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_check(port, credentials)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    # The server took the connection and closed it: it listens, and refused this client.
    assert "Connection refused" not in error.details()


def test_grpc_secure_channel_with_the_ca(pki: Pki, grpc_port: int) -> None:
    status = health_check(grpc_port, channel_credentials(pki))
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_insecure_channel_is_refused(pki: Pki, grpc_port: int) -> None:
    refused_call(grpc_port, None)


def test_grpc_refuses_tls_below_1_2(pki: Pki, grpc_port: int) -> None:
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.set_alpn_protocols(["h2"])
    assert handshake(grpc_port, tls12) == "TLSv1.2"
    legacy = legacy_context(pki)
    legacy.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError) as caught:
        handshake(grpc_port, legacy)
    assert hung_up(caught.value), caught.value


def test_grpc_mutual_tls_accepts_a_client_signed_by_the_ca(pki: Pki, grpc_mutual_port: int) -> None:
    status = health_check(grpc_mutual_port, channel_credentials(pki, pki.client))
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_mutual_tls_refuses_a_client_without_certificate(
    pki: Pki, grpc_mutual_port: int
) -> None:
    refused_call(grpc_mutual_port, channel_credentials(pki))


def test_grpc_mutual_tls_refuses_a_client_from_another_ca(pki: Pki, grpc_mutual_port: int) -> None:
    refused_call(grpc_mutual_port, channel_credentials(pki, pki.stranger))


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_mutual_tls_handshake(
    pki: Pki, transport: str, rest_mutual_port: int, grpc_mutual_port: int
) -> None:
    """With TLS 1.2 the client certificate is checked inside the handshake, visibly."""
    port = rest_mutual_port if transport == "rest" else grpc_mutual_port

    def tls12(identity: Identity | None) -> ssl.SSLContext:
        context = client_context(pki, identity)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["h2"] if transport == "grpc" else ["http/1.1"])
        return context

    assert handshake(port, tls12(pki.client)) == "TLSv1.2"
    for identity in (None, pki.stranger):
        with pytest.raises(ssl.SSLError) as caught:
            handshake(port, tls12(identity))
        assert hung_up(caught.value), caught.value
