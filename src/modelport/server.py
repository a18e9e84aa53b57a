"""Composition root: builds registry, dataplane and transports, binds, runs until stopped."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from modelport import __version__
from modelport.config import ServeSettings
from modelport.errors import InvalidInput
from modelport.registry.store import Registry
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.supervisor import Supervisor, report_ready
from modelport.transports.rest import RestApp

log = logging.getLogger("modelport.server")


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop on SIGINT or SIGTERM ends the process with status 0.

    uvicorn re-raises the signal once it has shut down gracefully, so the process dies of it
    (status -15 for SIGTERM); a stop that was asked for and went cleanly is a success.
    """

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


def bind(host: str, port: int, *, workers: int = 1) -> socket.socket:
    """A TCP socket bound to host:port (port 0 picks a free one).

    With one worker it listens; with several it only reserves the port (SO_REUSEPORT) and
    each worker binds and listens on its own socket, so the kernel spreads connections.
    InvalidInput when the address cannot be had (unknown host, port in use, no permission).
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
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --http-port "
            "(0 picks a free one) or --host"
        ) from None
    return sock


def url(sock: socket.socket) -> str:
    """The http:// URL a bound socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: ServeSettings, announce: Callable[[str], None] = print) -> int:
    """Serve the registry's models until SIGINT or SIGTERM; returns the exit status.

    Announces where it listens, loads the models (before forking workers, so they share the
    memory), then announces readiness once every worker accepts connections.
    """
    # Bind first: a busy port is the likeliest start-up failure and should cost nothing.
    sock = bind(settings.host, settings.http_port, workers=settings.workers)
    try:
        registry = Registry.open(settings.registry, create=False)
    except BaseException:
        sock.close()
        raise
    workers = f"{settings.workers} workers" if settings.workers > 1 else "1 worker"
    announce(
        f"modelport {__version__} serving REST at {url(sock)} "
        f"(registry: {settings.registry}; {workers})"
    )
    catalog = Catalog()
    dataplane = DataPlane(registry, catalog, Executor(), settings)
    dataplane.preload(settings.models)
    # Everything loaded so far lives as long as the server: keep the collector from scanning
    # it (long pauses, a p99 several times the median) and, after fork, from writing to the
    # pages the workers share.
    gc.freeze()
    loaded = sorted(f"{m.name}:{m.number}" for m in catalog)
    ready = f"modelport ready: {len(loaded)} model version(s) loaded ({', '.join(loaded)})"
    try:
        if settings.workers == 1:
            run_worker(dataplane, settings, sock, lambda: announce(ready))
            return 0
        host, port = sock.getsockname()[:2]

        def worker(ready_fd: int) -> None:
            own = bind(host, port, workers=settings.workers)
            run_worker(dataplane, settings, own, lambda: report_ready(ready_fd))

        return Supervisor(settings.workers, worker).run(lambda: announce(ready))
    finally:
        sock.close()
        registry.close()


def run_worker(
    dataplane: DataPlane,
    settings: ServeSettings,
    sock: socket.socket,
    on_ready: Callable[[], None],
) -> None:
    """Serve REST on `sock` in this process until SIGINT or SIGTERM."""

    async def on_startup() -> None:
        on_ready()

    async def on_shutdown() -> None:
        await dataplane.close()

    app = RestApp(
        dataplane,
        max_body_bytes=settings.max_body_bytes,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
    )
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=logging.WARNING,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    _Server(config).run(sockets=[sock])
