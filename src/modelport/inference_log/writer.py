"""The inference log's writer: records inferences off the request path, and loses none of the
records it accepted while its store is down.

`submit` only appends to a queue. A writer thread encodes the records and writes them to the
store in batches. When a write fails, the batch goes to a journal on local disk (JSON lines,
fsync'd) and every later record follows it there until the store takes the journal back, so
the store receives the records in the order they were accepted. Each writer journals into files
of its own (`journal.Journal`); a writer that starts adopts the journal of any writer whose
process ended, even in a crash, and delivers it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from modelport.errors import InvalidInput
from modelport.inference_log.journal import Journal, Segment
from modelport.inference_log.location import open_store
from modelport.inference_log.record import LogBatch, LogRecord, Row, encode_batch, encode_record
from modelport.inference_log.sink import LogSink
from modelport.inference_log.store import LogStore

logger = logging.getLogger("modelport.inference_log")

_JOURNAL_GRACE_SECONDS: Final = 5.0
_WATCH_SECONDS: Final = 0.25
"""How often the writer checks that the program is still running, however long it waits."""

# A row waiting in memory, with its place in the order of submission; None marks a record that
# could not be encoded (already counted as rejected), kept so that `flush` sees its place pass.
_Entry = tuple[int, Row | None]


class InferenceLog:
    """Records inferences off the request path; nothing acknowledged is lost while the sink is
    down (up to `capacity` records wait in memory and the journal)."""

    def __init__(
        self,
        store_target: str,
        journal_dir: Path,
        *,
        capacity: int = 1_000_000,
        flush_seconds: float = 0.05,
        batch_rows: int = 2000,
        opener: Callable[[str], LogStore] = open_store,
    ) -> None:
        if capacity < 1 or batch_rows < 1 or flush_seconds <= 0:
            raise InvalidInput(
                "the inference log needs capacity >= 1, batch_rows >= 1 and flush_seconds > 0"
            )
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        # Shared with submitters; everything else below is the writer thread's own.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending: deque[LogRecord | LogBatch] = deque()
        self._queued = 0
        """Rows in `_pending`."""
        self._backlog = 0
        self._dropped = 0
        self._rejected = 0
        self._accepted = 0
        self._settled = 0
        """How many of the accepted records (in order) are in the store or the journal."""
        self._closing = False
        self._stop_by = math.inf
        """When closing, the writer stops delivering at this time and journals the rest."""
        self._retry_now = False
        self._thread: threading.Thread | None = None

        self._journal = Journal(Path(journal_dir), batch_rows)
        self._sink = LogSink(store_target, opener, self._quarantine, self._journal.directory)
        self._held: deque[_Entry] = deque()
        self._taken = 0
        self._journal_failing = False
        self._recovered_rows = 0

    # -- the request path ------------------------------------------------------------------

    def submit(self, record: LogRecord | LogBatch) -> bool:
        """Queue `record` (a batch: its rows, all or none); False (counted in `dropped`) when
        the backlog has no room for it."""
        rows = _size(record)
        with self._lock:
            if self._closing or self._backlog + rows > self._capacity:
                self._dropped += rows
                return False
            self._backlog += rows
            self._accepted += rows
            self._queued += rows
            self._pending.append(record)
            wake = self._queued >= self._batch_rows and not self._wake.is_set()
        if wake:
            self._wake.set()
        return True

    @property
    def backlog(self) -> int:
        """Records accepted and not yet in the store (in memory or in the journal)."""
        return self._backlog

    @property
    def dropped(self) -> int:
        """Records refused because the backlog was at capacity (or the log closed)."""
        return self._dropped

    @property
    def rejected(self) -> int:
        """Records the store refused or that could not be encoded; kept in rejected-*.jsonl
        in the journal directory when possible."""
        return self._rejected

    @property
    def full(self) -> bool:
        """Whether the backlog is at capacity, so the next record would be dropped."""
        return self._backlog >= self._capacity

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt journals of ended writers and start the writer thread (after any fork)."""
        if self._thread is not None:
            return
        self._journal.begin()
        try:
            self._journal.lock()
        except OSError as exc:
            # Not fatal: records go to the store, and the journal is retried when it is needed.
            logger.error(
                "cannot use the inference log journal in %s (%s)", self._journal.directory, exc
            )
        adopted = self._journal.adopt()
        with self._lock:
            self._backlog += adopted
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=False)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every record submitted so far is in the store or the journal."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._accepted
            running = self._thread is not None and self._thread.is_alive()
            self._wake.set()
            while self._settled < target and running:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
            return self._settled >= target

    def drain(self, timeout: float) -> bool:
        """Retry the store now and wait until every accepted record is in it (backlog 0)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._retry_now = True
            running = self._thread is not None and self._thread.is_alive()
            self._wake.set()
            while self._backlog > 0 and running:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
            return self._backlog == 0

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, try the store once more and stop the writer; what the store
        does not take within `timeout` seconds stays in the journal for the next start.

        Waits up to `timeout` plus a few seconds (to journal the rest) for the writer to end.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._retry_now = True
            self._stop_by = time.monotonic() + timeout
        self._wake.set()
        if self._thread is None:
            # Never started: write the queue from here so that nothing accepted is lost.
            self._journal.begin()
            self._cycle(force=True)
            self._finish()
            return
        self._thread.join(timeout + _JOURNAL_GRACE_SECONDS)
        if self._thread.is_alive():
            logger.warning(
                "the inference log writer is still writing to %s after %.0f s",
                self._sink.display,
                timeout,
            )

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic() + self._flush_seconds
        while True:
            woken = self._wake.wait(min(max(due - time.monotonic(), 0), _WATCH_SECONDS))
            # A program that ends without close() must still exit, with its records kept.
            ending = not threading.main_thread().is_alive()
            if not (woken or ending or time.monotonic() >= due):
                continue
            self._wake.clear()
            due = time.monotonic() + self._flush_seconds
            with self._lock:
                closing = self._closing or ending
                force, self._retry_now = self._retry_now, False
            try:
                self._cycle(force or closing)
            except Exception:
                logger.exception("the inference log writer failed unexpectedly; it carries on")
                self._sink.failed(None)
            if closing:
                break
        self._finish()

    def _cycle(self, force: bool) -> None:
        """Encode what was submitted, then move records toward the store, keeping their order:
        journal first, then rows in memory (straight to the journal while it is not empty)."""
        self._encode(self._take())
        due = self._sink.due(force)
        if due and self._journal.waiting:
            self._deliver_journal()
        if due and not self._journal.waiting and self._held:
            self._deliver_held()
        if self._held and (self._journal.waiting or self._sink.down):
            self._journal_held()

    def _take(self) -> deque[LogRecord | LogBatch]:
        with self._lock:
            taken, self._pending = self._pending, deque()
            self._queued = 0
        return taken

    def _encode(self, records: deque[LogRecord | LogBatch]) -> None:
        for record in records:
            rows: Sequence[Row | None]
            try:
                rows = (
                    encode_batch(record)
                    if isinstance(record, LogBatch)
                    else [encode_record(record)]
                )
            except Exception as exc:
                count = _size(record)
                rows = [None] * count
                first = record.request_ids[0] if isinstance(record, LogBatch) else record.request_id
                logger.error(
                    "cannot record request %s%s of model %s: %s",
                    first,
                    f" and the {count - 1} answered with it" if count > 1 else "",
                    record.model,
                    exc,
                )
                with self._changed:
                    self._rejected += count
                    self._backlog -= count
                    self._changed.notify_all()
            for row in rows:
                self._taken += 1
                self._held.append((self._taken, row))

    def _deliver_held(self) -> None:
        while self._held and time.monotonic() < self._stop_by:
            chunk = [self._held.popleft() for _ in range(min(self._batch_rows, len(self._held)))]
            rows = [row for _, row in chunk if row is not None]
            done, error = self._sink.write(rows)
            if error is None:
                self._settle(chunk[-1][0], len(rows))
                self._sink.recovered()
                continue
            finished = _prefix(chunk, done)
            self._held.extendleft(reversed(chunk[finished:]))
            if finished:
                self._settle(chunk[finished - 1][0], done)
            self._sink.failed(error)
            return

    def _deliver_journal(self) -> None:
        while (segment := self._journal.oldest()) is not None and time.monotonic() < self._stop_by:
            try:
                rows, bad = self._journal.read(segment)
            except OSError as exc:
                logger.error(
                    "cannot read the journal file %s (%s); it is left for the next start",
                    segment.path,
                    exc,
                )
                self._journal.forget(segment)
                self._settle(None, segment.rows)
                continue
            if bad:
                for line in bad:
                    self._quarantine({"line": line.decode("utf-8", "replace")}, "not a row")
                self._keep(segment, rows)
            done, error = self._sink.write(rows)
            if error is not None:
                if done:
                    # Keep only what the store has not taken, so nothing is written twice.
                    self._keep(segment, rows[done:])
                self._sink.failed(error)
                return
            self._journal.remove(segment)
            self._recovered_rows += segment.rows
            self._settle(None, segment.rows)
            self._sink.recovered()
        if self._recovered_rows:
            logger.info(
                "delivered %d journaled inference records to %s",
                self._recovered_rows,
                self._sink.display,
            )
            self._recovered_rows = 0

    def _keep(self, segment: Segment, rows: list[Row]) -> None:
        """Rewrite `segment` with only `rows`; the others have left the backlog."""
        try:
            gone = self._journal.keep(segment, rows)
        except OSError as exc:
            logger.error("cannot rewrite the journal file %s (%s)", segment.path, exc)
            return
        self._settle(None, gone)

    def _journal_held(self) -> None:
        while self._held:
            room = self._journal.room()
            chunk = [self._held.popleft() for _ in range(min(room, len(self._held)))]
            rows = [row for _, row in chunk if row is not None]
            if not rows:
                self._settle(chunk[-1][0], 0)
                continue
            try:
                self._journal.append(rows)
            except Exception as exc:
                self._held.extendleft(reversed(chunk))
                if not self._journal_failing:
                    self._journal_failing = True
                    logger.error(
                        "cannot write the inference log journal in %s (%s); holding records in "
                        "memory (up to the capacity) until the store or the journal takes them",
                        self._journal.directory,
                        exc,
                    )
                return
            self._settle(chunk[-1][0], 0)
            if self._journal_failing:
                self._journal_failing = False
                logger.info(
                    "the inference log journal in %s is writable again", self._journal.directory
                )

    def _quarantine(self, row: Row, reason: str) -> None:
        path = self._journal.reject(row, reason)
        logger.error(
            "the inference log at %s refused a record (request %s of model %s): %s; kept in %s",
            self._sink.display,
            row.get("request_id"),
            row.get("model"),
            reason,
            path,
        )
        with self._changed:
            self._rejected += 1

    def _settle(self, through: int | None, delivered: int) -> None:
        """Records up to number `through` are safe; `delivered` rows left the backlog."""
        with self._changed:
            if through is not None:
                self._settled = through
            self._backlog -= delivered
            self._changed.notify_all()

    def _finish(self) -> None:
        if self._held:
            self._journal_held()
        if self._held:
            logger.error(
                "%d inference records could be neither stored nor journaled and are lost",
                sum(row is not None for _, row in self._held),
            )
        self._sink.close()
        if self._journal.waiting:
            logger.warning(
                "%d inference records wait in the journal in %s; they are delivered when the "
                "server starts again",
                self._journal.rows,
                self._journal.directory,
            )
        self._journal.close()


def _size(record: LogRecord | LogBatch) -> int:
    """How many rows `record` is."""
    return len(record) if isinstance(record, LogBatch) else 1


def _prefix(chunk: Sequence[_Entry], done: int) -> int:
    """How many entries of `chunk` are finished when its first `done` rows are."""
    count = 0
    for index, (_, row) in enumerate(chunk):
        if row is not None:
            if count == done:
                return index
            count += 1
    return len(chunk)
