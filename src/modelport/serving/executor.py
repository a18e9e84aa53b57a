"""The single boundary where synchronous model code runs off the event loop."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Executor:
    """Runs blocking calls (predict, artifact loads) in a bounded thread pool.

    A process forked from one that used the pool gets a fresh pool of its own: threads do not
    survive a fork, and the inherited pool would take work that no thread ever runs.
    """

    def __init__(self, threads: int = 4) -> None:
        self._threads = threads
        self._pool = self._new_pool()
        own = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _renew(own))

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="modelport")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await `fn(*args, **kwargs)` run on a pool thread."""
        loop = asyncio.get_running_loop()
        if kwargs:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        return await loop.run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        """Stop accepting work and wait for running calls to finish."""
        self._pool.shutdown(wait=True)


def _renew(own: weakref.ref[Executor]) -> None:
    executor = own()
    if executor is not None:
        executor._pool = executor._new_pool()
