"""Fixtures shared by the registry tests: a fresh registry and a way to push versions to it."""

from __future__ import annotations

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
        options: dict[str, Any] = {
            "name": name,
            "format": "onnx",
            "signature": IRIS_SIGNATURE,
            "metadata": {},
            "pickle": False,
            "trusted_pickle": False,
            "created_by": "alice",
            "source": artifact.name,
        }
        options.update(extra)
        return registry.push(artifact, **options)

    return push
