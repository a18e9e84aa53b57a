"""The metrics port's own uvicorn server, so that it may serve with other TLS than the API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class MetricsListener(uvicorn.Server):
    """uvicorn's server for one more port of the app, started and stopped by the API server.

    One uvicorn server wraps all its sockets with one SSLContext, so a port that serves with
    other TLS (`--metrics-tls`) needs a server of its own. It runs on the API server's event
    loop, from that server's lifespan hooks; the API server owns the signals.
    """

    def __init__(self, config: uvicorn.Config, sock: socket.socket) -> None:
        super().__init__(config)
        self._sockets = [sock]
        self._listening = asyncio.Event()
        self._task: asyncio.Future[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._listening.set()

    async def start(self) -> None:
        """Serve in the background; return once the port accepts connections."""
        self._task = asyncio.ensure_future(self.serve(sockets=self._sockets))
        listening = asyncio.ensure_future(self._listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if self._task.done():
            self._task.result()  # a failed start raises here

    async def stop(self) -> None:
        """Stop accepting, let open connections finish, and return once it has stopped."""
        self.should_exit = True
        if self._task is not None:
            await self._task
