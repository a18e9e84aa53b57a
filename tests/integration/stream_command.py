"""`modelport stream` as a subprocess the tests start, watch, stop (SIGTERM) and kill (SIGKILL).

Its stderr (the start-up line, JSON progress lines, logs, the final `{"stopped": ...}` line)
is drained by a reader thread for the whole life of the process, so a chatty consumer never
blocks on a full pipe, and kept for failure reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STARTED = "modelport streaming "
"""The start of the line the command prints once its model is loaded, just before it consumes."""
STOP_TIMEOUT = 60.0
"""Seconds a stopped consumer may take to exit beyond its drain timeout (a hang guard)."""
POLL = 0.02
"""Seconds between two looks at a condition polled with a deadline."""


class StreamCommand:
    """One `modelport stream iris --format json ...` process."""

    def __init__(self, argv: Sequence[str], *, drain_timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
        env["PYTHONUNBUFFERED"] = "1"
        self.argv = list(argv)
        self.drain_timeout = drain_timeout
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def log(self) -> str:
        """Everything the process printed so far."""
        with self._lock:
            return "\n".join(self.lines)

    def _json(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.lines)
        found = []
        for line in lines:
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    @property
    def progress(self) -> list[dict[str, Any]]:
        """The progress lines so far (every 5 s)."""
        return [d for d in self._json() if "received" in d]

    @property
    def stopped(self) -> dict[str, Any]:
        """The counts of the final line; AssertionError when there is none."""
        final = [d["stopped"] for d in self._json() if "stopped" in d]
        assert final, f"no final line from the consumer:\n{self.log()}"
        return dict(final[-1])

    def stop(self) -> int:
        """SIGTERM, then wait for the exit (the drain timeout and a hang guard); the status."""
        if self.running:
            self._proc.send_signal(signal.SIGTERM)
        return self.wait(self.drain_timeout + STOP_TIMEOUT)

    def kill(self) -> int:
        """SIGKILL, as a crash: nothing is drained; the status."""
        if self.running:
            self._proc.send_signal(signal.SIGKILL)
        return self.wait(STOP_TIMEOUT)

    def wait(self, timeout: float) -> int:
        """Wait for the exit; fail with the output when it does not come within `timeout`."""
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
            raise AssertionError(
                f"the consumer did not exit within {timeout:.0f} s:\n{self.log()}"
            ) from None
        self._reader.join(STOP_TIMEOUT)
        return code


def stream_argv(
    registry: Path,
    source: str,
    sink: str,
    *,
    group: str,
    consumer: str,
    options: Sequence[str] = (),
) -> list[str]:
    """The command line of `modelport stream iris --format json` for these addresses."""
    return [
        sys.executable,
        *("-m", "modelport", "stream", "iris", "--format", "json"),
        *("--source", source, "--sink", sink, "--group", group, "--consumer", consumer),
        *options,
        *("--registry", str(registry)),
    ]


def poll(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    alive: Sequence[StreamCommand] = (),
) -> float:
    """Look at `check` every POLL seconds until it is true; the monotonic time it was seen.

    Fails saying `what` did not happen within `timeout` seconds, or at once, with its output,
    when one of the `alive` consumers exited meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        for consumer in alive:
            assert consumer.running, (
                f"the consumer exited ({consumer.returncode}):\n{consumer.log()}"
            )
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(POLL)  # the interval of a poll with a deadline, not a wait for a condition
