"""A private redis-server for tests that restart, kill, pause or lock down their broker.

Each `RedisServer` runs /usr/bin/redis-server on a free loopback port, in a directory of its
own, with an append-only file synced on every write (`appendonly yes`, `appendfsync always`):
whatever the server acknowledged survives a SIGKILL, and `start()` after `stop()` serves the
same streams, groups and pending entries on the same port. It may require a password (the
default user's) and further ACL users, and may serve TLS on a second port with certificates
from `TlsFiles.make` (trustme), optionally demanding a client certificate.

    with RedisServer(tmp_path) as server:          # started: it answers PING
        url = server.url("orders")                 # redis://127.0.0.1:PORT/0?stream=orders
        server.stop(kill=True)                     # SIGKILL, as a crash would
        server.start()                             # same port, same data

Use `skip_unless_available()` at the top of a test or fixture: it skips with the reason when
the binary is missing. `TlsUnsupported` is raised by `start()` when the binary was built
without TLS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote, urlencode

import pytest
import redis

REDIS_SERVER: Final = (
    "/usr/bin/redis-server"
    if os.path.exists("/usr/bin/redis-server")
    else shutil.which("redis-server") or "/usr/bin/redis-server"
)
SKIP_REASON: Final = f"{REDIS_SERVER} is missing: install Debian's redis-server package"
START_TIMEOUT: Final = 30.0
"""Seconds a server may take to answer PING (it replays its append-only file first)."""
STOP_TIMEOUT: Final = 15.0
"""Seconds a SIGTERM may take before the server is killed."""
HOST: Final = "127.0.0.1"


class TlsUnsupported(RuntimeError):
    """This redis-server was built without TLS."""


def skip_unless_available() -> None:
    """Skip the calling test when there is no redis-server binary to start."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(SKIP_REASON)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS server and a client, all signed by one test CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        """A fresh CA and certificates for 127.0.0.1/localhost and for a client, in `directory`."""
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("modelport-test-client")
        files = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )
        ca.cert_pem.write_to_path(files.ca)
        server.cert_chain_pems[0].write_to_path(files.server_cert)
        server.private_key_pem.write_to_path(files.server_key)
        client.cert_chain_pems[0].write_to_path(files.client_cert)
        client.private_key_pem.write_to_path(files.client_key)
        return files


class RedisServer:
    """One redis-server process of the tests' own: start, stop (or kill), pause, restart."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        users: Mapping[str, str] | None = None,
        acl: str = "~* &* +@all",
        tls: TlsFiles | None = None,
        client_certificates: bool = False,
    ) -> None:
        """A server not started yet, that keeps its files in `directory`.

        `password` is the default user's (`requirepass`); `users` maps further ACL user names
        to passwords, each allowed `acl`. With `tls`, it also serves TLS on `tls_port`, and
        with `client_certificates` demands a client certificate there.
        """
        self.directory = directory
        self.password = password
        self.users = dict(users or {})
        self.acl = acl
        self.tls = tls
        self.client_certificates = client_certificates
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once it answers PING (its data loaded)."""
        if self.running:
            return
        skip_unless_available()
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self._spawn()
            if self._wait_until_ready():
                self._started_once = True
                return
            # Another process may have taken a port between free_port() and the bind; pick
            # new ones, but only before the first start: a restart must keep its port.
            if self._started_once or "Address already in use" not in self.log():
                break
            self.port = free_port()
            self.tls_port = free_port() if self.tls is not None else None
        log = self.log()
        if self.tls is not None and "tls" in log.lower() and "not" in log.lower():
            raise TlsUnsupported(f"{REDIS_SERVER} has no TLS support:\n{log}")
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def stop(self, *, kill: bool = False) -> None:
        """End the server: SIGTERM (it finishes its writes), or SIGKILL with `kill`, as a crash."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def restart(self, *, kill: bool = False) -> None:
        """`stop(kill=kill)`, then `start()` on the same port, with the same data."""
        self.stop(kill=kill)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self._signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------------

    def url(
        self,
        stream: str,
        *,
        user: str | None = None,
        password: str | None = None,
        tls: bool = False,
        db: int = 0,
        **options: str,
    ) -> str:
        """A URL for `stream` on this server (the TLS port with `tls`), with query `options`.

        Credentials are only those given here: pass `password=server.password` to log in.
        """
        if tls and self.tls_port is None:
            raise ValueError("this server serves no TLS: give RedisServer(tls=TlsFiles.make(...))")
        credentials = ""
        if user is not None or password is not None:
            credentials = quote(user or "", safe="")
            credentials += f":{quote(password, safe='')}" if password is not None else ""
            credentials += "@"
        scheme, port = ("rediss", self.tls_port) if tls else ("redis", self.port)
        query = urlencode({"stream": stream, **options})
        return f"{scheme}://{credentials}{HOST}:{port}/{db}?{query}"

    def client(self, db: int = 0) -> redis.Redis:
        """A synchronous client on the plain port, logged in as the default user."""
        return redis.Redis(host=HOST, port=self.port, db=db, password=self.password)

    def log(self) -> str:
        """The server's log so far (every start appends to it)."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command_calls(self, command: str) -> int:
        """How many times the server ran `command` since it started (INFO commandstats)."""
        stats = self.client().info("commandstats")
        entry = stats.get(f"cmdstat_{command.lower()}")
        return int(entry["calls"]) if entry else 0

    # -- internals ---------------------------------------------------------------------------

    def _config(self) -> str:
        lines = [
            f"bind {HOST}",
            f"port {self.port}",
            f"dir {self.directory}",
            f"logfile {self.directory / 'redis.log'}",
            "daemonize no",
            "save ''",
            "appendonly yes",
            "appendfsync always",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {name} on >{pw} {self.acl}" for name, pw in self.users.items()]
        if self.tls is not None:
            lines += [
                f"tls-port {self.tls_port}",
                f"tls-cert-file {self.tls.server_cert}",
                f"tls-key-file {self.tls.server_key}",
                f"tls-ca-cert-file {self.tls.ca}",
                f"tls-auth-clients {'yes' if self.client_certificates else 'no'}",
            ]
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        config = self.directory / "redis.conf"
        config.write_text(self._config())
        self._process = subprocess.Popen(
            [REDIS_SERVER, str(config)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_until_ready(self) -> bool:
        """True once the server answers PING; False when it exited first."""
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(
            host=HOST, port=self.port, password=self.password, socket_timeout=1.0, retry=None
        )
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    self._process = None
                    return False
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():  # BusyLoadingError (a ConnectionError) while loading
                        return True
                time.sleep(0.02)  # poll interval of a deadline loop, not a wait for a condition
        finally:
            client.close()
        self.stop(kill=True)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in time")

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the server is not running")
        self._process.send_signal(signum)
