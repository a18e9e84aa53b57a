"""Composition root: builds registry, dataplane and transports, binds, runs until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import socket
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from modelport import __version__
from modelport.config import AuthSettings, MetricsSettings, ServeSettings
from modelport.errors import InvalidInput
from modelport.observability.observer import Observer
from modelport.registry.database import display_location
from modelport.registry.keys import KeyStore
from modelport.registry.store import Registry
from modelport.security.policy import build_policy
from modelport.security.tls import (
    load_tls,
    metrics_port_tls,
)
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.in_flight import InFlightTable
from modelport.serving.lifecycle import Lifecycle
from modelport.supervisor import Supervisor, report_ready
from modelport.transports.browser import BrowserPolicy
from modelport.worker import Protection, run_worker

log = logging.getLogger("modelport.server")


def bind(host: str, port: int, *, workers: int = 1, flag: str = "--http-port") -> socket.socket:
    """A TCP socket bound to host:port (port 0 picks a free one).

    With one worker it listens; with several it only reserves the port (SO_REUSEPORT) and
    each worker binds and listens on its own socket, so the kernel spreads connections.
    InvalidInput when the address cannot be had (unknown host, port in use, no permission);
    the message suggests `flag`.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if workers == 1:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another {flag} or --host"
        ) from None
    return sock


def reserve(host: str, port: int, *, flag: str) -> socket.socket:
    """Hold host:port for servers that bind it with SO_REUSEPORT (workers, gRPC).

    The socket is bound (SO_REUSEPORT, not listening, so it takes no connections) for as long
    as the server runs. A first, exclusive bind makes a port that something else already
    serves fail here, with InvalidInput, instead of being silently shared.
    """
    probe = bind(host, port, flag=flag)
    port = probe.getsockname()[1]
    probe.close()
    return bind(host, port, workers=2, flag=flag)


def _path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


def check_exposure(host: str, auth: AuthSettings) -> None:
    """Refuse to listen on `host` beyond loopback without authentication, unless `auth` says
    it is on purpose.

    An open management plane on a reachable address is how model servers get taken over (see
    docs/security.md); InvalidInput says what to add.
    """
    if auth.require_auth or auth.allow_insecure or is_loopback(host):
        return
    raise InvalidInput(
        f"refusing to listen on {host} without authentication: anyone who reaches it "
        "could run inferences and load or unload models. Add --require-auth (and create keys "
        "with `modelport keys create`), or --allow-insecure if something in front of the "
        "server authenticates every request"
    )


def check_metrics_exposure(host: str, metrics: MetricsSettings, auth: AuthSettings) -> None:
    """Refuse a plain-text metrics port (`--metrics-tls plain`) beyond loopback without
    authentication, unless `auth` says it is on purpose.

    Under mutual TLS the client certificate is what keeps strangers off the port; taking it
    away on a reachable address needs a credential instead (InvalidInput says which flags).
    """
    if metrics.tls != "plain" or not (metrics.enabled and metrics.port):
        return
    if auth.require_auth or auth.allow_insecure or is_loopback(host):
        return
    raise InvalidInput(
        f"refusing to serve the metrics port {metrics.port} in plain text on {host} without "
        "authentication: anyone who reaches it could read the metrics. Add --require-auth "
        "(scrapes then need a key with the read scope; health checks stay open), "
        "--allow-insecure if something in front of the server authenticates every request, "
        "or --metrics-tls tls|mtls"
    )


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address (unresolvable: no)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def address(sock: socket.socket) -> str:
    """`host:port` of a bound socket (IPv6 hosts in brackets), as gRPC takes it."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url(sock: socket.socket, tls: bool = False) -> str:
    """The http:// (https:// with TLS) URL a bound socket answers on."""
    return f"{'https' if tls else 'http'}://{address(sock)}"


def serve(settings: ServeSettings, announce: Callable[[str], None] = print) -> int:
    """Serve the registry's models until SIGINT or SIGTERM; returns the exit status.

    Announces where it listens, loads the models (before forking workers, so they share the
    memory), then announces readiness once every worker accepts connections.
    """
    listen = settings.listen
    # The metrics port first: its message is the more specific one.
    check_metrics_exposure(listen.host, settings.metrics, settings.auth)
    check_exposure(listen.host, settings.auth)
    # Certificates are checked before anything binds: a bad file fails at once.
    tls = load_tls(_path(settings.tls.cert), _path(settings.tls.key), _path(settings.tls.client_ca))
    metrics_tls = metrics_port_tls(tls, settings.metrics.tls)
    # Bind first: a busy port is the likeliest start-up failure and should cost nothing.
    with contextlib.ExitStack() as stack:
        if listen.workers > 1:
            sock = stack.enter_context(reserve(listen.host, listen.http_port, flag="--http-port"))
        else:
            sock = stack.enter_context(bind(listen.host, listen.http_port))
        grpc_sock = None
        if listen.grpc_port:
            grpc_sock = stack.enter_context(
                reserve(listen.host, listen.grpc_port, flag="--grpc-port (0 turns gRPC off)")
            )
        metrics_sock = None
        if settings.metrics.enabled and settings.metrics.port:
            flag = "--metrics-port"
            metrics_sock = stack.enter_context(
                reserve(listen.host, settings.metrics.port, flag=flag)
                if listen.workers > 1
                else bind(listen.host, settings.metrics.port, flag=flag)
            )
        registry = stack.enter_context(Registry.open(settings.registry, create=False))
        keys = stack.enter_context(KeyStore.open(settings.registry))
        browser = BrowserPolicy.from_settings(settings.browser, listen.host)
        protection = Protection(tls, build_policy(settings.auth, keys.verify), metrics_tls, browser)
        metrics_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelport-")))
        observer = Observer.from_settings(settings, Executor(), metrics_dir, sys.stderr)
        sockets = (sock, grpc_sock, metrics_sock)
        return _serve(settings, announce, sockets, registry, observer, protection)


