"""The executor runs blocking calls on its threads, also in a process forked after it ran some."""

from __future__ import annotations

import asyncio
import os
import threading

from modelport.serving.executor import Executor


def test_a_forked_child_gets_threads_of_its_own() -> None:
    executor = Executor(threads=1)
    parent_thread = asyncio.run(executor.run(threading.get_ident))
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            # The inherited pool's thread did not survive the fork: without a fresh pool this
            # call would wait forever for it.
            child_thread = asyncio.run(asyncio.wait_for(executor.run(threading.get_ident), 10))
            status = 0 if child_thread != threading.get_ident() else 2
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert asyncio.run(executor.run(threading.get_ident)) == parent_thread
    executor.shutdown()
