"""Lifecycle over a real registry: start-up loading, following, warm-up, retiring versions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from modelport.intake.push import push_artifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import PRODUCTION, Registry
from modelport.serving.catalog import Catalog
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))


def push(registry: Registry, tmp_path: Path, factor: float, broken: bool = False) -> ModelVersion:
    """A version of `m` that multiplies by `factor`; a `broken` one fails every predict."""

    class Scaler:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            if broken:
                raise RuntimeError("the weights are garbage")
            return {"y": inputs["x"] * factor}

    path = tmp_path / f"m-{factor}.cloudpickle"
    path.write_bytes(cloudpickle.dumps(Scaler()))
    return push_artifact(
        registry,
        path,
        name="m",
        format="python",
        signature=SIGNATURE,
        trust_pickle=True,
        created_by="tests",
    )


@pytest.fixture
def catalog() -> Catalog:
    return Catalog()


@pytest.fixture
def lifecycle(registry: Registry, catalog: Catalog) -> Iterator[Lifecycle]:
    executor = Executor(threads=2)
    yield Lifecycle(registry, catalog, executor)
    executor.shutdown()


def served(catalog: Catalog) -> list[int]:
    return [model.number for model in catalog.versions("m")]


def events(registry: Registry, kind: str) -> list[tuple[int | None, str]]:
    """(version, actor) of each `kind` event in the history of `m`."""
    return [(e.to_version, e.actor) for e in registry.history("m") if e.kind == kind]


def test_preload_serves_the_newest_and_every_alias_target(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    for factor in (1.0, 2.0, 3.0):
        push(registry, tmp_path, factor)
    registry.set_alias("m", PRODUCTION, 1, actor="tests")
    assert not lifecycle.ready
    lifecycle.preload()
    assert lifecycle.ready
    assert served(catalog) == [1, 3]
    default = catalog.get("m")
    assert default is not None
    assert default.number == 1  # production wins over the newest
    assert events(registry, "load") == [(1, "server"), (3, "server")]


def test_preload_pins_a_selection_and_remembers_what_failed(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    for factor in (1.0, 2.0):
        push(registry, tmp_path, factor)
    lifecycle.preload(["m:1", "nope"])
    assert lifecycle.ready  # a failure is not fatal
    assert served(catalog) == [1]
    assert "'nope'" in lifecycle.failures["nope"]


def test_sync_loads_a_new_version_and_retires_the_old_once_idle(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    push(registry, tmp_path, 1.0)
    lifecycle.preload()
    old = catalog.get("m")
    assert old is not None
    old.enter()  # a request still in flight on version 1
    push(registry, tmp_path, 2.0)

    async def main() -> None:
        await lifecycle.sync()
        assert served(catalog) == [2]  # no new request reaches version 1
        retired = asyncio.ensure_future(lifecycle.retired())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not retired.done()  # it waits for the request, whatever the time
        assert events(registry, "unload") == []
        old.leave()
        await retired

    asyncio.run(main())
    assert events(registry, "unload") == [(1, "server")]
    assert events(registry, "load") == [(1, "server"), (2, "server")]


def test_a_version_that_fails_its_warm_up_never_serves_and_is_not_retried(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    push(registry, tmp_path, 1.0)
    lifecycle.preload()
    push(registry, tmp_path, 2.0, broken=True)
    asyncio.run(lifecycle.sync())
    assert served(catalog) == [1]  # what served before keeps serving
    assert "warm-up" in lifecycle.failures["m"]
    asyncio.run(lifecycle.sync())
    assert events(registry, "load_failed") == [(2, "server")]


def test_load_returns_what_is_loaded_and_records_who_asked(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    mv = push(registry, tmp_path, 1.0)
    first = asyncio.run(lifecycle.load(mv, "alice"))
    assert asyncio.run(lifecycle.load(mv, "bob")) is first
    assert catalog.get("m") is first
    assert events(registry, "load") == [(1, "alice")]
    got = asyncio.run(first.batcher.predict({"x": np.ones(2, np.float32)}, ("y",)))
    assert got["y"].tolist() == [1.0, 1.0]


def test_unload_stops_serving_and_records_who_asked(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    push(registry, tmp_path, 1.0)
    lifecycle.preload()
    asyncio.run(lifecycle.unload(catalog.versions("m"), "carol"))
    assert served(catalog) == []
    assert events(registry, "unload") == [(1, "carol")]


def test_close_unloads_everything(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    push(registry, tmp_path, 1.0)
    lifecycle.preload()
    asyncio.run(lifecycle.close())
    assert list(catalog) == []


def test_an_unloaded_version_stays_unloaded_while_following_until_loaded(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    mv = push(registry, tmp_path, 1.0)
    lifecycle.preload()
    asyncio.run(lifecycle.unload(catalog.versions("m"), "carol"))
    assert lifecycle.unloaded("m", 1)
    asyncio.run(lifecycle.sync())  # the unload changed the registry's counter
    assert served(catalog) == []  # the follower does not undo what an operator did
    push(registry, tmp_path, 2.0)
    asyncio.run(lifecycle.sync())
    assert served(catalog) == [2]  # a version pushed later is served as usual
    asyncio.run(lifecycle.load(mv, "dave"))
    assert not lifecycle.unloaded("m", 1)
    assert served(catalog) == [1, 2]


def test_a_version_loaded_by_name_keeps_serving_while_following_until_unloaded(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    old = push(registry, tmp_path, 1.0)
    push(registry, tmp_path, 2.0)
    lifecycle.preload()
    assert served(catalog) == [2]
    asyncio.run(lifecycle.load(old, "dave"))
    asyncio.run(lifecycle.sync())  # the load changed the registry's counter
    assert served(catalog) == [1, 2]  # the follower does not undo what an operator asked
    push(registry, tmp_path, 3.0)
    asyncio.run(lifecycle.sync())
    assert served(catalog) == [1, 3]  # the newest moves on; the asked-for version stays
    asyncio.run(lifecycle.unload(catalog.versions("m")[:1], "carol"))
    asyncio.run(lifecycle.sync())
    assert served(catalog) == [3]


def test_what_is_loading_and_what_failed(
    registry: Registry, catalog: Catalog, lifecycle: Lifecycle, tmp_path: Path
) -> None:
    push(registry, tmp_path, 1.0)
    assert lifecycle.loading("m", 1)  # start-up loading has not finished
    lifecycle.preload()
    assert not lifecycle.loading("m", 1)
    assert lifecycle.failure("m", 1) is None
    broken = push(registry, tmp_path, 2.0, broken=True)
    asyncio.run(lifecycle.sync())
    failure = lifecycle.failure("m", 2)
    assert failure is not None
    assert "warm-up" in failure
    seen: list[bool] = []

    async def load() -> None:
        loading = asyncio.ensure_future(lifecycle.load(broken, "erin"))
        while not lifecycle.loading("m", 2) and not loading.done():
            await asyncio.sleep(0)
        seen.append(lifecycle.loading("m", 2))
        await loading

    asyncio.run(load())  # without a warm-up, the broken version loads
    assert seen == [True]
    assert lifecycle.failure("m", 2) is None
    assert not lifecycle.loading("m", 2)
