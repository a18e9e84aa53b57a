"""DataPlane over a real registry, without HTTP: validation, provenance, loading, the index."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle
import numpy as np
import pytest

from modelport.errors import (
    InternalError,
    InvalidInput,
    NotFound,
    NotReady,
    Unsupported,
    UntrustedArtifact,
)
from modelport.intake.push import push_artifact
from modelport.protocol.metadata import IndexEntry
from modelport.protocol.signature import Signature, TensorSpec
from modelport.protocol.types import InferRequest, RequestedOutput, Tensor
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle

T = TypeVar("T")

SIGNATURE = Signature(
    (TensorSpec("x", "FP32", (-1, 3)), TensorSpec("scale", "INT32", (-1,))),
    (TensorSpec("total", "FP64", (-1,)), TensorSpec("sign", "BYTES", (-1,))),
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def write_model(path: Path, offset: float) -> Path:
    """A python model: total = sum(x) * scale + offset; refuses NaN like many real models."""

    class Summer:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            x = inputs["x"]
            if np.isnan(x).any():
                raise ValueError("Input contains NaN")
            total = x.sum(axis=1) * inputs["scale"] + offset
            return {"total": total, "sign": [b"+" if t >= 0 else b"-" for t in total]}

    path.write_bytes(cloudpickle.dumps(Summer()))
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """`summer` versions 1 (offset 0) and 2 (offset 100), and `other` version 1."""
    root = tmp_path_factory.mktemp("dataplane")
    store = Registry.open(root / "registry")
    for name, offset in (("summer", 0.0), ("summer", 100.0), ("other", 1.0)):
        push_artifact(
            store,
            write_model(root / f"{name}-{offset}.cloudpickle", offset),
            name=name,
            format="python",
            signature=SIGNATURE,
            trust_pickle=True,
            created_by="tests",
        )
    yield store
    store.close()


@pytest.fixture
def dataplane(registry: Registry) -> Iterator[DataPlane]:
    executor = Executor(threads=2)
    yield DataPlane(Lifecycle(registry, Catalog(), executor))
    executor.shutdown()


def request(
    rows: int = 2,
    *,
    x: Tensor | None = None,
    outputs: list[str] | None = None,
    id: str | None = None,
) -> InferRequest:
    data = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    tensors = [
        x if x is not None else Tensor("x", "FP32", (rows, 3), data),
        Tensor("scale", "INT32", (rows,), np.full(rows, 2, dtype=np.int32)),
    ]
    wanted = None if outputs is None else [RequestedOutput(n) for n in outputs]
    return InferRequest(tensors, id=id, outputs=wanted)


def test_ready_after_start_up_loading(dataplane: DataPlane) -> None:
    assert dataplane.live()
    assert not dataplane.ready()
    dataplane.lifecycle.preload()
    assert dataplane.ready()
    index = run(dataplane.repository_index())
    assert index == [
        IndexEntry("other", "1", "READY", ""),
        IndexEntry("summer", "2", "READY", ""),
    ]
    assert dataplane.server_metadata().extensions == ["binary_tensor_data", "model_repository"]


def test_preload_with_a_selection(dataplane: DataPlane) -> None:
    dataplane.lifecycle.preload(["summer:1", "nope", "other:7"])
    assert dataplane.ready()  # failures are logged, not fatal
    assert [(e.name, e.version, e.state) for e in run(dataplane.repository_index())] == [
        ("other", "1", "UNAVAILABLE"),
        ("summer", "1", "READY"),
    ]


def test_infer_and_provenance(dataplane: DataPlane, registry: Registry) -> None:
    run(dataplane.load("summer"))
    response = run(dataplane.infer("summer", None, request(id="abc"), "req-1"))
    v2 = registry.get("summer", 2)
    assert response.model_name == "summer"
    assert response.model_version == "2"
    assert response.id == "abc"
    assert response.parameters == {"modelport.sha256": v2.digest, "modelport.request_id": "req-1"}
    by_name = {t.name: t for t in response.outputs}
    assert list(by_name) == ["total", "sign"]
    assert by_name["total"].datatype == "FP64"
    assert by_name["total"].shape == (2,)
    assert by_name["total"].data.dtype == np.float64
    assert by_name["total"].data.tolist() == [106.0, 124.0]
    assert by_name["sign"].data.tolist() == [b"+", b"+"]


def test_generated_id_is_the_request_id(dataplane: DataPlane) -> None:
    run(dataplane.load("summer"))
    response = run(dataplane.infer("summer", "2", request(), "generated-7"))
    assert response.id == "generated-7"
    assert response.parameters["modelport.request_id"] == "generated-7"


def test_requested_outputs_in_the_order_asked(dataplane: DataPlane) -> None:
    run(dataplane.load("summer"))
    response = run(dataplane.infer("summer", None, request(outputs=["sign"]), "r"))
    assert [t.name for t in response.outputs] == ["sign"]


def test_several_versions(dataplane: DataPlane, registry: Registry) -> None:
    run(dataplane.load("summer", "1"))
    assert run(dataplane.infer("summer", None, request(), "r")).model_version == "1"
    run(dataplane.load("summer", "2"))
    newest = run(dataplane.infer("summer", None, request(), "r"))
    pinned = run(dataplane.infer("summer", "1", request(), "r"))
    assert newest.model_version == "2"
    assert pinned.model_version == "1"
    assert pinned.parameters["modelport.sha256"] == registry.get("summer", 1).digest
    assert pinned.outputs[0].data.tolist() == [6.0, 24.0]
    metadata = run(dataplane.model_metadata("summer", None))
    assert metadata.versions == ["1", "2"]
    assert metadata.parameters["modelport.version"] == "2"
    assert [asdict(t) for t in metadata.inputs] == [s.to_dict() for s in SIGNATURE.inputs]
    assert metadata.platform == "modelport_python"

    assert run(dataplane.unload("summer", "2")) == [2]
    assert run(dataplane.infer("summer", None, request(), "r")).model_version == "1"
    with pytest.raises(NotFound, match="not loaded"):
        run(dataplane.unload("summer", "2"))
    assert run(dataplane.unload("summer")) == [1]
    assert run(dataplane.unload("summer")) == []


def test_loading_twice_returns_the_loaded_model(dataplane: DataPlane) -> None:
    first = run(dataplane.load("other"))
    assert run(dataplane.load("other", "1")) is first


def test_not_loaded_says_how_to_load(dataplane: DataPlane) -> None:
    dataplane.lifecycle.preload(["other"])
    with pytest.raises(NotReady) as caught:
        run(dataplane.infer("summer", None, request(), "r"))
    message = caught.value.message
    assert "'summer' version 2 is registered but not loaded" in message
    assert "POST /v2/repository/models/summer/load" in message
    with pytest.raises(NotReady, match="version 1"):
        run(dataplane.infer("summer", "1", request(), "r"))
    assert run(dataplane.model_ready("summer", None)) is False
    with pytest.raises(NotReady):
        run(dataplane.model_metadata("summer", None))


def test_an_unloaded_version_is_not_found_until_loaded_again(dataplane: DataPlane) -> None:
    dataplane.lifecycle.preload(["summer"])
    assert run(dataplane.unload("summer")) == [2]
    advice = (
        "model 'summer' version 2 was unloaded; load it with POST /v2/repository/models/summer/load"
    )
    for version in (None, "2", "latest"):
        with pytest.raises(NotFound) as caught:
            run(dataplane.infer("summer", version, request(), "r"))
        assert caught.value.message == advice
        with pytest.raises(NotFound, match="was unloaded"):
            run(dataplane.model_metadata("summer", version))
        with pytest.raises(NotFound, match="was unloaded"):
            run(dataplane.drift("summer", version))
    assert run(dataplane.model_ready("summer", None)) is False
    (entry,) = (e for e in run(dataplane.repository_index()) if e.name == "summer")
    assert (entry.version, entry.state, entry.reason) == ("2", "UNAVAILABLE", advice)
    # Never loaded, rather than unloaded: still "registered but not loaded".
    with pytest.raises(NotReady, match="version 1 is registered but not loaded"):
        run(dataplane.infer("summer", "1", request(), "r"))
    run(dataplane.load("summer"))
    assert run(dataplane.infer("summer", None, request(), "r")).model_version == "2"
    assert run(dataplane.model_ready("summer", None)) is True


def test_a_model_still_loading_is_not_ready(dataplane: DataPlane) -> None:
    # Before start-up loading has finished, what is not loaded yet is on its way.
    with pytest.raises(NotReady, match="'summer' version 2 is loading; retry shortly"):
        run(dataplane.infer("summer", None, request(), "r"))
    with pytest.raises(NotReady, match="is loading"):
        run(dataplane.model_metadata("summer", "1"))


@pytest.mark.parametrize(
    ("name", "version", "word"),
    [
        ("nope", None, "'nope'"),
        ("nope", "1", "'nope'"),
        ("other", "9", "no version 9"),
        ("other", "0", "no version '0'"),
        ("other", "x", "no version or alias 'x'"),
        ("other", "²", "no version or alias '²'"),
    ],
)
def test_unknown_model_or_version_is_not_found(
    dataplane: DataPlane, name: str, version: str | None, word: str
) -> None:
    run(dataplane.load("other"))
    with pytest.raises(NotFound, match=word):
        run(dataplane.infer(name, version, request(), "r"))
    with pytest.raises(NotFound, match=word):
        run(dataplane.model_ready(name, version))
    with pytest.raises(NotFound, match=word):
        run(dataplane.model_metadata(name, version))
    with pytest.raises(NotFound, match=word):
        run(dataplane.load(name, version))


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (Tensor("y", "FP32", (2, 3), np.zeros((2, 3), np.float32)), ("'y'", "x FP32 [-1, 3]")),
        (Tensor("x", "FP64", (2, 3), np.zeros((2, 3))), ("FP64", "FP32")),
        (Tensor("x", "FP32", (2, 4), np.zeros((2, 4), np.float32)), ("[2, 4]", "[-1, 3]")),
        (Tensor("x", "FP32", (6,), np.zeros(6, np.float32)), ("[6]", "[-1, 3]")),
    ],
)
def test_inputs_are_checked_against_the_signature(
    dataplane: DataPlane, bad: Tensor, words: tuple[str, ...]
) -> None:
    run(dataplane.load("other"))
    with pytest.raises(InvalidInput) as caught:
        run(dataplane.infer("other", None, request(x=bad), "r"))
    for word in words:
        assert word in caught.value.message


def test_missing_duplicate_and_unknown_output(dataplane: DataPlane) -> None:
    run(dataplane.load("other"))
    only_x = InferRequest([Tensor("x", "FP32", (1, 3), np.zeros((1, 3), np.float32))])
    with pytest.raises(InvalidInput, match=r"missing input.*'scale'"):
        run(dataplane.infer("other", None, only_x, "r"))
    twice = request()
    twice.inputs.append(twice.inputs[0])
    with pytest.raises(InvalidInput, match="more than once"):
        run(dataplane.infer("other", None, twice, "r"))
    with pytest.raises(InvalidInput, match=r"'score'.*sign, total"):
        run(dataplane.infer("other", None, request(outputs=["score"]), "r"))


def test_a_model_refusing_values_is_invalid_input(dataplane: DataPlane) -> None:
    run(dataplane.load("other"))
    nan = Tensor("x", "FP32", (2, 3), np.full((2, 3), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInput, match="rejected the input: Input contains NaN"):
        run(dataplane.infer("other", None, request(x=nan), "r"))


def test_tampered_artifact_never_loads(tmp_path: Path) -> None:
    store = Registry.open(tmp_path / "registry")
    executor = Executor(threads=1)
    try:
        mv: ModelVersion = push_artifact(
            store,
            write_model(tmp_path / "m.cloudpickle", 0.0),
            name="m",
            format="python",
            signature=SIGNATURE,
            trust_pickle=True,
            created_by="tests",
        )
        blob = store.artifact_path(mv)
        blob.chmod(blob.stat().st_mode | stat.S_IWUSR)
        blob.write_bytes(blob.read_bytes() + b"\n")
        dataplane = DataPlane(Lifecycle(store, Catalog(), executor))
        dataplane.lifecycle.preload()
        assert dataplane.ready()
        (entry,) = run(dataplane.repository_index())
        assert entry.state == "UNAVAILABLE"
        assert mv.digest in entry.reason
        assert run(dataplane.repository_index(ready_only=True)) == []
        with pytest.raises(UntrustedArtifact, match=mv.digest):
            run(dataplane.load("m"))
        # A failed load is this server's condition, not the client's mistake: 503.
        with pytest.raises(NotReady, match=r"failed to load on this server \(artifact sha256"):
            run(dataplane.infer("m", None, request(), "r"))
        with pytest.raises(NotReady, match="push a fixed version"):
            run(dataplane.model_metadata("m", "1"))
        assert str(tmp_path) not in entry.reason
    finally:
        executor.shutdown()
        store.close()


def test_close_unloads_everything(dataplane: DataPlane) -> None:
    dataplane.lifecycle.preload()
    run(dataplane.lifecycle.close())
    assert run(dataplane.repository_index(ready_only=True)) == []


def test_a_runtime_that_raises_anything_on_load_leaves_the_server_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from flaky_runtime_example import FlakyRuntime

    store = Registry.open(tmp_path / "registry")
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x01\x02")
    fmt = "flaky_runtime_example:FlakyRuntime"
    for name in ("flaky", "flaky-too"):
        push_artifact(store, artifact, name=name, format=fmt, created_by="tests")
        artifact.write_bytes(b"\x03\x04")
    monkeypatch.setattr(FlakyRuntime, "broken", True)
    executor = Executor(threads=1)
    plane = DataPlane(Lifecycle(store, Catalog(), executor))
    try:
        with pytest.raises(InternalError, match="RuntimeError") as caught:
            run(plane.load("flaky"))
        assert "caught fire" not in caught.value.message  # details stay in the server log
        plane.lifecycle.preload()  # start-up goes on past the failure and becomes ready
        assert plane.ready()
        index = {e.name: e for e in run(plane.repository_index())}
        assert index["flaky"].state == "UNAVAILABLE"
        assert "RuntimeError" in index["flaky"].reason
        assert index["flaky-too"].state == "UNAVAILABLE"  # loading went on past the first
    finally:
        executor.shutdown()
        store.close()


class Reporter:
    """Reports that answer from what they were told, and remember what they were asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, object]] = []

    def metrics_page(self, in_flight: Any) -> bytes | None:
        self.asked.append(("metrics", dict(in_flight)))
        return b"# metrics\n"

    def drift(self, version: ModelVersion) -> dict[str, Any]:
        self.asked.append(("drift", (version.name, version.version)))
        return {"features": {}}

    async def feedback(self, model: str, body: Any) -> dict[str, Any]:
        self.asked.append(("feedback", (model, dict(body))))
        return {"rows": 1}


