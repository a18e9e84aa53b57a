"""The inference log's journal: where rows wait on local disk, in order, while the store is away.

A writer's journal is a run of segment files, `journal-OWNER-SEQ.jsonl` (JSON lines, fsync'd),
each of at most `batch_rows` rows, delivered oldest first. The writer holds an exclusive `flock`
on `journal-OWNER.lock` while it lives; a writer that starts adopts the segments of any writer
whose lock is free (its process ended, even in a crash). Rows the store refuses are set aside in
`rejected-OWNER.jsonl`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from modelport.inference_log.record import Row, is_row

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: journals of ended writers are not adopted
    fcntl = None  # type: ignore[assignment]

# The writer's logger: the journal's messages are part of the inference log's story.
logger = logging.getLogger("modelport.inference_log")

_SEGMENT: Final = re.compile(r"journal-(\d+-[0-9a-f]+)-(\d+)\.jsonl")
_LOCK: Final = re.compile(r"journal-(\d+-[0-9a-f]+)\.lock")


@dataclass(slots=True)
class Segment:
    """One journal file: at most `batch_rows` rows, delivered in one transaction."""

    path: Path
    rows: int


class Journal:
    """One writer's journal files in `directory`; used by one thread at a time."""

    def __init__(self, directory: Path, batch_rows: int) -> None:
        self.directory = directory
        self._batch_rows = batch_rows
        self._segments: deque[Segment] = deque()
        self._owner = ""
        self._lock_fd: int | None = None
        self._next_seq = 1

    def begin(self) -> None:
        """Take new file names for this writer; they hold the process id: call it after any fork."""
        self._owner = f"{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def waiting(self) -> bool:
        """Whether any segment waits to be delivered."""
        return bool(self._segments)

    @property
    def rows(self) -> int:
        """How many rows wait in the segments."""
        return sum(segment.rows for segment in self._segments)

    # -- ownership -------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold the lock that marks this writer's files as in use, while it lives; raise OSError."""
        if self._lock_fd is not None or fcntl is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path(self._owner), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def adopt(self) -> int:
        """Take over (rename into this writer's names) the segments of ended writers, to be
        delivered first; returns how many rows they hold."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            logger.error("cannot list the inference log journal in %s (%s)", self.directory, exc)
            return 0
        locks = {m.group(1) for m in map(_LOCK.fullmatch, names) if m} - {self._owner}
        owners: dict[str, list[tuple[int, str]]] = {}
        for match in map(_SEGMENT.fullmatch, names):
            if match and match.group(1) != self._owner:
                owners.setdefault(match.group(1), []).append((int(match.group(2)), match.group(0)))
        adopted = sum(self._release_if_free(owner, []) for owner in sorted(locks - owners.keys()))
        for owner in sorted(owners):
            adopted += self._release_if_free(owner, sorted(owners[owner]))
        return adopted

    def close(self) -> None:
        """Release the lock; its file goes too unless segments wait (the next start adopts them)."""
        if self._lock_fd is None:
            return
        if not self._segments:
            with contextlib.suppress(OSError):
                self._lock_path(self._owner).unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- rows in ---------------------------------------------------------------------------

    def room(self) -> int:
        """How many rows the next `append` may take."""
        tail = self._tail()
        return self._batch_rows if tail is None else self._batch_rows - tail.rows

    def append(self, rows: Sequence[Row]) -> None:
        """Add `rows` (at most `room()`) after all the others, on disk; on failure raise, and
        then none of them was added."""
        tail = self._tail()
        segment = Segment(self.directory / self._segment_name(), 0) if tail is None else tail
        self.lock()
        _append(segment.path, b"".join(orjson.dumps(row) + b"\n" for row in rows))
        if segment is not tail:
            self._segments.append(segment)
        segment.rows += len(rows)

    def reject(self, row: Row, reason: str) -> Path:
        """Set aside a row the store refused, if the disk allows; returns the file that keeps it."""
        path = self.directory / f"rejected-{self._owner}.jsonl"
        with contextlib.suppress(OSError):
            _append(path, orjson.dumps({"reason": reason, "row": row}) + b"\n")
        return path

    # -- rows out, oldest first ------------------------------------------------------------

    def oldest(self) -> Segment | None:
        """The segment to deliver next; None when the journal is empty."""
        return self._segments[0] if self._segments else None

    @staticmethod
    def read(segment: Segment) -> tuple[list[Row], list[bytes]]:
        """The rows of `segment`, and its lines that are not rows (a torn last line); raise
        OSError when it cannot be read."""
        rows: list[Row] = []
        bad: list[bytes] = []
        for line in segment.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad.append(line)
                continue
            if is_row(row):
                rows.append(row)
            else:
                bad.append(line)
        return rows, bad

    @staticmethod
    def keep(segment: Segment, rows: list[Row]) -> int:
        """Rewrite `segment` with only `rows`; returns how many rows left it. On failure raise
        OSError, and then the segment is unchanged."""
        temporary = segment.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        _append(temporary, b"".join(orjson.dumps(row) + b"\n" for row in rows))
        os.replace(temporary, segment.path)
        gone, segment.rows = segment.rows - len(rows), len(rows)
        return gone

    def forget(self, segment: Segment) -> None:
        """Stop delivering `segment` (it cannot be read); its file stays for the next start."""
        self._segments.remove(segment)

    def remove(self, segment: Segment) -> None:
        """Delete the delivered `segment`, or at least empty it so it is not delivered again."""
        self._segments.remove(segment)
        _remove(segment.path)

    # -- names -----------------------------------------------------------------------------

    def _tail(self) -> Segment | None:
        """The newest segment, while it has room for more rows."""
        if self._segments and self._segments[-1].rows < self._batch_rows:
            return self._segments[-1]
        return None

    def _segment_name(self) -> str:
        name = f"journal-{self._owner}-{self._next_seq:09d}.jsonl"
        self._next_seq += 1
        return name

    def _lock_path(self, owner: str) -> Path:
        return self.directory / f"journal-{owner}.lock"

    def _release_if_free(self, owner: str, names: list[tuple[int, str]]) -> int:
        """Claim the segments `names` of `owner` (in order) unless its writer is alive; returns
        how many rows they hold. A writer whose lock file is gone is taken for ended."""
        if fcntl is None:
            return 0
        lock_path = self._lock_path(owner)
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        except OSError:
            return 0
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return 0  # Its writer is alive.
            claimed = sum(self._claim(self.directory / name) for _, name in names)
            if fd is not None:
                with contextlib.suppress(OSError):
                    lock_path.unlink()
            return claimed
        finally:
            if fd is not None:
                os.close(fd)

    def _claim(self, path: Path) -> int:
        target = self.directory / self._segment_name()
        try:
            # Atomic: when two writers start together, one of them gets the file.
            os.rename(path, target)
            rows = sum(1 for line in target.read_bytes().split(b"\n") if line.strip())
        except OSError:
            return 0
        if rows == 0:
            _remove(target)
            return 0
        self._segments.append(Segment(target, rows))
        logger.info("adopted %d journaled inference records from %s", rows, path.name)
        return rows


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
