"""Scoring a batch job's partitions on Dask: `--dask local:N` or `--dask tcp://HOST:PORT`.

`dask_mapper(address)` is a `PartitionMapper` for the driver: it submits one `score_partition`
per partition (in partition order, earliest first) to the cluster and hands back each result as
it completes; the driver commits it in the manifest exactly as it commits an in-process result,
so the committed output is the same bytes and `--resume` works the same. Each worker process
loads the model once, from the registry, with its digest verified (`jobs.model_cache`).

`local:N` starts a cluster of N single-threaded worker processes on loopback for the job and
stops it afterwards. `tcp://HOST:PORT` uses a running scheduler; its workers must reach the
registry, the inputs and the output at the same names the driver uses (see docs/batch.md), and
keep the models they loaded until they restart (another job may be using the same one).

Dask is an optional extra (`modelport[dask]`), imported only when a mapper runs.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from modelport.errors import InternalError, InvalidInput, ModelportError
from modelport.jobs.scoring import PartitionTask, PartResult, score_partition
from modelport.jobs.sources import is_remote

INSTALL_HINT: Final = "install modelport[dask] (pip install 'modelport[dask]')"
CONNECT_TIMEOUT_S: Final = 10.0
"""How long to wait for a tcp:// scheduler to answer before giving up."""
_LOCAL = re.compile(r"local:(\d+)")
_REMOTE = re.compile(r"(tcp|tls)://[^\s/:]+:\d+")
_MAX_LOCAL_WORKERS: Final = 256

Score = Callable[[PartitionTask], PartResult]


@dataclass(frozen=True, slots=True)
class DaskMapper:
    """Scores partitions on a Dask cluster; a `PartitionMapper` (see `jobs.driver`).

    `workers` is set for a cluster started for the job (`local:N`), `address` for a running
    one (`tcp://HOST:PORT`). `score` is what each task runs (the scorer; tests replace it).
    """

    workers: int | None = None
    address: str | None = None
    score: Score = score_partition

    def __call__(
        self, tasks: Sequence[PartitionTask], on_batch: Callable[[int, int], None]
    ) -> Iterator[PartResult]:
        """Submit every task, yield each result as it completes (any order).

        Progress is told once per partition, when its result arrives (workers run remotely).
        A task that fails stops the job: results that completed before it are yielded first
        (so the driver commits them), then the error is raised; unstarted tasks are cancelled.
        """
        if not tasks:
            return
        if self.address is not None:
            _check_reachable(tasks)
        distributed = _import_distributed()
        with self._client(distributed) as client:
            token = secrets.token_hex(4)
            # A result stays on its worker (and is computed again if that worker is lost)
            # while its future is held: each is dropped once its result is in hand.
            pending: dict[Any, PartitionTask] = {}
            for task in tasks:
                future = client.submit(
                    self.score,
                    task,
                    key=f"modelport-part-{task.index:05d}-{token}",
                    priority=-task.index,  # higher runs first: partitions in order
                    pure=False,
                )
                pending[future] = task
            try:
                for future in distributed.as_completed(list(pending)):
                    task = pending.pop(future)
                    if future.status != "finished":
                        # Commit what finished before the failure, then stop the job.
                        for done in [f for f in pending if f.status == "finished"]:
                            del pending[done]
                            yield self._arrived(done, on_batch)
                        raise _failure(future, task, self.address, distributed)
                    yield self._arrived(future, on_batch)
            finally:
                with suppress(OSError, TimeoutError):  # a scheduler gone away cancels nothing
                    client.cancel(list(pending), force=True)

    @staticmethod
    def _arrived(future: Any, on_batch: Callable[[int, int], None]) -> PartResult:
        result: PartResult = future.result()
        on_batch(result.rows_in, result.error_rows)
        return result

    def _client(self, distributed: Any) -> Any:
        """A client of the cluster (started here for local:N); closing it stops what it started."""
        if self.workers is not None:
            return _LocalClient(distributed, self.workers)
        try:
            return distributed.Client(self.address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise InvalidInput(
                f"cannot reach the Dask scheduler at {self.address} ({exc}); start one "
                "(`dask scheduler`, then `dask worker ADDRESS` on each machine) or use "
                "--dask local:N"
            ) from None


class _LocalClient:
    """A LocalCluster of single-threaded worker processes on loopback, and its client."""

    def __init__(self, distributed: Any, workers: int) -> None:
        import dask

        # Off: the workers' sampling profiler walks every thread's stack every 10 ms for a
        # dashboard this cluster does not serve (the nannies hand this setting to the workers).
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # Its HTTP endpoints on a free loopback port, not 8787 (another job may hold it).
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": False},
            )
        try:
            self._client = distributed.Client(self._cluster)
        except BaseException:
            self._cluster.close()
            raise

    def __enter__(self) -> Any:
        return self._client

    def __exit__(self, *exc: object) -> None:
        try:
            self._client.close()
        finally:
            self._cluster.close()


