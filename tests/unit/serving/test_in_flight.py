"""The in-flight table: counts of forked processes add up, dead ones are swept, slots agree."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from modelport.errors import InternalError, Overloaded
from modelport.serving import in_flight
from modelport.serving.batching import BatchPolicy
from modelport.serving.catalog import Batched, LoadedModel
from modelport.serving.executor import Executor
from modelport.serving.in_flight import InFlightTable
from modelport.serving.limits import check_queue
from modelport.serving.shared_memory import shared_array

from .test_catalog import loaded


def _fork(work: Callable[[], None]) -> int:
    """Run `work()` in a forked child that exits 0 when it returns, 1 when it raises."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            work()
            status = 0
        finally:
            os._exit(status)
    return pid


def _exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@contextlib.contextmanager
def _holding(table: InFlightTable, name: str, version: int, count: int) -> Iterator[int]:
    """A child that claims a row and holds `count` requests of name:version until the end."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def hold() -> None:
        table.claim()
        table.counter(name, version).add(count)
        os.write(ready_w, b"1")
        os.read(done_r, 1)  # until the parent is done looking

    pid = _fork(hold)
    # Only the child writes `ready`: should it fail, the read below ends instead of hanging.
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"1"
        yield pid
    finally:
        with contextlib.suppress(BrokenPipeError):  # a child the test killed
            os.write(done_w, b"1")
        os.close(ready_r)
        os.close(done_w)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def test_counts_of_two_forked_processes_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    table = InFlightTable(rows=5)
    counter = table.counter("m", 1)  # before the fork, as the server builds its versions
    with _holding(table, "m", 1, 2), _holding(table, "m", 1, 3):
        assert counter.total() == 5
        assert table.counter("m", 2).total() == 0  # another version, another column
        assert counter.recount() == 5  # both alive: nothing to forget
    # Both exited with their requests still counted; a recount forgets the dead, though not
    # more than once a second (shedding under overload must stay cheap).
    assert counter.total() == 5
    assert counter.recount() == 5
    monkeypatch.setattr(in_flight, "SWEEP_SECONDS", 0.0)
    assert counter.recount() == 0


def test_each_process_writes_its_own_row() -> None:
    table = InFlightTable(rows=3)
    rows = shared_array(2, np.int64)

    def claim(index: int) -> Callable[[], None]:
        def work() -> None:
            rows[index] = table.claim() + 1
            assert table.claim() == rows[index] - 1  # once per process

        return work

    assert table.claim() == 0
    first = _fork(claim(0))
    assert _exit_code(first) == 0
    # A child forked after the parent claimed takes a row of its own, not the parent's.
    assert rows[0] == 2
    second = _fork(claim(1))
    assert _exit_code(second) == 0
    assert rows[1] == 2  # the first child's row was freed: it exited


def test_a_killed_process_is_swept_at_the_next_claim() -> None:
    table = InFlightTable(rows=2)
    counter = table.counter("m", 1)
    with _holding(table, "m", 1, 4) as pid:
        assert counter.total() == 4
        os.kill(pid, signal.SIGKILL)
        # Exited but not reaped (a zombie): already dead to the table.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert counter.total() == 4  # nothing has looked yet
        seen = shared_array(1, np.int64)

        def claim_and_look() -> None:
            table.claim()
            seen[0] = table.counter("m", 1).total() + 1

        assert _exit_code(_fork(claim_and_look)) == 0
        assert seen[0] == 1
        assert counter.total() == 0


def test_a_request_about_to_be_shed_sweeps_dead_processes_first() -> None:
    table = InFlightTable(rows=3)
    counter = table.counter("m", 1)
    with _holding(table, "m", 1, 2) as pid:
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert counter.total() == 2
        assert counter.recount() == 0


def test_slots_agree_across_processes_and_versions() -> None:
    table = InFlightTable(rows=3, slots=8)
    # The child claims the slot of m:7 first (as a worker loading a version itself does);
    # the parent, later, finds the same one.
    with _holding(table, "m", 7, 1):
        assert table.counter("m", 7).total() == 1
        assert table.counter("m", 8).total() == 0
        assert table.counter("n", 7).total() == 0


def test_a_version_loaded_twice_in_one_process_counts_both() -> None:
    # Loaded again while the old instance still drains: one version, one bound.
    table = InFlightTable(rows=2)
    old, new = table.counter("m", 1), table.counter("m", 1)
    old.add(2)
    new.add(1)
    old.add(-2)
    assert new.total() == 1


def test_a_full_table_counts_a_version_per_process_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = InFlightTable(rows=2, slots=1)
    table.counter("m", 1).add(1)
    with caplog.at_level(logging.WARNING, logger="modelport.dataplane"):
        alone = table.counter("m", 2)
    assert "counted per worker" in caplog.text
    alone.add(3)
    assert alone.total() == 3
    assert table.counter("m", 1).total() == 1


def test_a_process_with_no_free_row_fails_to_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    table = InFlightTable(rows=1)
    table.claim()
    monkeypatch.setattr(in_flight, "CLAIM_TIMEOUT", 0.0)

    def claim() -> None:
        with pytest.raises(InternalError, match="rows of the in-flight table are taken"):
            table.claim()

    assert _exit_code(_fork(claim)) == 0


def test_a_process_that_counts_before_claiming_claims_then() -> None:
    table = InFlightTable(rows=2)
    counter = table.counter("m", 1)
    assert table.row == table.rows  # not claimed yet
    counter.add(1)
    assert table.row == 0
    assert counter.total() == 1


def _served(table: InFlightTable, max_queue: int) -> LoadedModel:
    model = loaded("m", 1)
    dispatch = Batched(Executor(1), BatchPolicy(1), max_queue=max_queue, counts=table)
    return LoadedModel(model.version, model.runtime, None, dispatch)


def test_the_queue_bound_holds_across_processes() -> None:
    table = InFlightTable(rows=3)
    model = _served(table, max_queue=3)
    with _holding(table, "m", 1, 2):
        check_queue(model)  # two in flight elsewhere, one more fits
        model.enter()
        assert model.in_flight == 1  # this process's own (what retiring waits for)
        assert model.waiting() == 3
        with pytest.raises(Overloaded, match="across all of the server's workers") as shed:
            check_queue(model)
        assert "3 requests waiting" in shed.value.message
        assert "max_queue" in shed.value.message
        model.leave()
        check_queue(model)
