"""Fixtures shared by the transport tests: a small real registry and a dataplane over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from modelport.demo import build_iris
from modelport.errors import Unauthenticated
from modelport.intake.push import push_artifact
from modelport.registry.store import Registry
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.guard import Action
from modelport.serving.lifecycle import Lifecycle
from modelport.serving.reports import Reports
from modelport.serving.telemetry import NoTelemetry, Telemetry


class DataPlaneFactory(Protocol):
    """What `make_dataplane` gives: call it (optionally with a Telemetry and Reports)."""

    def __call__(
        self, telemetry: Telemetry | None = None, reports: Reports | None = None
    ) -> DataPlane: ...


@pytest.fixture(scope="session")
def iris_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding iris version 1 (the demo's model); treat it as read-only."""
    root = tmp_path_factory.mktemp("transports")
    location = root / "registry"
    with Registry.open(location) as registry:
        path, fmt, meta = build_iris(root)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by="tests")
    return location


@pytest.fixture
def make_dataplane(iris_registry: Path) -> Iterator[DataPlaneFactory]:
    """Builds dataplanes over the iris registry, each with its models loaded."""
    opened: list[tuple[Registry, Executor]] = []

    def make(telemetry: Telemetry | None = None, reports: Reports | None = None) -> DataPlane:
        registry = Registry.open(iris_registry)
        executor = Executor(threads=2)
        opened.append((registry, executor))
        lifecycle = Lifecycle(registry, Catalog(), executor, telemetry=telemetry or NoTelemetry())
        lifecycle.preload()
        return DataPlane(lifecycle, reports=reports)

    yield make
    for registry, executor in opened:
        executor.shutdown()
        registry.close()


class KeyGuard:
    """Lets through requests with x-api-key "k" (as "alice"), and records what was asked."""

    def __init__(self) -> None:
        self.actions: list[Action] = []

    def check(
        self, action: Action, authorization: str | None, api_key: str | None, address: str
    ) -> str:
        self.actions.append(action)
        if api_key != "k":
            raise Unauthenticated("send an API key")
        return "alice"
