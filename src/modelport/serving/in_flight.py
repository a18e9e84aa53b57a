"""Requests in flight per model version, counted by every process of one server together.

A model's `max_queue` bounds the whole server, not one worker. The counts live in a table in
shared memory, made in the parent before it forks the workers:

- one row per serving process: a process claims a free row when it starts serving (`claim`),
  and only it writes to that row, so the hot path takes no lock (each cell has one writer,
  whose aligned 8-byte stores the other processes read whole);
- one column (slot) per model version, found by a hash of NAME:VERSION in a key table, so
  every process that builds the same version counts in the same column. A version keeps its
  slot for the life of the server (one that comes back, loaded again or moved to by an alias,
  finds it again); slots are not given back on unload or retirement, because a version retired
  by one worker may still be served by another, or by a worker forked later from the parent.

A version's total is the sum of its column. The rows of processes that died (killed with
requests in flight) are swept to zero when a process claims a row, and before a request would
be shed (at most once a second per process), so a dead worker's requests are not counted for
long.

The table is laid out slot-major: a version's cells across rows are one contiguous run, summed
without slicing. It is sized for old and new workers side by side during a replacement.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import weakref
from functools import partial

import numpy as np

from modelport.errors import InternalError
from modelport.serving.shared_memory import ProcessLock, shared_array

log = logging.getLogger("modelport.dataplane")

SLOTS = 4096
"""Model versions one server can count across its workers over its lifetime."""
CLAIM_TIMEOUT = 30.0
"""Seconds a starting process waits for a free row (old workers still draining) before failing."""
SWEEP_SECONDS = 1.0
"""Least time between two sweeps for dead processes by a process about to shed a request."""
_FREE = 0


class InFlightTable:
    """The server's table of requests in flight: rows of processes, columns of model versions.

    Made once per server before the workers fork; shared by them all. `column(name, version)`
    gives a version its column; each process calls `claim` once when it starts serving (a
    process that counts before claiming claims then), adds to its own cell of a column, and
    reads a version's total as the column's sum. `LoadedModel` does both on every inference.
    """

    __slots__ = ("__weakref__", "_cells", "_keys", "_lock", "_owners", "_swept", "row", "rows")

    def __init__(self, rows: int, slots: int = SLOTS) -> None:
        if rows < 1 or slots < 1:
            raise ValueError("an in-flight table needs at least one row and one slot")
        self.rows = rows
        """How many processes can count at once."""
        self._cells = shared_array((slots, rows), np.int64)
        """Slot-major: `_cells[slot, row]` is one process's requests in flight for a version."""
        self._owners = shared_array((rows, 2), np.int64)
        """Each row's owner: its pid and start time (0, 0: free); a pid alone may be reused."""
        self._keys = shared_array(slots, np.int64)
        """Hash of NAME:VERSION owning each slot; 0 for a free slot."""
        self._lock = ProcessLock()
        """Orders claims of rows and slots, and sweeps."""
        self.row = rows
        """This process's row; `rows` (out of range) until it claims one. Read-only: `claim`
        sets it (a plain attribute, read on every request)."""
        self._swept = 0.0
        # A child forked after a claim must not write to its parent's row: it claims its own.
        os.register_at_fork(after_in_child=partial(_forget_row, weakref.ref(self)))

    @classmethod
    def for_workers(cls, workers: int) -> InFlightTable:
        """A table for a server of `workers` processes, with room for as many replacements."""
        return cls(rows=2 * workers + 1)

    def claim(self) -> int:
        """Take a row for this process (once; again after a fork) and return it.

        Sweeps the rows of dead processes first. Waits up to CLAIM_TIMEOUT for a row to free
        (old workers still draining); InternalError past it.
        """
        if self.row < self.rows:
            return self.row
        pid = os.getpid()
        deadline = time.monotonic() + CLAIM_TIMEOUT
        while True:
            with self._lock.hold() as held:
                if held:
                    self._sweep()
                    free = np.flatnonzero(self._owners[:, 0] == _FREE)
                    if free.size:
                        row = int(free[0])
                        self._cells[:, row] = 0
                        self._owners[row] = (pid, _started(pid) or 0)
                        self.row = row
                        return row
            if time.monotonic() >= deadline:
                raise InternalError(
                    f"all {self.rows} rows of the in-flight table are taken by live server "
                    "processes; stop the old workers, or restart the server"
                )
            time.sleep(0.05)

    def column(self, name: str, version: int) -> memoryview:
        """The column of `name:version`, in the slot every process finds for it.

        One cell per row: a process adds to `column[row]` alone (its own row; `row` is out of
        range, an IndexError, until it claims one), and the column's sum is the server's
        total. When every slot is taken (or the table cannot be locked), the version gets a
        column of its own in this process (counted per worker), and the log says so.
        """
        key = _key(name, version)
        with self._lock.hold() as held:
            if held:
                slots = np.flatnonzero(self._keys == key)
                if not slots.size:
                    slots = np.flatnonzero(self._keys == _FREE)[:1]
                    if slots.size:
                        self._keys[slots[0]] = key
                if slots.size:
                    return memoryview(self._cells[int(slots[0])])
        log.warning(
            "%s version %d: its max_queue is counted per worker (the in-flight table has no "
            "free slot; a restart of the server frees them)",
            name,
            version,
        )
        return memoryview(bytearray(8 * self.rows)).cast("q")

    def sweep(self) -> None:
        """Zero the rows of processes that died, at most once per SWEEP_SECONDS.

        Does not wait for the lock beyond what a claim holds it for; skipped if busy.
        """
        now = time.monotonic()
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        with self._lock.hold(timeout=0.0) as held:
            if held:
                self._sweep()

    def _sweep(self) -> None:
        """Zero and free the rows of dead processes; the caller holds the lock."""
        for row in np.flatnonzero(self._owners[:, 0] != _FREE):
            pid, started = (int(v) for v in self._owners[row])
            if _started(pid) != started:
                self._cells[:, row] = 0
                self._owners[row] = (_FREE, 0)


def _key(name: str, version: int) -> int:
    """A nonzero 64-bit key for NAME:VERSION, the same in every process."""
    digest = hashlib.blake2b(f"{name}:{version}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def _started(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot) while it runs; None once it has exited.

    A zombie (exited, not yet reaped) has exited. Without /proc, 0 for any live process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The fields after the command name, which is in parentheses and may hold ")".
            fields = fh.read().rpartition(b")")[2].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    # fields[0] is the state (field 3 of proc_pid_stat(5)); fields[19] is starttime (22).
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _forget_row(table: weakref.ReferenceType[InFlightTable]) -> None:
    """In a forked child: the parent's row is not the child's."""
    alive = table()
    if alive is not None:
        alive.row = alive.rows
