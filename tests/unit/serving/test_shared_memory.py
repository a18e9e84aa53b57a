"""Shared memory and the process lock: what one forked process writes, the others read."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from modelport.serving.shared_memory import ProcessLock, shared_array

from ...conftest import in_child


def test_a_forked_child_writes_what_the_parent_reads() -> None:
    counts = shared_array((2, 3), np.int64)

    def write() -> None:
        counts[1, 2] = 7

    assert in_child(write) == 0
    assert counts.tolist() == [[0, 0, 0], [0, 0, 7]]


def test_object_arrays_cannot_be_shared() -> None:
    with pytest.raises(TypeError, match="plain numbers"):
        shared_array(3, object)


def test_the_lock_excludes_another_process() -> None:
    lock = ProcessLock()
    seen = shared_array(1, np.int64)

    def try_it() -> None:
        with lock.hold(timeout=0.3) as held:
            seen[0] = 1 if held else -1

    with lock.hold() as held:
        assert held
        assert in_child(try_it) == 0
    assert seen[0] == -1
    assert in_child(try_it) == 0
    assert seen[0] == 1


def test_a_lock_whose_holder_was_killed_is_taken_over() -> None:
    lock = ProcessLock()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        with lock.hold():
            os.write(write, b"1")
            signal.pause()
        os._exit(0)
    assert os.read(read, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with lock.hold(timeout=2.0) as held:
        assert held
    with lock.hold(timeout=0.5) as held:  # released normally by the one that took it over
        assert held
