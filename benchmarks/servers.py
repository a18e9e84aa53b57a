"""Server processes for the benchmark: started pinned in their own session, always stopped."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"
"""The only address the benchmark ever talks to."""
SERVER_CPU = "0"
LOAD_CPU = "1"
STOP_TIMEOUT = 20.0


class ServerFailed(RuntimeError):
    """A server exited or did not become ready in time; the message names its log file."""


def free_port() -> int:
    """A TCP port on the loopback address that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def status(
    port: int, path: str, method: str = "GET", body: bytes | None = None, timeout: float = 30
) -> int:
    """The HTTP status of one request to 127.0.0.1:port, or 0 if nothing answers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


class Server:
    """One server process pinned to a CPU (SERVER_CPU unless told), leader of its own session
    (its whole tree)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log: Path,
        cwd: Path,
        ready: Callable[[int], bool] | None = None,
        grpc_port: int = 0,
        cpu: str = SERVER_CPU,
    ) -> None:
        self.name, self.port, self.log = name, port, log
        self.grpc_port = grpc_port
        """The port its gRPC service listens on (0: none)."""
        self._ready = ready or (lambda p: status(p, "/v2/health/ready", timeout=5) == 200)
        self.ready_s = 0.0
        env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.started = time.perf_counter()
            # A new session: Ctrl-C in the terminal reaches the runner, which stops the server
            # (and its workers) itself, and the tree is found again by session id.
            self.proc = subprocess.Popen(
                ["taskset", "-c", cpu, *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, deadline: float) -> float:
        """Poll readiness (by default GET /v2/health/ready is 200); seconds from process start."""
        limit = self.started + deadline
        while True:
            if self._ready(self.port):
                self.ready_s = time.perf_counter() - self.started
                return self.ready_s
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with status {self.proc.returncode}; see {self.log}"
                )
            if time.perf_counter() > limit:
                raise ServerFailed(f"{self.name} not ready within {deadline:.0f} s; see {self.log}")
            time.sleep(0.005)

    def pids(self) -> list[int]:
        """The server and every process of its session (workers included)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == self.proc.pid:
                found.append(int(entry.name))
        return found

    def pss_mb(self) -> float:
        """Total proportional set size of the process tree, in MB (shared pages split)."""
        total_kb = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
        return total_kb / 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process tree has used so far, in seconds."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM the whole session, then SIGKILL whatever is left after STOP_TIMEOUT."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        # Workers may outlive a leader that died early; the session's group still names them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    port: int,
    log: Path,
    cwd: Path,
    deadline: float,
    ready: Callable[[int], bool] | None = None,
    grpc_port: int = 0,
    cpu: str = SERVER_CPU,
) -> Iterator[Server]:
    """A started, ready server that is stopped on leaving, whatever happened meanwhile."""
    server = Server(name, argv, port, log, cwd, ready, grpc_port, cpu)
    try:
        server.wait_ready(deadline)
        yield server
    finally:
        server.stop()