def dask_mapper(address: str) -> DaskMapper:
    """The mapper for `--dask ADDRESS` (`local:N` or `tcp://HOST:PORT`); checked, not started.

    InvalidInput for another form of address, or when Dask is not installed.
    """
    text = address.strip()
    local = _LOCAL.fullmatch(text)
    if local is not None:
        workers = int(local.group(1))
        if not 1 <= workers <= _MAX_LOCAL_WORKERS:
            raise InvalidInput(
                f"--dask {address}: give between 1 and {_MAX_LOCAL_WORKERS} local workers"
            )
        mapper = DaskMapper(workers=workers)
    elif _REMOTE.fullmatch(text):
        mapper = DaskMapper(address=text)
    else:
        raise InvalidInput(
            f"--dask takes local:N (a cluster of N worker processes on this machine) or the "
            f"address of a running scheduler, tcp://HOST:PORT; not {address!r}"
        )
    _import_distributed()
    return mapper


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InvalidInput(f"--dask needs Dask distributed: {INSTALL_HINT}") from None
    return distributed


def _check_reachable(tasks: Sequence[PartitionTask]) -> None:
    """Refuse relative local paths on a remote cluster: its workers resolve them elsewhere."""
    spec = tasks[0].spec
    named = {"the registry": spec.model.registry, "the output": spec.output}
    named.update({f"input {t.partition.path!r}": t.partition.path for t in tasks})
    relative = [what for what, path in named.items() if not _absolute(path)]
    if relative:
        raise InvalidInput(
            f"with a tcp:// Dask cluster, give {', '.join(relative[:5])} as an absolute path "
            "(on storage every worker mounts at the same place) or a URL"
        )


def _absolute(location: str) -> bool:
    if is_remote(location) or "://" in location:
        return True
    return os.path.isabs(location.removeprefix("file://"))


def _failure(
    future: Any, task: PartitionTask, address: str | None, distributed: Any
) -> ModelportError:
    """The error that stops the job when `task` failed on the cluster."""
    where = f"part {task.index} ({task.partition.path!r})"
    resume = "the parts already committed stay committed: fix the cause and run again with --resume"
    if future.status != "error":  # cancelled or lost: the scheduler no longer has it
        return InternalError(
            f"the Dask cluster dropped {where} (its scheduler went away?); {resume}"
        )
    exc = future.exception()
    if isinstance(exc, distributed.KilledWorker):
        return InternalError(
            f"Dask workers died while scoring {where} (out of memory? see the worker logs); "
            f"{resume}"
        )
    if isinstance(exc, ModelportError):
        if address is not None and exc.kind.value == "not_found":
            exc.message += (
                f" (on a worker of {address}: its workers need the registry at the same "
                "location, e.g. a postgresql:// registry with artifacts they all mount)"
            )
            exc.args = (exc.message,)
        return exc
    failed = InternalError(f"scoring {where} failed on a Dask worker: {exc!r}; {resume}")
    failed.__cause__ = exc
    return failed
