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

from ...conftest import exit_code, fork_child
from .test_catalog import loaded


def _served(
    table: InFlightTable, name: str = "m", version: int = 1, max_queue: int = 8
) -> LoadedModel:
    """A version as the server builds it: batched, counted in `table`."""
    model = loaded(name, version)
    dispatch = Batched(Executor(1), BatchPolicy(1), max_queue=max_queue, counts=table)
    return LoadedModel(model.version, model.runtime, None, dispatch)


@contextlib.contextmanager
def _holding(
    table: InFlightTable, count: int, model: LoadedModel | None = None, version: int = 1
) -> Iterator[int]:
    """A child serving `count` requests until the block ends: of `model` (built before the
    fork, inherited), else of version `version` of m, which the child builds itself."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def hold() -> None:
        table.claim()
        served = model if model is not None else _served(table, version=version)
        for _ in range(count):
            served.enter()
        os.write(ready_w, b"1")
        os.read(done_r, 1)  # until the parent is done looking

    pid = fork_child(hold)
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


def _killed(pid: int) -> None:
    """Kill the child and wait until it has exited, without reaping it (it stays a zombie)."""
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_counts_of_two_forked_processes_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    table = InFlightTable(rows=5)
    model = _served(table)  # before the fork, as the server builds its versions
    # One child serves the inherited version, the other builds the same version itself.
    with _holding(table, 2, model), _holding(table, 3):
        assert model.waiting() == 5
        assert model.in_flight == 0  # this process's own
        assert _served(table, version=2).waiting() == 0  # another version, another column
        assert model.recount() == 5  # both alive: nothing to forget
    # Both exited with their requests still counted; a recount forgets the dead, though not
    # more than once a second (shedding under overload must stay cheap).
    assert model.waiting() == 5
    assert model.recount() == 5
    monkeypatch.setattr(in_flight, "SWEEP_SECONDS", 0.0)
    assert model.recount() == 0


def test_each_process_writes_its_own_row() -> None:
    table = InFlightTable(rows=3)
    rows = shared_array(2, np.int64)

    def claim(index: int) -> Callable[[], None]:
        def work() -> None:
            rows[index] = table.claim() + 1
            assert table.claim() == rows[index] - 1  # once per process

        return work

    assert table.claim() == 0
    first = fork_child(claim(0))
    assert exit_code(first) == 0
    # A child forked after the parent claimed takes a row of its own, not the parent's.
    assert rows[0] == 2
    second = fork_child(claim(1))
    assert exit_code(second) == 0
    assert rows[1] == 2  # the first child's row was freed: it exited


def test_a_killed_process_is_swept_at_the_next_claim() -> None:
    table = InFlightTable(rows=2)
    model = _served(table)
    with _holding(table, 4, model) as pid:
        assert model.waiting() == 4
        _killed(pid)  # a zombie has exited: already dead to the table
        assert model.waiting() == 4  # nothing has looked yet
        seen = shared_array(1, np.int64)

        def claim_and_look() -> None:
            table.claim()
            seen[0] = model.waiting() + 1

        assert exit_code(fork_child(claim_and_look)) == 0
        assert seen[0] == 1
        assert model.waiting() == 0


def test_a_request_about_to_be_shed_sweeps_dead_processes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = InFlightTable(rows=3)
    model = _served(table, max_queue=2)
    monkeypatch.setattr(in_flight, "SWEEP_SECONDS", 0.0)  # no second between two sweeps
    with _holding(table, 2, model) as pid:
        with pytest.raises(Overloaded):
            check_queue(model)  # swept: the child is alive
        _killed(pid)
        assert model.waiting() == 2
        check_queue(model)  # the dead child's requests are forgotten
        assert model.waiting() == 0


def test_slots_agree_across_processes_and_versions() -> None:
    table = InFlightTable(rows=3, slots=8)
    # The child claims the slot of m:7 first (as a worker loading a version itself does);
    # the parent, later, finds the same one.
    with _holding(table, 1, version=7):
        assert _served(table, "m", 7).waiting() == 1
        assert _served(table, "m", 8).waiting() == 0
        assert _served(table, "n", 7).waiting() == 0


def test_a_version_loaded_twice_in_one_process_counts_both() -> None:
    # Loaded again while the old instance still drains: one version, one bound.
    table = InFlightTable(rows=2)
    old, new = _served(table), _served(table)
    old.enter()
    old.enter()
    new.enter()
    old.leave()
    assert (old.in_flight, new.in_flight) == (1, 1)
    assert new.waiting() == 2
    old.leave()
    assert new.waiting() == 1


def test_a_full_table_counts_a_version_per_process_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = InFlightTable(rows=2, slots=1)
    first = _served(table, version=1)
    first.enter()
    with caplog.at_level(logging.WARNING, logger="modelport.dataplane"):
        alone = _served(table, version=2)
    assert "counted per worker" in caplog.text
    alone.enter()
    alone.enter()
    assert alone.waiting() == 2
    assert first.waiting() == 1


def test_a_process_with_no_free_row_fails_to_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    table = InFlightTable(rows=1)
    table.claim()
    monkeypatch.setattr(in_flight, "CLAIM_TIMEOUT", 0.0)

    def claim() -> None:
        with pytest.raises(InternalError, match="rows of the in-flight table are taken"):
            table.claim()

    assert exit_code(fork_child(claim)) == 0


def test_a_process_that_counts_before_claiming_claims_then() -> None:
    table = InFlightTable(rows=2)
    model = _served(table)
    assert table.row == table.rows  # not claimed yet
    model.enter()
    assert table.row == 0
    assert model.waiting() == 1


def test_the_queue_bound_holds_across_processes() -> None:
    table = InFlightTable(rows=3)
    model = _served(table, max_queue=3)
    with _holding(table, 2, model):
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


def test_an_embedded_model_counts_alone() -> None:
    model = loaded("m", 1)  # modelport.load: Direct dispatch, no table
    model.enter()
    assert model.waiting() == model.recount() == 1
    model.leave()
    assert model.waiting() == 0
