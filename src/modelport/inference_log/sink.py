"""The inference log's store as its writer sees it: opened on first use, the rows it refuses set
aside one by one, and tried again after a doubling delay while it is down."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from modelport.inference_log.record import Row
from modelport.inference_log.store import LogStore, RowsRejected
from modelport.registry.database import display_location

# The writer's logger: the sink's messages are part of the inference log's story.
logger = logging.getLogger("modelport.inference_log")

FIRST_RETRY_SECONDS: Final = 0.2
LAST_RETRY_SECONDS: Final = 5.0


class LogSink:
    """The store at `target`, for one writer thread; `set_aside(row, reason)` keeps a row the
    store refuses, and the journal in `journal_dir` is where the writer sends rows while the
    store is down (named in the warning)."""

    def __init__(
        self,
        target: str,
        opener: Callable[[str], LogStore],
        set_aside: Callable[[Row, str], None],
        journal_dir: Path,
    ) -> None:
        self._target = target
        self.display = display_location(target)
        """The target as it is safe to print."""
        self._opener = opener
        self._set_aside = set_aside
        self._journal_dir = journal_dir
        self._store: LogStore | None = None
        self._down = False
        self._delay = FIRST_RETRY_SECONDS
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """Whether the last write failed and none has succeeded since."""
        return self._down

    def due(self, force: bool) -> bool:
        """Whether to write now: always while the store is up, else when the delay is over."""
        return force or not self._down or time.monotonic() >= self._retry_at

    def write(self, rows: list[Row]) -> tuple[int, BaseException | None]:
        """Write `rows` in order; returns how many are done (stored, or refused and set aside)
        and the failure that stopped the rest, if any."""
        if not rows:
            return 0, None
        try:
            if self._store is None:
                self._store = self._opener(self._target)
            self._store.write(rows)
        except RowsRejected as exc:
            if len(rows) == 1:
                self._set_aside(rows[0], str(exc))
                return 1, None
            # Split until the refused rows are found; the others are stored.
            half = len(rows) // 2
            done, error = self.write(rows[:half])
            if error is not None:
                return done, error
            more, error = self.write(rows[half:])
            return half + more, error
        except Exception as exc:
            return 0, exc
        return len(rows), None

    def failed(self, error: BaseException | None) -> None:
        """A write failed (`error`, when known): wait before the next, longer each time."""
        if not self._down:
            self._down = True
            self._delay = FIRST_RETRY_SECONDS
            if error is not None:
                logger.warning(
                    "cannot write the inference log to %s (%s); journaling records in %s "
                    "until it is back",
                    self.display,
                    error,
                    self._journal_dir,
                )
        else:
            self._delay = min(self._delay * 2, LAST_RETRY_SECONDS)
        self._retry_at = time.monotonic() + self._delay

    def recovered(self) -> None:
        """A write succeeded: the store is up again."""
        if self._down:
            self._down = False
            self._delay = FIRST_RETRY_SECONDS
            logger.info("the inference log at %s is writable again", self.display)

    def close(self) -> None:
        """Close the store, if it was opened; a failure to close it does not matter any more."""
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
