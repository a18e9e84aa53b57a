"""The inference log's writer: records inferences off the request path, and loses none of the
records it accepted while its store is down.

`submit` only appends to a queue. A writer thread encodes the records and writes them to the
store in batches. When a write fails, the batch goes to a journal on local disk (JSON lines,
fsync'd) and every later record follows it there until the store takes the journal back, so
the store receives the records in the order they were accepted. Each writer journals into files
of its own, which it holds an exclusive `flock` on; a writer that starts adopts the journal of
any writer whose lock is free (its process ended, even in a crash) and delivers it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from modelport.errors import InvalidInput
from modelport.observability.log_store import (
    COLUMNS,
    LogRecord,
    LogStore,
    Row,
    RowsRejected,
    display_target,
    encode_record,
    open_store,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: journals of ended writers are not adopted
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("modelport.inference_log")

FIRST_RETRY_SECONDS: Final = 0.2
LAST_RETRY_SECONDS: Final = 5.0
_JOURNAL_GRACE_SECONDS: Final = 5.0
_WATCH_SECONDS: Final = 0.25
"""How often the writer checks that the program is still running, however long it waits."""
_SEGMENT: Final = re.compile(r"journal-(\d+-[0-9a-f]+)-(\d+)\.jsonl")
_LOCK: Final = re.compile(r"journal-(\d+-[0-9a-f]+)\.lock")
_TEXT: Final = frozenset(COLUMNS) - {"at", "version", "inputs", "outputs", "latency_ms"}

# A row waiting in memory, with its place in the order of submission; None marks a record that
# could not be encoded (already counted as rejected), kept so that `flush` sees its place pass.
_Entry = tuple[int, Row | None]


@dataclass(slots=True)
class _Segment:
    """One journal file: at most `batch_rows` rows, delivered in one transaction."""

    path: Path
    rows: int


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
        self._target = store_target
        self._display = display_target(store_target)
        self._journal = Path(journal_dir)
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._batch_rows = batch_rows
        self._opener = opener
        # Shared with submitters; everything else below is the writer thread's own.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending: deque[LogRecord] = deque()
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

        self._store: LogStore | None = None
        self._held: deque[_Entry] = deque()
        self._taken = 0
        self._segments: deque[_Segment] = deque()
        self._token = ""
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._outage = False
        self._journal_failing = False
        self._delay = FIRST_RETRY_SECONDS
        self._retry_at = 0.0
        self._recovered_rows = 0

    # -- the request path ------------------------------------------------------------------

    def submit(self, record: LogRecord) -> bool:
        """Queue `record`; False (counted in `dropped`) when the backlog is at capacity."""
        with self._lock:
            if self._closing or self._backlog >= self._capacity:
                self._dropped += 1
                return False
            self._backlog += 1
            self._accepted += 1
            self._pending.append(record)
            wake = len(self._pending) >= self._batch_rows and not self._wake.is_set()
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
        self._token = f"{os.getpid()}-{secrets.token_hex(3)}"
        try:
            self._claim_lock()
        except OSError as exc:
            # Not fatal: records go to the store, and the journal is retried when it is needed.
            logger.error("cannot use the inference log journal in %s (%s)", self._journal, exc)
        self._adopt()
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
            self._token = f"{os.getpid()}-{secrets.token_hex(3)}"
            self._cycle(force=True)
            self._finish()
            return
        self._thread.join(timeout + _JOURNAL_GRACE_SECONDS)
        if self._thread.is_alive():
            logger.warning(
                "the inference log writer is still writing to %s after %.0f s",
                self._display,
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
                self._failed(None)
            if closing:
                break
        self._finish()

    def _cycle(self, force: bool) -> None:
        """Encode what was submitted, then move records toward the store, keeping their order:
        journal first, then rows in memory (straight to the journal while it is not empty)."""
        self._encode(self._take())
        due = force or not self._outage or time.monotonic() >= self._retry_at
        if due and self._segments:
            self._deliver_journal()
        if due and not self._segments and self._held:
            self._deliver_held()
        if self._held and (self._segments or self._outage):
            self._journal_held()

    def _take(self) -> deque[LogRecord]:
        with self._lock:
            taken, self._pending = self._pending, deque()
        return taken

    def _encode(self, records: deque[LogRecord]) -> None:
        for record in records:
            self._taken += 1
            try:
                row: Row | None = encode_record(record)
            except Exception as exc:
                row = None
                logger.error(
                    "cannot record request %s of model %s: %s", record.request_id, record.model, exc
                )
                with self._changed:
                    self._rejected += 1
                    self._backlog -= 1
                    self._changed.notify_all()
            self._held.append((self._taken, row))

    def _deliver_held(self) -> None:
        while self._held and time.monotonic() < self._stop_by:
            chunk = [self._held.popleft() for _ in range(min(self._batch_rows, len(self._held)))]
            rows = [row for _, row in chunk if row is not None]
            done, error = self._write(rows)
            if error is None:
                self._settle(chunk[-1][0], len(rows))
                self._recovered()
                continue
            finished = _prefix(chunk, done)
            self._held.extendleft(reversed(chunk[finished:]))
            if finished:
                self._settle(chunk[finished - 1][0], done)
            self._failed(error)
            return

    def _deliver_journal(self) -> None:
        while self._segments and time.monotonic() < self._stop_by:
            segment = self._segments[0]
            try:
                rows, bad = _read_segment(segment.path)
            except OSError as exc:
                logger.error(
                    "cannot read the journal file %s (%s); it is left for the next start",
                    segment.path,
                    exc,
                )
                self._segments.popleft()
                self._settle(None, segment.rows)
                continue
            if bad:
                for line in bad:
                    self._quarantine({"line": line.decode("utf-8", "replace")}, "not a row")
                self._keep(segment, rows)
            done, error = self._write(rows)
            if error is not None:
                if done:
                    # Keep only what the store has not taken, so nothing is written twice.
                    self._keep(segment, rows[done:])
                self._failed(error)
                return
            _remove(segment.path)
            self._segments.popleft()
            self._recovered_rows += segment.rows
            self._settle(None, segment.rows)
            self._recovered()
        if self._recovered_rows:
            logger.info(
                "delivered %d journaled inference records to %s",
                self._recovered_rows,
                self._display,
            )
            self._recovered_rows = 0

    def _keep(self, segment: _Segment, rows: list[Row]) -> None:
        """Rewrite `segment` with only `rows`; the others have left the backlog."""
        try:
            _rewrite(segment.path, rows)
        except OSError as exc:
            logger.error("cannot rewrite the journal file %s (%s)", segment.path, exc)
            return
        self._settle(None, segment.rows - len(rows))
        segment.rows = len(rows)

    def _journal_held(self) -> None:
        while self._held:
            last = self._segments[-1] if self._segments else None
            if last is None or last.rows >= self._batch_rows:
                segment = _Segment(self._journal / self._segment_name(), 0)
            else:
                segment = last
            room = self._batch_rows - segment.rows
            chunk = [self._held.popleft() for _ in range(min(room, len(self._held)))]
            rows = [row for _, row in chunk if row is not None]
            if not rows:
                self._settle(chunk[-1][0], 0)
                continue
            try:
                self._claim_lock()
                _append(segment.path, b"".join(orjson.dumps(row) + b"\n" for row in rows))
            except Exception as exc:
                self._held.extendleft(reversed(chunk))
                if not self._journal_failing:
                    self._journal_failing = True
                    logger.error(
                        "cannot write the inference log journal in %s (%s); holding records in "
                        "memory (up to the capacity) until the store or the journal takes them",
                        self._journal,
                        exc,
                    )
                return
            if segment is not last:
                self._segments.append(segment)
            segment.rows += len(rows)
            self._settle(chunk[-1][0], 0)
            if self._journal_failing:
                self._journal_failing = False
                logger.info("the inference log journal in %s is writable again", self._journal)

    def _write(self, rows: list[Row]) -> tuple[int, BaseException | None]:
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
                self._quarantine(rows[0], str(exc))
                return 1, None
            # Split until the refused rows are found; the others are stored.
            half = len(rows) // 2
            done, error = self._write(rows[:half])
            if error is not None:
                return done, error
            more, error = self._write(rows[half:])
            return half + more, error
        except Exception as exc:
            return 0, exc
        return len(rows), None

    def _quarantine(self, row: Row, reason: str) -> None:
        path = self._journal / f"rejected-{self._token}.jsonl"
        logger.error(
            "the inference log at %s refused a record (request %s of model %s): %s; kept in %s",
            self._display,
            row.get("request_id"),
            row.get("model"),
            reason,
            path,
        )
        with contextlib.suppress(OSError):
            _append(path, orjson.dumps({"reason": reason, "row": row}) + b"\n")
        with self._changed:
            self._rejected += 1

    def _settle(self, through: int | None, delivered: int) -> None:
        """Records up to number `through` are safe; `delivered` rows left the backlog."""
        with self._changed:
            if through is not None:
                self._settled = through
            self._backlog -= delivered
            self._changed.notify_all()

    def _failed(self, error: BaseException | None) -> None:
        if not self._outage:
            self._outage = True
            self._delay = FIRST_RETRY_SECONDS
            if error is not None:
                logger.warning(
                    "cannot write the inference log to %s (%s); journaling records in %s "
                    "until it is back",
                    self._display,
                    error,
                    self._journal,
                )
        else:
            self._delay = min(self._delay * 2, LAST_RETRY_SECONDS)
        self._retry_at = time.monotonic() + self._delay

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            self._delay = FIRST_RETRY_SECONDS
            logger.info("the inference log at %s is writable again", self._display)

    def _finish(self) -> None:
        if self._held:
            self._journal_held()
        if self._held:
            logger.error(
                "%d inference records could be neither stored nor journaled and are lost",
                sum(row is not None for _, row in self._held),
            )
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
        if self._segments:
            logger.warning(
                "%d inference records wait in the journal in %s; they are delivered when the "
                "server starts again",
                sum(segment.rows for segment in self._segments),
                self._journal,
            )
        elif self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self._journal / f"journal-{self._token}.lock").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the journal's files ---------------------------------------------------------------

    def _segment_name(self) -> str:
        name = f"journal-{self._token}-{self._next_seq:09d}.jsonl"
        self._next_seq += 1
        return name

    def _claim_lock(self) -> None:
        """Hold the lock that marks this writer's journal files as in use (while it lives)."""
        if self._lock_fd is not None or fcntl is None:
            return
        self._journal.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._journal / f"journal-{self._token}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd

    def _adopt(self) -> None:
        """Claim (rename into this writer's names) the journal files of ended writers."""
        try:
            names = os.listdir(self._journal)
        except FileNotFoundError:
            return
        except OSError as exc:
            logger.error("cannot list the inference log journal in %s (%s)", self._journal, exc)
            return
        locks = {m.group(1) for m in map(_LOCK.fullmatch, names) if m} - {self._token}
        owners: dict[str, list[tuple[int, str]]] = {}
        for match in map(_SEGMENT.fullmatch, names):
            if match and match.group(1) != self._token:
                owners.setdefault(match.group(1), []).append((int(match.group(2)), match.group(0)))
        for owner in sorted(locks - owners.keys()):
            self._release_if_free(owner, {})
        for owner in sorted(owners):
            self._release_if_free(owner, owners)

    def _release_if_free(self, owner: str, owners: dict[str, list[tuple[int, str]]]) -> None:
        if fcntl is None:
            return
        lock_path = self._journal / f"journal-{owner}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            fd = None  # The files of a writer whose lock is gone are nobody's.
        except OSError:
            return
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return  # Its writer is alive.
            for _, name in sorted(owners.get(owner, [])):
                self._claim(self._journal / name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    lock_path.unlink()
        finally:
            if fd is not None:
                os.close(fd)

    def _claim(self, path: Path) -> None:
        target = self._journal / self._segment_name()
        try:
            # Atomic: when two writers start together, one of them gets the file.
            os.rename(path, target)
            rows = sum(1 for line in target.read_bytes().split(b"\n") if line.strip())
        except OSError:
            return
        if rows == 0:
            _remove(target)
            return
        self._segments.append(_Segment(target, rows))
        with self._changed:
            self._backlog += rows
        logger.info("adopted %d journaled inference records from %s", rows, path.name)


def _prefix(chunk: Sequence[_Entry], done: int) -> int:
    """How many entries of `chunk` are finished when its first `done` rows are."""
    count = 0
    for index, (_, row) in enumerate(chunk):
        if row is not None:
            if count == done:
                return index
            count += 1
    return len(chunk)


def _append(path: Path, data: bytes) -> None:
    """Append and fsync; on failure cut the file back so no partial line is left."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if new:
        _sync_directory(path.parent)


def _sync_directory(path: Path) -> None:
    # A new file survives a power cut only once its directory entry is on disk too.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_segment(path: Path) -> tuple[list[Row], list[bytes]]:
    """The rows of a journal file, and the lines that are not rows (a torn last line)."""
    rows: list[Row] = []
    bad: list[bytes] = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append(line)
            continue
        if _is_row(row):
            rows.append(row)
        else:
            bad.append(line)
    return rows, bad


def _is_row(row: Any) -> bool:
    if not isinstance(row, dict) or not all(c in row for c in COLUMNS):
        return False
    number = (int, float)
    return (
        all(isinstance(row[c], str) for c in _TEXT)
        and isinstance(row["at"], number)
        and isinstance(row["latency_ms"], number)
        and (row["version"] is None or isinstance(row["version"], int))
        and all(row[c] is None or isinstance(row[c], str) for c in ("inputs", "outputs"))
    )


def _rewrite(path: Path, rows: list[Row]) -> None:
    temporary = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    _append(temporary, b"".join(orjson.dumps(row) + b"\n" for row in rows))
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    """Delete a delivered journal file, or at least empty it so it is not delivered again."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        try:
            os.truncate(path, 0)
        except OSError as exc:
            logger.error(
                "cannot remove the delivered journal file %s (%s); remove it, or its records "
                "are stored again when the server restarts",
                path,
                exc,
            )
