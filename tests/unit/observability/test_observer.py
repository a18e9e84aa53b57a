"""The observer: what one answered request turns into (counts, access records, inference-log
records, drift, feedback scores), on real metrics, access log and SQLite inference log."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.config import (
    InferenceLogSettings,
    LoggingSettings,
    MetricsSettings,
    ModelSettings,
    ModelsSettings,
    ServeSettings,
)
from modelport.errors import NotFound, Unsupported
from modelport.inference_log.location import LOG_FILE, open_store
from modelport.inference_log.record import REDACTED, StoredRecord
from modelport.model_policy import model_policy
from modelport.monitoring.reference_profile import build_profile
from modelport.observability.observer import Observer
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion
from modelport.serving.executor import Executor
from modelport.serving.telemetry import Answered, Call

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("label", "INT64", (-1,)),))


@pytest.fixture
def executor() -> Iterator[Executor]:
    pool = Executor(threads=1)
    yield pool
    pool.shutdown()


def serve_settings(
    tmp_path: Path,
    *,
    inference_log: str = "",
    metrics: bool = True,
    access_log: bool = True,
) -> ServeSettings:
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    return ServeSettings(
        registry=str(registry),
        logging=LoggingSettings(format="json", access_log=access_log),
        metrics=MetricsSettings(enabled=metrics),
        inference_log=InferenceLogSettings(location=inference_log),
    )


def observer(
    tmp_path: Path, executor: Executor, stream: io.StringIO | None = None, **settings: Any
) -> Observer:
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    built = Observer.from_settings(
        serve_settings(tmp_path, **settings), executor, metrics, stream or io.StringIO()
    )
    built.start()
    return built


def loaded(
    obs: Observer, mv: ModelVersion, seconds: float = 0.1, models: ModelsSettings | None = None
) -> None:
    """Tell the observer `mv` loaded, with the policy the lifecycle would resolve for it."""
    obs.loaded(mv, seconds, model_policy(models or ModelsSettings(), mv.name, mv.metadata))


def version(number: int = 1, **metadata: Any) -> ModelVersion:
    return ModelVersion(
        name="iris", version=number, digest=f"{number:064x}", size=1, format="python",
        signature=SIGNATURE, created_at=datetime.now(UTC), created_by="tests",
        source="iris.skops", pickle=False, trusted_pickle=False, metadata=metadata,
    )  # fmt: skip


def inference(request_id: str, *, number: int = 1, label: int = 1) -> Call:
    return Call(
        protocol="rest", request_id=request_id, caller="127.0.0.1", endpoint="infer",
        model="iris", version=number, digest=f"{number:064x}",
        inputs={"x": np.array([[1.0, 2.0]], dtype=np.float32)},
        outputs={"label": np.array([label])},
    )  # fmt: skip


def logged(tmp_path: Path) -> list[StoredRecord]:
    with open_store(str(tmp_path / "registry" / LOG_FILE)) as store:
        return store.read()


def page(obs: Observer) -> str:
    text = obs.metrics_page()
    assert text is not None
    return text.decode()


def test_an_answered_request_is_counted_and_access_logged(
    tmp_path: Path, executor: Executor
) -> None:
    stream = io.StringIO()
    obs = observer(tmp_path, executor, stream, inference_log="off")
    obs.finished(inference("r-1"), "200")
    obs.finished(Call(protocol="grpc", request_id="r-2", endpoint="health"), "OK")
    text = page(obs)
    obs.close()

    assert (
        'modelport_requests_total{model="iris",version="1",protocol="rest",endpoint="infer",'
        'code="200"} 1.0'
    ) in text
    assert (
        'modelport_requests_total{model="",version="",protocol="grpc",endpoint="health",'
        'code="OK"} 1.0'
    ) in text
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["request_id"], r["endpoint"], r["status"]) for r in records] == [
        ("r-1", "infer", "200"),
        ("r-2", "health", "OK"),
    ]


def test_inferences_go_to_the_inference_log_and_nothing_else_does(
    tmp_path: Path, executor: Executor
) -> None:
    obs = observer(tmp_path, executor)
    obs.finished(inference("r-1"), "200")
    obs.finished(Call(protocol="rest", request_id="r-2", endpoint="metadata", model="iris"), "200")
    obs.finished(Call(protocol="rest", request_id="r-3", endpoint="infer"), "404")
    obs.close()

    (record,) = logged(tmp_path)
    assert (record.request_id, record.model, record.version, record.status) == (
        "r-1", "iris", 1, "200",
    )  # fmt: skip
    assert record.inputs == {"x": [[1.0, 2.0]]}
    assert record.outputs == {"label": [1]}
    assert record.caller == "127.0.0.1"


def test_the_config_file_redacts_and_the_registry_samples(
    tmp_path: Path, executor: Executor
) -> None:
    models = ModelsSettings(overrides={"iris": ModelSettings(log_redact=("x",))})
    obs = observer(tmp_path, executor)
    loaded(obs, version(1), 0.25, models)
    loaded(obs, version(2, log_sample_rate="0"), 0.5, models)
    obs.finished(inference("r-1", number=1), "200")
    obs.finished(inference("r-2", number=2), "200")
    text = page(obs)
    obs.close()

    (record,) = logged(tmp_path)
    assert record.request_id == "r-1"
    assert record.inputs == {"x": REDACTED}
    assert record.outputs == {"label": [1]}
    assert 'modelport_model_load_seconds{model="iris",version="1"} 0.25' in text
    assert 'modelport_model_load_seconds{model="iris",version="2"} 0.5' in text


def test_batches_and_the_inference_log_backlog_become_gauges(
    tmp_path: Path, executor: Executor
) -> None:
    obs = observer(tmp_path, executor)
    obs.batch("iris", 1, 4, 2)
    text = page(obs)
    obs.close()
    assert 'modelport_queue_depth{model="iris",version="1"} 2.0' in text
    assert 'modelport_batch_size_count{model="iris",version="1"} 1' in text
    assert "modelport_inference_log_backlog 0.0" in text


def test_feedback_scores_the_logged_predictions(tmp_path: Path, executor: Executor) -> None:
    obs = observer(tmp_path, executor)
    loaded(obs, version(1))
    obs.finished(inference("r-1", label=1), "200")
    obs.finished(inference("r-2", label=0), "200")
    body = {"request_ids": ["r-1", "r-2", "unknown"], "labels": [1, 1, 0]}
    answer = asyncio.run(obs.feedback("iris", body))
    text = page(obs)
    obs.close()

    assert answer == {
        "model": "iris",
        "received": 3,
        "matched": 2,
        "versions": {"1": {"kind": "classification", "rows": 2, "accuracy": 0.5}},
    }
    assert 'modelport_live_accuracy{model="iris",version="1"} 0.5' in text
    assert 'modelport_feedback_rows{model="iris",version="1"} 2.0' in text


def test_inputs_are_watched_for_drift_against_the_reference_profile(
    tmp_path: Path, executor: Executor
) -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0.0, 1.0, (2000, 2))
    profile = build_profile({"a": reference[:, 0], "b": reference[:, 1]}, SIGNATURE.inputs)
    watched = dataclasses.replace(version(1), reference_profile=profile)
    obs = observer(tmp_path, executor, inference_log="off")
    loaded(obs, watched)
    shifted = rng.normal(5.0, 1.0, (100, 2)).astype(np.float32)
    call = inference("r-1")
    call.inputs = {"x": shifted}
    obs.finished(call, "200")
    obs.finished(dataclasses.replace(call, kind="invalid_input"), "400")  # failures: not watched
    report = obs.drift(watched)
    text = page(obs)
    obs.close()

    assert (report["model"], report["version"], report["status"]) == ("iris", "1", "ok")
    assert report["observed"] == 100
    features = {f["name"]: f for f in report["features"]}
    assert set(features) == {"a", "b"}
    assert all(f["psi"] > 1.0 for f in features.values())
    psi = float(features["a"]["psi"])
    assert f'modelport_drift_psi{{model="iris",version="1",feature="a"}} {psi!r}' in text
    assert 'modelport_drift_ks{model="iris",version="1",feature="b"}' in text


def test_what_is_switched_off_says_so(tmp_path: Path, executor: Executor) -> None:
    obs = observer(tmp_path, executor, inference_log="off", metrics=False, access_log=False)
    loaded(obs, version(1))
    obs.finished(inference("r-1"), "200")
    assert obs.metrics_page() is None
    assert obs.metrics is None
    assert not obs.traces
    with pytest.raises(NotFound, match="has no reference profile"):
        obs.drift(version(1))
    with pytest.raises(Unsupported, match="feedback needs the inference log"):
        asyncio.run(obs.feedback("iris", {"request_ids": ["r-1"], "labels": [1]}))
    obs.close()
    assert not (tmp_path / "registry" / LOG_FILE).exists()


def answered(count: int, *, number: int = 1, rows: list[int] | None = None) -> Answered:
    """`count` stream messages answered by one inference (a row each unless `rows`)."""
    total = count if rows is None else sum(rows)
    return Answered(
        "stream", "iris", number, f"{number:064x}", 0.0, 1000.0,
        [f"m-{i}" for i in range(count)], [f"in@{i}" for i in range(count)],
        {"x": np.arange(total * 2, dtype=np.float32).reshape(total, 2)},
        {"label": np.arange(total)}, rows,
    )  # fmt: skip


def test_messages_answered_together_are_each_a_request(tmp_path: Path, executor: Executor) -> None:
    stream = io.StringIO()
    obs = observer(tmp_path, executor, stream)
    obs.answered(answered(3))
    obs.answered(answered(2, rows=[1, 2]))
    text = page(obs)
    obs.close()

    assert (
        'modelport_requests_total{model="iris",version="1",protocol="stream",endpoint="infer",'
        'code="ok"} 5.0'
    ) in text
    assert "modelport_request_duration_seconds_count{" in text
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["request_id"], r["endpoint"]) for r in lines] == [
        (f"m-{i}", "infer") for i in (0, 1, 2, 0, 1)
    ]
    records = logged(tmp_path)
    assert [(r.request_id, r.caller, r.protocol, r.status) for r in records] == [
        (f"m-{i}", f"in@{i}", "stream", "ok") for i in (0, 1, 2, 0, 1)
    ]
    assert [r.inputs["x"] for r in records[:3] if r.inputs] == [
        [[0.0, 1.0]],
        [[2.0, 3.0]],
        [[4.0, 5.0]],
    ]
    assert [r.outputs for r in records[3:]] == [{"label": [0]}, {"label": [1, 2]}]


def test_messages_answered_together_are_sampled_and_redacted_each(
    tmp_path: Path, executor: Executor
) -> None:
    models = ModelsSettings(overrides={"iris": ModelSettings(log_redact=("x",))})
    obs = observer(tmp_path, executor, access_log=False)
    loaded(obs, version(1, log_sample_rate="0.5"), 0.1, models)
    loaded(obs, version(2, log_sample_rate="0"), 0.1, models)
    for _ in range(20):
        obs.answered(answered(10, rows=[1, 2] * 5))
    obs.answered(answered(10, number=2))
    obs.close()

    records = logged(tmp_path)
    # Half of 200 on average: far outside this range once in about 10^11 runs.
    assert 40 < len(records) < 160
    assert {r.version for r in records} == {1}
    assert all(r.inputs == {"x": REDACTED} for r in records)
    # Each kept message keeps its own rows.
    for r in records:
        index = int(r.request_id.removeprefix("m-"))
        start = index // 2 * 3 + index % 2
        assert r.outputs == {"label": list(range(start, start + 1 + index % 2))}


def test_the_scrape_shows_the_requests_in_flight_it_is_told_and_only_those(
    tmp_path: Path, executor: Executor
) -> None:
    obs = observer(tmp_path, executor, io.StringIO(), inference_log="off")
    try:
        first = obs.metrics_page({("iris", 1): 3, ("iris", 2): 0})
        second = obs.metrics_page({("iris", 2): 5})
    finally:
        obs.close()
    assert first is not None
    assert second is not None
    assert 'modelport_requests_in_flight{model="iris",version="1"} 3.0' in first.decode()
    assert 'modelport_requests_in_flight{model="iris",version="2"} 0.0' in first.decode()
    # A version no longer loaded leaves the page; the others show their count now.
    shown = [
        line
        for line in second.decode().splitlines()
        if line.startswith("modelport_requests_in_flight{")
    ]
    assert shown == ['modelport_requests_in_flight{model="iris",version="2"} 5.0']
