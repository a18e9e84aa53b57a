"""Nanoseconds per inference for a model's queue count: enter, check_queue, leave.

Every inference counts itself in and out of its model version and checks `max_queue` first.
Runs that sequence NUMBER times per repeat on one model version counted by this process
alone (no shared table: what every worker did before max_queue bounded the server) and
through the server's shared in-flight table sized for 1, 2 and 4 workers (check_queue sums
one cell per row), and prints the median and the best of REPEATS repeats (the best is the
steadier figure on a busy machine):

    PYTHONPATH=src .venv/bin/python benchmarks/queue_count.py [--number 200000] [--repeats 15]

With PYTHONPATH at the src/ of a modelport from before the shared table (no
`modelport.serving.in_flight`), only the first line is printed: what that code costs.
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from datetime import UTC, datetime
from typing import Any

from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.runtimes.python import PythonRuntime
from modelport.serving.batching import BatchPolicy
from modelport.serving.catalog import Batched, LoadedModel
from modelport.serving.executor import Executor
from modelport.serving.limits import check_queue

try:
    from modelport.serving.in_flight import InFlightTable
except ImportError:  # a modelport from before the table
    InFlightTable = None  # type: ignore[assignment,misc]

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))


class _Echo:
    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": inputs["x"]}


def _model(counts: Any) -> LoadedModel:
    version = ModelVersion(
        name="m",
        version=1,
        digest="0" * 64,
        size=1,
        format="python",
        signature=SIGNATURE,
        created_at=datetime.now(UTC),
        created_by="benchmark",
        source="echo",
        pickle=True,
        trusted_pickle=True,
    )
    shared = {} if counts is None else {"counts": counts}
    dispatch = Batched(Executor(1), BatchPolicy(1), **shared)
    return LoadedModel(version, PythonRuntime(_Echo(), SIGNATURE), None, dispatch)


def _ns(model: LoadedModel, number: int, repeats: int) -> tuple[float, float]:
    """Nanoseconds per enter + check_queue + leave: the median and the best repeat."""

    def one() -> None:
        check_queue(model)
        model.enter()
        model.leave()

    runs = [run / number * 1e9 for run in timeit.repeat(one, number=number, repeat=repeats)]
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cases: list[tuple[str, Any]] = [("this process alone (no table)", None)]
    for workers in (1, 2, 4) if InFlightTable is not None else ():
        table = InFlightTable.for_workers(workers)
        table.claim()
        cases.append((f"shared table, {workers} worker(s) ({table.rows} rows)", table))
    for label, counts in cases:
        median, best = _ns(_model(counts), args.number, args.repeats)
        print(f"{label:40s} median {median:5.0f} ns, best {best:5.0f} ns")


if __name__ == "__main__":
    main()
