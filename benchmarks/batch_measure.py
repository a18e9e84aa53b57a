"""How the batch benchmark measures one command: wall time and peak RSS, from exec to exit.

Wall time is taken around the whole process, start-up included (what a user waits for).
Peak RSS is GNU time's `%M` (`/usr/bin/time -f %M -o FILE`): the measured process's own
high-water mark, or that of the largest descendant it waited for, never a sum of processes, so
it is meaningful for in-process runs only (not for Dask's workers). Not wait4(2) from this
script: a child's ru_maxrss starts from the RSS of the process that forked it (Python's
subprocess forks with vfork, and exec records the shared memory's high-water mark), so every
command would show this script's few hundred MB; /usr/bin/time is a small process to fork
from (about 1 MB). `taskset` execs its command, so the pinned command is the process measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
BATCH = WORK / "batch"
"""Scratch of the batch benchmark: input files, the registry, outputs, logs."""
DATA, REGISTRY, OUT, LOGS = (BATCH / d for d in ("data", "registry", "out", "logs"))
MODELPORT_BIN = Path(sys.executable).parent / "modelport"
TIME = "/usr/bin/time"
"""GNU time, for peak RSS (Debian/Ubuntu: `apt-get install time`)."""
TIMEOUT = 1800.0
"""Seconds any one measured command may take before it is killed (and reported FAILED)."""


@dataclass
class Run:
    """One measured command: exit code, wall seconds, peak RSS, and its output files."""

    code: int
    seconds: float
    peak_rss_mb: float
    stdout: Path
    stderr: Path

    @property
    def error(self) -> str:
        """Empty on success, else the exit status and the last line of stderr."""
        if self.code == 0:
            return ""
        lines = self.stderr.read_text(errors="replace").strip().splitlines()
        return f"exit status {self.code}: {lines[-1] if lines else 'no message'}"


def measured(argv: list[str], log: str, env: dict[str, str] | None = None) -> Run:
    """Run argv to completion in its own session; stdout and stderr go to LOGS/log.{out,err}."""
    LOGS.mkdir(parents=True, exist_ok=True)
    out_path, err_path = LOGS / f"{log}.out", LOGS / f"{log}.err"
    rss_path = LOGS / f"{log}.maxrss"
    rss_path.unlink(missing_ok=True)
    timed = [TIME, "-f", "%M", "-o", str(rss_path), *argv]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        # Its own session: Ctrl-C reaches this script only, which then kills the whole group.
        proc = subprocess.Popen(
            timed, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
        )
        timer = threading.Timer(TIMEOUT, _kill_group, (proc.pid,))
        timer.start()
        try:
            code = proc.wait()
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    # Whatever the command left behind in its session (a Dask worker) goes with it.
    _kill_group(proc.pid)
    # GNU time writes "Command exited with non-zero status N" before the figure on failure.
    lines = rss_path.read_text().split() if rss_path.exists() else []
    peak_kb = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Run(code, seconds, peak_kb / 1024, out_path, err_path)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def figures(label: str, rows: int, size: str, run: Run) -> dict[str, Any]:
    """A result row: rows/s over the wall time, peak RSS, and the error if the command failed."""
    result: dict[str, Any] = {"label": label, "rows": rows, "size": size, "seconds": run.seconds}
    result |= {"rows_per_s": rows / run.seconds, "peak_rss_mb": run.peak_rss_mb}
    result["error"] = run.error
    if run.error:
        print(f"  FAILED: {run.error}", flush=True)
    return result


def fresh(path: Path) -> Path:
    """path, removed if it exists (whoever writes there makes it), its parent made."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def modelport_env() -> dict[str, str]:
    """This environment without MODELPORT_REGISTRY: the benchmark names its registry itself."""
    return {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
