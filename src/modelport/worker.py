"""One server process: REST, gRPC and the metrics port on one event loop until it is stopped.

A stop (SIGINT or SIGTERM) drains before it closes: the process stops listening, every answer
from then on closes its connection, and idle keep-alive connections get a moment to come back
for one. The process is either the whole server (one worker) or a worker of the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import uvicorn

from modelport.config import LimitSettings, ProtocolSettings
from modelport.errors import InvalidInput
from modelport.metrics_listener import MetricsListener
from modelport.observability.observer import Observer
from modelport.security.tls import (
    TlsFiles,
    grpc_context,
    uvicorn_options,
)
from modelport.serving.dataplane import DataPlane
from modelport.serving.guard import Guard, OpenGuard
from modelport.transports.browser import BrowserPolicy
from modelport.transports.grpc import GrpcServer
from modelport.transports.rest import RestApp

DRAIN_SECONDS = 1.0
"""How long a stopping server waits for keep-alive connections to end after their next answer."""
GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long in-flight REST requests may then take before uvicorn cancels them. With
DRAIN_SECONDS and gRPC's grace period, a stop fits the 30 seconds SageMaker (and Kubernetes'
default terminationGracePeriodSeconds) allows between SIGTERM and SIGKILL."""


class _Server(uvicorn.Server):
    """uvicorn's server, except for how it stops: draining first, then with status 0.

    uvicorn closes idle keep-alive connections at once, so a client that was sending its next
    request on one (under load, most of them) sees the connection drop. This one stops
    listening, then has every answer close its connection (`on_drain`) and gives idle
    connections DRAIN_SECONDS to come back for one, before uvicorn's own shutdown. uvicorn
    also re-raises the stop signal once it has shut down, so the process dies of it (status
    -15 for SIGTERM); a stop that was asked for and went cleanly is a success.
    """

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_drain = on_drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        self._on_drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(0.02)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Protection:
    """What guards the server: TLS material (None: plain text), who may do what, and which
    Host names and web pages REST answers."""

    tls: TlsFiles | None = None
    guard: Guard = field(default_factory=OpenGuard)
    metrics_tls: TlsFiles | None = None
    """The TLS of a metrics port of its own (`--metrics-tls`; None: plain text)."""
    browser: BrowserPolicy = field(default_factory=BrowserPolicy)


def run_worker(
    dataplane: DataPlane,
    observer: Observer,
    limits: LimitSettings,
    sockets: list[socket.socket],
    on_ready: Callable[[], None],
    grpc_address: str | None = None,
    protection: Protection | None = None,
    *,
    follow: bool = True,
    protocols: ProtocolSettings | None = None,
) -> None:
    """Serve REST on `sockets` (the API, then /metrics and health if it has its own port), and
    gRPC on `grpc_address` if given, until SIGINT or SIGTERM; with TLS and the guard of
    `protection`, and messages as large as `limits` allow. `follow`: this process follows
    the registry itself (False in the workers of a supervisor, whose parent follows it).
    `protocols`: where the cloud platforms' protocols answer (defaults when None).

    All run on one event loop, so they share the dataplane and its batchers.
    """
    grpc_server: GrpcServer | None = None
    failure: InvalidInput | None = None
    background: list[asyncio.Task[None]] = []
    protection = protection if protection is not None else Protection()
    tls = protection.tls
    metrics_server: MetricsListener | None = None

    async def on_startup() -> None:
        nonlocal grpc_server, failure
        if grpc_address is not None:
            try:
                grpc_server = await GrpcServer.start(
                    dataplane,
                    grpc_address,
                    max_message_bytes=limits.max_body_bytes,
                    telemetry=observer,
                    guard=protection.guard,
                    tls=None if tls is None else grpc_context(tls),
                )
            except RuntimeError as exc:
                failure = InvalidInput(f"cannot serve gRPC on {grpc_address}: {exc}")
                raise failure from None
        observer.start()
        if follow:
            background.append(asyncio.ensure_future(dataplane.lifecycle.follow()))
        background.append(asyncio.ensure_future(observer.run()))
        if metrics_server is not None:
            await metrics_server.start()
        on_ready()

    async def on_shutdown() -> None:
        for task in background:
            task.cancel()
        # Probes and scrapes are answered while the API drains; they stop before the rest.
        if metrics_server is not None:
            await metrics_server.stop()
        # REST has drained by now; gRPC calls get their own grace period.
        if grpc_server is not None:
            await grpc_server.stop()
        await dataplane.lifecycle.close()
        # Every answered request's record goes to the store, or to the journal.
        observer.close()

    app = RestApp(
        dataplane,
        max_body_bytes=limits.max_body_bytes,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        telemetry=observer,
        metrics_port=sockets[1].getsockname()[1] if len(sockets) > 1 else 0,
        guard=protection.guard,
        browser=protection.browser,
        protocols=protocols,
    )
    if len(sockets) > 1:
        config = uvicorn_config(app, protection.metrics_tls, lifespan="off")
        metrics_server = MetricsListener(config, sockets[1])

    def drain() -> None:
        app.drain()
        if grpc_server is not None:
            grpc_server.stopping()

    _Server(uvicorn_config(app, tls, lifespan="on"), drain).run(sockets=sockets[:1])
    if failure is not None:
        # uvicorn only logs a failed start-up and returns; the caller must see it.
        raise failure


def uvicorn_config(
    app: RestApp, tls: TlsFiles | None, *, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    """How uvicorn serves `app` on a port: with `tls` (None: plain), `lifespan` "on" or "off"."""
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        access_log=False,
        # X-Forwarded-For from a local process would otherwise rewrite the client address that
        # the audit log, the inference log and per-address rate limits rely on.
        proxy_headers=False,
        log_level=logging.WARNING,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **({} if tls is None else uvicorn_options(tls)),
    )
