"""A private nats-server with JetStream for tests: start, stop (SIGTERM or SIGKILL), restart.

    server = NatsServer(tmp_path).start()          # JetStream, file storage under tmp_path
    url = server.url("stream=S&subject=s.in")      # nats://127.0.0.1:PORT?stream=S&...
    server.stop(kill=True); server.start()         # same port, same stored streams
    server.close()                                 # or use it as a context manager

Options: `user`/`password` or `token` (the URL carries them unless `credentials=False`), `tls`
(a `TlsFiles`, e.g. `TlsFiles.issue(directory)` with trustme), `config` (nats-server
configuration text, e.g. accounts with permissions). The server binds 127.0.0.1 only; it is
ready when its monitoring endpoint says JetStream is healthy.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
"""The nats-server executable: the one on PATH, else Debian's."""

READY_SECONDS = 20.0
STOP_SECONDS = 10.0


def nats_server_available() -> bool:
    """True when the nats-server executable exists (tests skip otherwise)."""
    return Path(NATS_SERVER).is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS server on 127.0.0.1/localhost, and a client certificate, one CA."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def issue(cls, directory: Path) -> TlsFiles:
        """A new trustme CA, a server certificate and a client certificate in `directory`."""
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("modelport-test-client")
        files = cls(
            ca=directory / "ca.pem",
            cert=directory / "server.pem",
            key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.private_key_pem.write_to_path(str(files.key))
        client.private_key_pem.write_to_path(str(files.client_key))
        for blob in server.cert_chain_pems:
            blob.write_to_path(str(files.cert), append=True)
        for blob in client.cert_chain_pems:
            blob.write_to_path(str(files.client_cert), append=True)
        return files


class NatsServer:
    """One nats-server process with JetStream on a fixed free port, restartable on that port."""

    def __init__(
        self,
        directory: Path,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
        verify_clients: bool = False,
        config: str | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.monitor_port = free_port()
        self.user, self.password, self.token = user, password, token
        self.tls = tls
        self.verify_clients = verify_clients
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / "nats-server.log"

    def url(self, query: str = "", *, credentials: bool = True) -> str:
        """The client URL (``tls://`` with TLS), with the credentials unless told otherwise."""
        scheme = "tls" if self.tls else "nats"
        userinfo = ""
        if credentials and self.user is not None:
            userinfo = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}@"
        elif credentials and self.token is not None:
            userinfo = f"{quote(self.token, safe='')}@"
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    def _command(self) -> list[str]:
        command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-m", str(self.monitor_port), "-js", "-sd", str(self.directory / "store")]
        if self.config is not None:
            path = self.directory / "nats-server.conf"
            path.write_text(self.config)
            command += ["-c", str(path)]
        if self.user is not None:
            command += ["--user", self.user, "--pass", self.password or ""]
        if self.token is not None:
            command += ["--auth", self.token]
        if self.tls is not None:
            command += ["--tlscert", str(self.tls.cert), "--tlskey", str(self.tls.key)]
            if self.verify_clients:
                command += ["--tlsverify", "--tlscacert", str(self.tls.ca)]
            else:
                command += ["--tls"]
        return command

    def start(self) -> NatsServer:
        """Start the server (again) and wait until JetStream is ready; RuntimeError if not."""
        if self.process is not None and self.process.poll() is None:
            return self
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._healthy():
            try:
                # Waiting on the process paces the polls and notices an early exit.
                self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
            self.stop(kill=True)
            raise RuntimeError(f"nats-server did not become ready:\n{self.log_tail()}")
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=1
            ) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with `kill`) and wait for the exit; SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)

    def restart(self, *, kill: bool = False) -> NatsServer:
        """Stop and start again on the same port, with the same stored streams."""
        self.stop(kill=kill)
        return self.start()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log (for failure messages)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server for good."""
        self.stop()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
