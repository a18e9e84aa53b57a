"""Integration fixtures: one demo registry per session and real `modelport serve` processes.

Servers listen on port 0; the fixtures learn the address from the server's own start-up line
and wait for its "ready" line on a queue fed by a reader thread (no sleeping, no polling).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import tritonclient.http as triton

from modelport.demo import build_iris
from modelport.intake.push import push_artifact
from modelport.protocol.datatypes import DATATYPES
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.store import Registry

from ..conftest import CREATED_BY, write_iris_c001

EVENTUALLY_SECONDS = 30.0
"""Seconds `eventually` waits for a condition (servers poll each second; CI machines are slow)."""
START_TIMEOUT = 90.0
"""Seconds a server may take from exec to its ready line (imports and model loads)."""
STOP_TIMEOUT = 20.0
"""Seconds a server may take to exit after SIGTERM."""

_LISTENING = re.compile(r"serving REST at (https?://\S+)")
_GRPC = re.compile(r" and gRPC at (\S+)")
_READY = "modelport ready:"


class ServerProcess:
    """One `modelport serve` subprocess; its merged stdout/stderr is kept for failure reports."""

    def __init__(
        self, args: Sequence[str], *, env: Mapping[str, str] | None = None, ports: bool = True
    ) -> None:
        """`env` is added to the server's environment; `ports=False` leaves out the
        `--http-port 0 --grpc-port 0` every other server gets (for platforms that name the
        port in the environment), and with AIP_HTTP_PORT (Vertex AI's port) in `env` the
        server is not given --http-port 0, so that the variable decides."""
        environ = {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
        environ["PYTHONUNBUFFERED"] = "1"
        environ.update(env or {})
        http = () if "AIP_HTTP_PORT" in (env or {}) else ("--http-port", "0")
        # gRPC stays off unless a test asks for it (a later --grpc-port wins).
        self.args = [
            sys.executable,
            *("-m", "modelport", "serve"),
            *((*http, "--grpc-port", "0") if ports else ()),
            *args,
        ]
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environ,
        )
        # The reader drains the pipe for the whole life of the process, so a chatty server
        # can never block on a full pipe.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""
        self.grpc_address = ""
        """`host:port` of the gRPC server; empty when gRPC is off."""
        self.ready_line = ""
        self._seen = 0
        """How many lines of `output` wait_for has looked at."""

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next_line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            pytest.fail(f"no output from the server within {timeout:.0f} s:\n{self.log()}")
        if line is None:
            self._proc.wait(timeout=STOP_TIMEOUT)
            code = self._proc.returncode
            pytest.fail(f"server exited ({code}) before it was ready:\n{self.log()}")
        self.output.append(line)
        return line

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Read output until the ready line; fail with the server's output if it never comes."""
        while not self.ready_line:
            line = self._next_line(timeout)
            found = _LISTENING.search(line)
            if found:
                self.url = found.group(1)
                grpc_found = _GRPC.search(line)
                if grpc_found:
                    self.grpc_address = grpc_found.group(1)
            elif line.startswith(_READY):
                self.ready_line = line
        assert self.url, f"the server never said where it listens:\n{self.log()}"
        self._seen = len(self.output)
        return self

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> str:
        """Return the next line containing `text`, reading output until it comes.

        Each call looks only at lines printed after the ready line and after the line the
        previous call returned, including lines log() has already collected.
        """
        while True:
            while self._seen < len(self.output):
                line = self.output[self._seen]
                self._seen += 1
                if text in line:
                    return line
            self._next_line(timeout)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._proc.pid

    def log(self) -> str:
        """Everything the server printed so far."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return "\n".join(self.output)

    @property
    def hostport(self) -> str:
        """`host:port`, the form tritonclient takes."""
        return self.url.removeprefix("http://")

    @property
    def running(self) -> bool:
        """True until the process exits."""
        return self._proc.poll() is None

    def wait(self) -> int:
        """Wait for the process to exit by itself and return its status."""
        code = self._proc.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=STOP_TIMEOUT)
        return code

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM by default) and wait for the exit status."""
        if self.running:
            self._proc.send_signal(sig)
        try:
            code = self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"server did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM")
        self._reader.join(timeout=STOP_TIMEOUT)
        return code

    def kill(self) -> None:
        """Last resort for a server that hangs."""
        if self.running:
            self._proc.kill()
            self._proc.wait(timeout=STOP_TIMEOUT)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def start_server() -> Iterator[ServerFactory]:
    """Start `modelport serve ARGS...` on port 0 and wait for it; each is stopped at the end.

    Call with `ready=False` to get the process before it is ready (then call wait_ready);
    `env=` and `ports=` go to ServerProcess.
    Teardown checks that every server still running exits 0 on SIGTERM.
    """
    started: list[ServerProcess] = []

    def start(*args: str, ready: bool = True, **options: Any) -> ServerProcess:
        server = ServerProcess(args, **options)
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    failures = []
    for server in started:
        if not server.running:
            continue
        code = server.stop()
        if code != 0:
            failures.append(f"{' '.join(server.args)} exited {code}:\n{server.log()}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="session")
def server(start_server: ServerFactory, demo_registry: Path) -> ServerProcess:
    """A server with every demo model loaded."""
    return start_server("--registry", str(demo_registry))


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A registry of its own holding iris version 1 (the demo's model)."""
    location = tmp_path / "registry"
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(tmp_path)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
    return location


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll `check` until it is true; fail saying `what` did not happen in time.

    Only for conditions the server does not announce (prefer `ServerProcess.wait_for` on the
    line it logs); each caller says why it polls.
    """
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {EVENTUALLY_SECONDS:.0f} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def log_database(database_url: str) -> Iterator[tuple[str, sa.Engine, str]]:
    """A PostgreSQL database for the inference log: (URL, admin engine, name)."""
    url = sa.make_url(database_url)
    name = url.database
    assert name
    admin = sa.create_engine(
        url.set(drivername="postgresql+psycopg", database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        yield database_url, admin, name
    finally:
        # Connections allowed again, so the fixture can drop the database.
        refuse_connections(admin, name, refuse=False)
        admin.dispose()


def refuse_connections(admin: sa.Engine, name: str, refuse: bool) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not refuse).lower()}')
        if refuse:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def free_port() -> int:
    """A TCP port nothing listens on right now (`--grpc-port 0` turns gRPC off)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def grpc_server(start_server: ServerFactory, demo_registry: Path) -> ServerProcess:
    """A server with every demo model loaded, serving gRPC too (`grpc_address`)."""
    return start_server("--registry", str(demo_registry), "--grpc-port", str(free_port()))


@pytest.fixture(scope="session")
def original_server(start_server: ServerFactory, demo_registry: Path) -> ServerProcess:
    """A server for the demo registry with `--no-compiled`: every model on its own library."""
    return start_server("--registry", str(demo_registry), "--no-compiled")


@pytest.fixture(scope="session")
def original_http(original_server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP to the `--no-compiled` demo server."""
    with httpx.Client(base_url=original_server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def original_client(original_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's HTTP client for the `--no-compiled` demo server."""
    tc = triton.InferenceServerClient(original_server.hostport, network_timeout=30.0)
    yield tc
    tc.close()


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """Raw HTTP to the demo server."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    """tritonclient's HTTP client for the demo server."""
    tc = triton.InferenceServerClient(server.hostport, network_timeout=30.0)
    yield tc
    tc.close()


def push_doubling_model(registry: Path, artifact: Path, name: str) -> None:
    """Register the cloudpickled python model `artifact` as `name` in `registry`, with the
    signature the tests' doubling models have: FP32 `x` [-1] in, FP32 `y` [-1] out."""
    from modelport.intake.push import push_artifact
    from modelport.registry.store import Registry

    signature = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))
    with Registry.open(registry) as store:
        push_artifact(
            store,
            artifact,
            name=name,
            format="python",
            signature=signature,
            trust_pickle=True,
            created_by="tests",
        )


def echo_signature() -> Signature:
    """One [-1, 2] input per OIP datatype, `in-<type>`, echoed as `out-<type>`."""
    kinds = sorted(DATATYPES)
    return Signature(
        tuple(TensorSpec(f"in-{k.lower()}", k, (-1, 2)) for k in kinds),
        tuple(TensorSpec(f"out-{k.lower()}", k, (-1, 2)) for k in kinds),
    )


def write_echo_model(path: Path) -> Path:
    """Cloudpickle an object whose predict returns every input under its output name."""
    import cloudpickle

    # Defined here, not at module level, so that cloudpickle stores the class by value and
    # the server can load it without importing this test module.
    class Echo:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return {"out-" + name.removeprefix("in-"): value for name, value in inputs.items()}

    with path.open("wb") as fh:
        cloudpickle.dump(Echo(), fh)
    return path


@pytest.fixture(scope="session")
def extra_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris versions 1 (the demo's) and 2 (C=0.01), and `echo`, a python model of every datatype."""
    location = tmp_path_factory.mktemp("extra") / "registry"
    work = tmp_path_factory.mktemp("extra-artifacts")
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(work)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
        push_artifact(
            registry,
            write_iris_c001(work),
            name="iris",
            metadata={"C": "0.01"},
            created_by=CREATED_BY,
        )
        push_artifact(
            registry,
            write_echo_model(work / "echo.cloudpickle"),
            name="echo",
            format="python",
            signature=echo_signature(),
            trust_pickle=True,
            created_by=CREATED_BY,
        )
    return location


@pytest.fixture(scope="session")
def extra_server(start_server: ServerFactory, extra_registry: Path) -> ServerProcess:
    """A server for the extra registry (newest versions loaded: iris 2 and echo 1)."""
    return start_server("--registry", str(extra_registry))


DROPPED = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
"""How httpx reports a server that closed the connection during or right after the handshake
(both uvloop and asyncio drop it without sending a TLS alert)."""


def assert_dropped(url: str, verify: ssl.SSLContext | bool = True) -> None:
    """The server at `url` accepted the TCP connection, then closed it without answering."""
    with pytest.raises(DROPPED) as caught:
        httpx.get(url, verify=verify, timeout=30.0)
    seen: BaseException | None = caught.value
    while seen is not None:
        assert not isinstance(seen, ConnectionRefusedError), "no server listens"
        seen = seen.__cause__ or seen.__context__