def test_reports_are_asked_for_the_version_that_serves(registry: Registry) -> None:
    executor = Executor(threads=1)
    lifecycle = Lifecycle(registry, Catalog(), executor)
    lifecycle.preload(["summer:1"])
    reports = Reporter()
    plane = DataPlane(lifecycle, reports=reports)
    try:
        assert plane.metrics_page() == b"# metrics\n"
        assert run(plane.drift("summer", None)) == {"features": {}}
        model = run(plane.resolve("summer", None))
        # The scrape is told the requests in flight now, per loaded version.
        model.enter()
        plane.metrics_page()
        model.leave()
        assert run(plane.feedback(model, {"labels": [1]})) == {"rows": 1}
        with pytest.raises(NotReady):
            run(plane.drift("other", None))  # registered, not loaded
    finally:
        executor.shutdown()
    assert reports.asked == [
        ("metrics", {("summer", 1): 0}),
        ("drift", ("summer", 1)),
        ("metrics", {("summer", 1): 1}),
        ("feedback", ("summer", {"labels": [1]})),
    ]


def test_without_reports_metrics_are_not_found_and_drift_unsupported(
    dataplane: DataPlane,
) -> None:
    dataplane.lifecycle.preload(["summer:1"])
    with pytest.raises(NotFound, match="--no-metrics"):
        dataplane.metrics_page()
    with pytest.raises(Unsupported, match="drift monitoring is off"):
        run(dataplane.drift("summer", None))
