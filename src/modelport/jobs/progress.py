"""Progress of a batch job: a rich bar on a terminal, JSON lines otherwise, or nothing."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final, Literal, Protocol, TextIO

ProgressMode = Literal["auto", "bar", "json", "none"]
JSON_INTERVAL_S: Final = 5.0
"""Seconds between two JSON progress lines."""


class Progress(Protocol):
    """What the driver tells about the job as it runs."""

    def advance(self, rows: int, errors: int) -> None:
        """`rows` more rows read, `errors` more of them refused."""

    def part_done(self) -> None:
        """One more part committed."""

    def close(self) -> None:
        """The job ended (whatever the outcome)."""


class NoProgress:
    """Reports nothing (`--quiet`)."""

    def advance(self, rows: int, errors: int) -> None:
        pass

    def part_done(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonProgress:
    """A JSON line on `stream` at most every `interval` seconds, and one at the end."""

    def __init__(
        self,
        total_rows: int | None,
        parts: int,
        stream: TextIO | None = None,
        interval: float = JSON_INTERVAL_S,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._total, self._parts, self._interval = total_rows, parts, interval
        self._rows = self._errors = self._done = 0
        self._started = self._last = time.monotonic()

    def advance(self, rows: int, errors: int) -> None:
        self._rows += rows
        self._errors += errors
        if time.monotonic() - self._last >= self._interval:
            self._emit()

    def part_done(self) -> None:
        self._done += 1

    def close(self) -> None:
        self._emit()

    def _emit(self) -> None:
        now = time.monotonic()
        self._last = now
        elapsed = now - self._started
        line: dict[str, Any] = {
            "progress": "batch",
            "rows": self._rows,
            "errors": self._errors,
            "parts_done": self._done,
            "parts": self._parts,
            "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(self._rows / elapsed, 1) if elapsed > 0 else None,
            "total_rows": self._total,
        }
        print(json.dumps(line), file=self._stream, flush=True)


class BarProgress:
    """A rich progress bar on stderr: rows, rows/s, ETA (when the row count is known), errors."""

    def __init__(self, total_rows: int | None, parts: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[speed]} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("errors {task.fields[errors]}  parts {task.fields[done]}/" + str(parts)),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task("batch", total=total_rows, errors=0, done=0, speed="-")
        self._rows = self._errors = self._done = 0
        self._started = time.monotonic()
        self._bar.start()

    def advance(self, rows: int, errors: int) -> None:
        self._rows += rows
        self._errors += errors
        elapsed = time.monotonic() - self._started
        speed = f"{self._rows / elapsed:,.0f}" if elapsed > 0 else "-"
        self._bar.update(self._task, advance=rows, errors=self._errors, speed=speed)

    def part_done(self) -> None:
        self._done += 1
        self._bar.update(self._task, done=self._done)

    def close(self) -> None:
        self._bar.stop()


def make_progress(mode: ProgressMode, total_rows: int | None, parts: int) -> Progress:
    """The reporter for `mode`; "auto" is a bar on a terminal, JSON lines on anything else."""
    if mode == "none":
        return NoProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return BarProgress(total_rows, parts)
    return JsonProgress(total_rows, parts)
