"""Catalog: loaded versions by name; the newest loaded version answers by default."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from modelport.errors import NotFound
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import MAX_VERSION, ModelVersion, version_number
from modelport.runtimes.python import PythonRuntime
from modelport.serving.catalog import DIRECT, Catalog, LoadedModel

SIGNATURE = Signature(
    (TensorSpec("x", "FP32", (-1, 2)),),
    (TensorSpec("y", "FP64", (-1,)), TensorSpec("label", "BYTES", (-1,))),
)


class Doubler:
    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        total = inputs["x"].sum(axis=1) * 2
        return {"y": total, "label": [b"even" if int(t) % 2 == 0 else b"odd" for t in total]}


def loaded(name: str, number: int) -> LoadedModel:
    mv = ModelVersion(
        name=name,
        version=number,
        digest=f"{number:064x}",
        size=1,
        format="python",
        signature=SIGNATURE,
        created_at=datetime.now(UTC),
        created_by="tests",
        source="doubler.cloudpickle",
        pickle=True,
        trusted_pickle=True,
    )
    return LoadedModel(mv, PythonRuntime(Doubler(), SIGNATURE), None, DIRECT)


def test_loaded_model_precomputes_the_hot_path() -> None:
    model = loaded("m", 3)
    assert model.name == "m"
    assert model.number == 3
    assert model.output_names == ("y", "label")
    assert model.output_types["y"] == ("FP64", np.dtype("<f8"))
    assert model.output_types["label"][0] == "BYTES"
    assert model.provenance == {"modelport.sha256": f"{3:064x}"}
    out = model.runtime.predict({"x": np.ones((2, 2), dtype=np.float32)}, ["y", "label"])
    assert out["y"].tolist() == [4.0, 4.0]


def test_default_is_the_newest_loaded_version() -> None:
    catalog = Catalog()
    assert catalog.get("m") is None
    catalog.add(loaded("m", 2))
    assert catalog.get("m").number == 2  # type: ignore[union-attr]
    # Loading an older version later does not change the default.
    catalog.add(loaded("m", 1))
    assert catalog.get("m").number == 2  # type: ignore[union-attr]
    catalog.add(loaded("m", 5))
    assert catalog.get("m").number == 5  # type: ignore[union-attr]
    assert [m.number for m in catalog.versions("m")] == [1, 2, 5]
    assert catalog.get("m", "1").number == 1  # type: ignore[union-attr]
    assert catalog.get("m", "3") is None
    assert catalog.get("other") is None
    assert catalog.get("other", "1") is None


def test_remove_moves_the_default_back() -> None:
    catalog = Catalog()
    for number in (1, 2, 3):
        catalog.add(loaded("m", number))
    catalog.add(loaded("n", 1))
    removed = catalog.remove("m", 3)
    assert removed.number == 3
    assert catalog.get("m").number == 2  # type: ignore[union-attr]
    catalog.remove("m", 1)
    assert catalog.get("m").number == 2  # type: ignore[union-attr]
    catalog.remove("m", 2)
    assert catalog.get("m") is None
    assert catalog.versions("m") == []
    assert [(m.name, m.number) for m in catalog] == [("n", 1)]


def test_remove_what_is_not_loaded_is_not_found() -> None:
    catalog = Catalog()
    catalog.add(loaded("m", 1))
    with pytest.raises(NotFound, match="version 2 of model 'm'"):
        catalog.remove("m", 2)
    with pytest.raises(NotFound, match="'x'"):
        catalog.remove("x", 1)
    assert catalog.get("m") is not None


def test_replacing_a_version_keeps_one_entry() -> None:
    catalog = Catalog()
    first, second = loaded("m", 1), loaded("m", 1)
    catalog.add(first)
    catalog.add(second)
    assert catalog.versions("m") == [second]
    assert catalog.get("m") is second


def test_iteration_is_sorted_by_name_then_version() -> None:
    catalog = Catalog()
    for name, number in [("b", 2), ("a", 3), ("b", 1), ("a", 1)]:
        catalog.add(loaded(name, number))
    assert [(m.name, m.number) for m in catalog] == [("a", 1), ("a", 3), ("b", 1), ("b", 2)]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1", 1),
        ("007", 7),
        (str(MAX_VERSION), MAX_VERSION),
        (str(MAX_VERSION + 1), None),
        ("0", None),
        ("-1", None),
        ("", None),
        ("1.0", None),
        ("newest", None),
        (" 1", None),
        ("²", None),
        ("١", None),
        ("9" * 40, None),
    ],
)
def test_version_number(text: str, number: int | None) -> None:
    assert version_number(text) == number
    catalog = Catalog()
    catalog.add(loaded("m", 1))
    expected = catalog.get("m") if number == 1 else None
    assert catalog.get("m", text) is expected


def test_routes_follow_aliases_and_production_is_the_default() -> None:
    catalog = Catalog()
    for number in (1, 2, 3):
        catalog.add(loaded("m", number))
    newest = catalog.get("m", "3")
    assert catalog.get("m") is newest
    assert catalog.get("m", "latest") is newest
    catalog.set_aliases("m", {"production": 2, "canary": 3})
    assert catalog.get("m") is catalog.get("m", "2")
    assert catalog.get("m", "production") is catalog.get("m", "2")
    assert catalog.get("m", "canary") is newest
    assert catalog.get("m", "staging") is None
    assert catalog.aliases_of(newest) == ["canary"]
    # production naming a version that is not loaded: what served keeps serving.
    catalog.set_aliases("m", {"production": 9})
    assert catalog.get("m") is catalog.get("m", "2")
    catalog.remove("m", 2)
    assert catalog.get("m") is newest  # ... unless it is gone: then the newest


def test_idle_returns_when_the_last_request_leaves() -> None:
    model = loaded("m", 1)

    async def main() -> None:
        await model.idle()  # nothing in flight: at once
        model.enter()
        model.enter()
        waiting = asyncio.ensure_future(model.idle())
        await asyncio.sleep(0)
        model.leave()
        await asyncio.sleep(0)
        assert not waiting.done()  # one request is still in flight
        model.leave()
        await waiting
        assert model.in_flight == 0

    asyncio.run(main())


def test_direct_dispatch_still_has_a_batcher_that_calls_in_place() -> None:
    model = loaded("m", 1)
    got = asyncio.run(model.batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"]))
    assert got["y"].tolist() == [4.0]
    assert not model.batcher.policy.enabled