def _serve(
    settings: ServeSettings,
    announce: Callable[[str], None],
    sockets: tuple[socket.socket, socket.socket | None, socket.socket | None],
    registry: Registry,
    observer: Observer,
    protection: Protection,
) -> int:
    sock, grpc_sock, metrics_sock = sockets
    tls = protection.tls is not None
    count = settings.listen.workers
    workers = f"{count} workers" if count > 1 else "1 worker"
    grpc_address = None if grpc_sock is None else address(grpc_sock)
    grpc = "" if grpc_address is None else f" and gRPC at {grpc_address}"
    metrics = "" if metrics_sock is None else _metrics_where(metrics_sock, protection)
    grpc += " (TLS)" if grpc and tls else ""
    announce(
        f"modelport {__version__} serving REST at {url(sock, tls)}{grpc} "
        f"(registry: {display_location(settings.registry)}; {workers}{metrics})"
    )
    catalog = Catalog()
    # Shared by every worker (made before the fork): max_queue bounds the whole server.
    in_flight = InFlightTable.for_workers(count)
    lifecycle = Lifecycle(registry, catalog, Executor(), settings.models, observer, in_flight)
    dataplane = DataPlane(lifecycle, settings.limits, workers=count, reports=observer)
    dataplane.lifecycle.preload(settings.models.selection)
    # Everything loaded so far lives as long as the server: keep the collector from scanning
    # it (long pauses, a p99 several times the median) and, after fork, from writing to the
    # pages the workers share.
    gc.freeze()
    loaded = sorted(f"{m.name}:{m.number}" for m in catalog)
    ready = f"modelport ready: {len(loaded)} model version(s) loaded ({', '.join(loaded)})"
    limits = settings.limits
    if count == 1:
        own = [sock] if metrics_sock is None else [sock, metrics_sock]
        run_worker(
            dataplane,
            observer,
            limits,
            own,
            lambda: announce(ready),
            grpc_address,
            protection,
            protocols=settings.protocols,
        )
        return 0

    def worker(ready_fd: int) -> None:
        own = [bind(*s.getsockname()[:2], workers=count) for s in (sock, metrics_sock) if s]
        run_worker(
            dataplane,
            observer,
            limits,
            own,
            lambda: report_ready(ready_fd),
            grpc_address,
            protection,
            follow=False,
            protocols=settings.protocols,
        )

    on_exit = None if observer.metrics is None else observer.metrics.process_gone
    supervisor = Supervisor(count, worker, on_exit, follow=partial(follow_in_parent, lifecycle))
    return supervisor.run(lambda: announce(ready))


def follow_in_parent(lifecycle: Lifecycle) -> bool:
    """Follow the registry in the parent; True when the workers must be replaced by new forks.

    That is when what is served, or why a load failed, changed. With several workers the
    parent follows the registry, not each worker: a new version loads once, here, and the
    supervisor then replaces the workers with forks that share it (a worker loading it on its
    own would cost N copies).
    """
    before = lifecycle.catalog.state(), dict(lifecycle.failures)
    if not asyncio.run(_check(lifecycle)):
        return False
    # What was retired goes now (the collector may not look at frozen objects), and what was
    # loaded is kept out of the collector's way in the forks, as at start.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    # A failed load changes no route, but the model metadata of new workers reports it.
    return (lifecycle.catalog.state(), dict(lifecycle.failures)) != before


async def _check(lifecycle: Lifecycle) -> bool:
    changed = await lifecycle.check()
    await lifecycle.retired()
    return changed


def _metrics_where(sock: socket.socket, protection: Protection) -> str:
    """Where the announce line says the metrics port answers, and how it differs from the API."""
    files = protection.metrics_tls
    where = f"; metrics and health at {url(sock, files is not None)}"
    if protection.tls is not None and files is None:
        return where + " (plain HTTP)"
    if protection.tls is not None and protection.tls.mutual and files and not files.mutual:
        return where + " (no client certificate)"
    return where
