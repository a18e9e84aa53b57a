"""Replay: logged records re-run on a real loaded version, and the agreement counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import modelport
from modelport.inference_log.record import REDACTED, StoredRecord
from modelport.intake.push import push_artifact
from modelport.monitoring.replay import OutputAgreement, replay
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.store import Registry
from modelport.serving.embedded import Model

SIGNATURE = Signature(
    (
        TensorSpec("labels", "INT64", (-1,)),
        TensorSpec("scores", "FP32", (-1,)),
        TensorSpec("text", "BYTES", (-1,)),
    ),
    (
        TensorSpec("out-labels", "INT64", (-1,)),
        TensorSpec("out-scores", "FP32", (-1,)),
        TensorSpec("out-text", "BYTES", (-1,)),
    ),
)
BIG = 2**53
"""The first integer above which float64 cannot tell neighbours apart."""


def write_echo(path: Path) -> Path:
    """A python model answering its inputs as `out-<name>`, with negative scores as NaN."""

    class Echo:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            scores = np.where(inputs["scores"] < 0, np.nan, inputs["scores"])
            return {
                "out-labels": inputs["labels"],
                "out-scores": scores,
                "out-text": inputs["text"],
            }

    path.write_bytes(cloudpickle.dumps(Echo()))
    return path


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    """Version 1 of `echo`, loaded in this process."""
    root = tmp_path_factory.mktemp("replay")
    with Registry.open(root / "registry") as registry:
        push_artifact(
            registry,
            write_echo(root / "echo.cloudpickle"),
            name="echo",
            format="python",
            signature=SIGNATURE,
            trust_pickle=True,
            created_by="tests",
        )
    model = modelport.load("echo", registry=root / "registry")
    yield model
    model.close()


def record(
    outputs: dict[str, Any] | None,
    inputs: dict[str, Any] | None = None,
    *,
    status: str = "200",
    version: int | None = 1,
) -> StoredRecord:
    """A record as the log reads it back: tensors as nested lists, bytes as text."""
    if inputs is None:
        inputs = {"labels": [1, 2], "scores": [0.5, 1.5], "text": ["a", "b"]}
    return StoredRecord(
        id=1, request_id="r", at=0.0, model="echo", version=version, digest="d", protocol="rest",
        caller="", inputs=inputs, outputs=outputs, latency_ms=1.0, status=status, error="",
    )  # fmt: skip


def test_the_logged_answers_agree_everywhere(echo: Model) -> None:
    records = [
        record({"out-labels": [1, 2], "out-scores": [0.5, 1.5], "out-text": ["a", "b"]}),
        record({"out-labels": [1, 2]}, version=None),
    ]
    got = replay(echo, records, 1e-6).to_dict()
    assert got == {
        "model": "echo",
        "against": 1,
        "tolerance": 1e-6,
        "considered": 2,
        "replayed": 2,
        "skipped": {},
        "equal_records": 2,
        "agreement": 1.0,
        "logged_versions": {"1": 1, "?": 1},
        "outputs": {
            "out-labels": {
                "datatype": "INT64",
                "records": 2,
                "equal_records": 2,
                "max_abs_diff": 0.0,
                "labels": 4,
                "label_agreement": 1.0,
            },
            "out-scores": {
                "datatype": "FP32",
                "records": 1,
                "equal_records": 1,
                "max_abs_diff": 0.0,
                "labels": None,  # scores are no labels
                "label_agreement": None,
            },
            "out-text": {
                "datatype": "BYTES",
                "records": 1,
                "equal_records": 1,
                "max_abs_diff": None,
                "labels": 2,
                "label_agreement": 1.0,
            },
        },
    }


def test_records_that_cannot_be_replayed_are_counted_by_reason(echo: Model) -> None:
    answered = {"out-labels": [1, 2]}
    records = [
        record(answered, status="400"),
        record(answered, status="INVALID_ARGUMENT"),
        record(answered, inputs={}),
        record(answered, inputs={"labels": REDACTED, "scores": [1.0], "text": ["a"]}),
        record({"out-labels": REDACTED}),
        record(None),
        record({"gone": [1, 2]}),
        record(answered, inputs={"labels": [[1, 2]], "scores": [0.5, 1.5], "text": ["a", "b"]}),
    ]
    result = replay(echo, records, 1e-6)
    assert (result.considered, result.replayed, result.equal_records) == (8, 0, 0)
    assert result.skipped == {
        "not answered (error status)": 2,
        "no logged inputs": 1,
        "inputs redacted": 1,
        "outputs redacted or not logged": 2,
        "no logged output that version 1 has": 1,
        "inputs rejected by version 1": 1,
    }
    assert result.outputs == {}
    assert result.to_dict()["agreement"] is None


def test_a_redacted_output_is_left_out_of_the_comparison(echo: Model) -> None:
    result = replay(echo, [record({"out-labels": [1, 2], "out-text": REDACTED})], 1e-6)
    assert (result.replayed, result.equal_records) == (1, 1)
    assert list(result.outputs) == ["out-labels"]


def test_numbers_agree_within_the_tolerance(echo: Model) -> None:
    # 0.125 apart: exact in float32, so the difference is exactly 0.125.
    records = [record({"out-scores": [0.5, 1.625]})]
    strict = replay(echo, records, 0.1)
    assert (strict.equal_records, strict.outputs["out-scores"].equal_records) == (0, 0)
    assert strict.outputs["out-scores"].max_abs_diff == 0.125
    loose = replay(echo, records, 0.125)
    assert (loose.equal_records, loose.outputs["out-scores"].equal_records) == (1, 1)


def test_nan_agrees_with_nan_only(echo: Model) -> None:
    # The log writes NaN as JSON null; the echo answers negative scores with NaN.
    inputs = {"labels": [1, 2], "scores": [-1.0, -1.0], "text": ["a", "b"]}
    both = replay(echo, [record({"out-scores": [None, None]}, inputs)], 1e-6)
    assert both.equal_records == 1
    assert both.outputs["out-scores"].max_abs_diff == 0.0
    one = replay(echo, [record({"out-scores": [None, 3.0]}, inputs)], 1e-6)
    assert one.equal_records == 0
    assert one.outputs["out-scores"].max_abs_diff == float("inf")


def test_integer_labels_are_compared_exactly(echo: Model) -> None:
    inputs = {"labels": [BIG, 7], "scores": [0.5, 1.5], "text": ["a", "b"]}
    result = replay(echo, [record({"out-labels": [BIG + 1, 7]}, inputs)], 1e-6)
    labels = result.outputs["out-labels"]
    assert (labels.labels, labels.equal_labels) == (2, 1)  # float64 would call BIG + 1 equal


def test_text_is_compared_element_by_element(echo: Model) -> None:
    records = [
        record({"out-text": ["a", "x"]}),
        record({"out-text": ["a", "b"]}),
    ]
    text = replay(echo, records, 1e-6).outputs["out-text"]
    assert text == OutputAgreement("BYTES", records=2, equal_records=1, labels=4, equal_labels=3)


def test_a_differently_shaped_answer_disagrees(echo: Model) -> None:
    records = [
        record({"out-labels": [1, 2, 3]}),
        record({"out-scores": [[0.5], [1.5, 2.5]]}),  # ragged
        record({"out-text": ["a"]}),
    ]
    result = replay(echo, records, 1e6)
    assert (result.replayed, result.equal_records) == (3, 0)
    assert all(o.records == 1 and o.equal_records == 0 for o in result.outputs.values())
    # A shape mismatch is no element-wise comparison: no labels are counted.
    assert result.outputs["out-labels"].labels == result.outputs["out-text"].labels == 0
