"""Composition root: builds registry, dataplane and transports, binds, runs until stopped."""

from __future__ import annotations

import asyncio
import contextlib
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


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one).

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
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --http-port "
            "(0 picks a free one) or --host"
        ) from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    """The http:// URL a bound socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: ServeSettings, announce: Callable[[str], None] = print) -> None:
    """Serve the registry's models until SIGINT or SIGTERM, announcing where and when ready."""
    # Bind first: a busy port is the likeliest start-up failure and should cost nothing.
    sock = bind(settings.host, settings.http_port)
    try:
        registry = Registry.open(settings.registry, create=False)
    except BaseException:
        sock.close()
        raise
    dataplane = DataPlane(registry, Catalog(), Executor())
    tasks: set[asyncio.Task[None]] = set()

    async def load_models() -> None:
        await dataplane.load_all(settings.models)
        loaded = sorted(
            f"{e['name']}:{e['version']}" for e in await dataplane.repository_index(True)
        )
        announce(f"modelport ready: {len(loaded)} model version(s) loaded ({', '.join(loaded)})")

    async def on_startup() -> None:
        # Load in the background so liveness answers at once and readiness tells the truth.
        task = asyncio.get_running_loop().create_task(load_models())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def on_shutdown() -> None:
        for task in tasks:
            task.cancel()
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
    announce(f"modelport {__version__} serving REST at {url(sock)} (registry: {settings.registry})")
    try:
        _Server(config).run(sockets=[sock])
    finally:
        sock.close()
        registry.close()
