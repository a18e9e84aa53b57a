"""Fixtures shared by the registry tests: a fresh registry, pushing to it, concurrent pushers."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry

Pusher = Callable[..., ModelVersion]

IRIS_SIGNATURE = Signature(
    inputs=(TensorSpec("input-0", "FP32", (-1, 4)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)),),
)


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[Registry]:
    """A new, empty registry in a temporary directory."""
    with Registry.open(tmp_path / "fresh-registry") as opened:
        yield opened


def push_file(registry: Registry, artifact: Path, **overrides: Any) -> ModelVersion:
    """Push `artifact` as model iris (sklearn, IRIS_SIGNATURE, by alice) unless overridden."""
    options: dict[str, Any] = {
        "name": "iris",
        "format": "sklearn",
        "signature": IRIS_SIGNATURE,
        "metadata": {},
        "pickle": False,
        "trusted_pickle": False,
        "created_by": "alice",
        "source": artifact.name,
    }
    options.update(overrides)
    return registry.push(artifact, **options)


@pytest.fixture
def push_version(tmp_path: Path) -> Pusher:
    """push_version(registry, name, data=None, **push options) -> the new ModelVersion.

    Each call without `data` pushes distinct bytes, so every call makes a new version.
    """
    counter = iter(range(1_000_000))

    def push(registry: Registry, name: str = "iris", data: bytes | None = None, **extra: Any):
        n = next(counter)
        artifact = tmp_path / f"artifact-{n}.onnx"
        artifact.write_bytes(data if data is not None else f"model bytes {n}".encode())
        return push_file(registry, artifact, **{"name": name, "format": "onnx", **extra})

    return push


# Runs in spawned processes through exec(): test modules are not importable by name there.
_PUSHER = """
from pathlib import Path

from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.store import Registry

signature = Signature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1,)),))
work = Path(work_dir)
barrier.wait(timeout=60)  # open and push at the same moment as the other workers
registry = Registry.open(location)
try:
    for j in range(pushes):
        for model in ("shared", f"solo-{worker}"):
            artifact = work / f"{model}-{worker}-{j}.bin"
            artifact.write_bytes(f"{model} {worker} {j}".encode())
            registry.push(
                artifact, name=model, format="custom", signature=signature,
                metadata={"worker": worker, "j": j}, pickle=False, trusted_pickle=False,
                created_by=f"worker-{worker}", source=artifact.name,
            )
finally:
    registry.close()
"""


def run_at_once(script: str, namespaces: list[dict[str, Any]]) -> None:
    """Run `script` in one spawned process per namespace (its globals); all exit 0.

    Each namespace also gets `barrier`, which the script waits on to start with the others.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(namespaces))
    processes = [
        context.Process(target=exec, args=(script, {**namespace, "barrier": barrier}))
        for namespace in namespaces
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=100)
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


def push_concurrently(location: str, work: Path, workers: int, pushes: int) -> None:
    """From `workers` processes at once, push `pushes` versions each of `shared` and `solo-N`."""
    namespaces = []
    for worker in range(workers):
        work_dir = work / f"work-{worker}"
        work_dir.mkdir()
        namespaces.append(
            {"location": location, "work_dir": str(work_dir), "worker": worker, "pushes": pushes}
        )
    run_at_once(_PUSHER, namespaces)


def check_concurrent_pushes(registry: Registry, workers: int, pushes: int) -> None:
    """Assert that every push of push_concurrently got its own version, in push order."""
    shared = registry.versions("shared")
    assert [mv.version for mv in shared] == list(range(1, workers * pushes + 1))
    assert len({mv.digest for mv in shared}) == len(shared)
    assert sorted((mv.metadata["worker"], mv.metadata["j"]) for mv in shared) == [
        (w, j) for w in range(workers) for j in range(pushes)
    ]
    for worker in range(workers):
        # Each worker pushed in order, so its versions rise with its push number.
        own = [mv.metadata["j"] for mv in shared if mv.metadata["worker"] == worker]
        assert own == list(range(pushes))
        solo = registry.versions(f"solo-{worker}")
        assert [mv.version for mv in solo] == list(range(1, pushes + 1))
        assert [mv.source for mv in solo] == [
            f"solo-{worker}-{worker}-{j}.bin" for j in range(pushes)
        ]
    assert registry.models() == ["shared", *[f"solo-{w}" for w in range(workers)]]
    for mv in registry.latest():
        registry.verify(mv)
    for mv in shared:
        data = f"shared {mv.metadata['worker']} {mv.metadata['j']}".encode()
        assert registry.artifact_path(mv).read_bytes() == data
