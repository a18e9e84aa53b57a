"""Live accuracy: logged predictions scored against the true labels sent back as feedback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.registry.manifest import ModelVersion

MAX_FEEDBACK = 10_000
"""Most labels in one feedback request."""
_FLOAT_TYPES = ("FP16", "FP32", "FP64")


@dataclass(slots=True)
class Score:
    """How one version's logged predictions compare with the labels received for them."""

    kind: str
    """"classification" (accuracy) or "regression" (mean absolute error)."""
    rows: int = 0
    correct: int = 0
    abs_error: float = 0.0

    def value(self) -> float:
        """Accuracy (share correct) or mean absolute error."""
        if not self.rows:
            return float("nan")
        return (
            self.correct / self.rows
            if self.kind == "classification"
            else self.abs_error / self.rows
        )

    def to_dict(self) -> dict[str, Any]:
        """The score as the feedback endpoint reports it."""
        metric = "accuracy" if self.kind == "classification" else "mae"
        return {"kind": self.kind, "rows": self.rows, metric: round(self.value(), 6)}


def parse_feedback(body: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """`{"request_ids": [...], "labels": [...]}` checked: equal lengths, ids are strings."""
    ids = body.get("request_ids")
    labels = body.get("labels")
    if not isinstance(ids, list) or not isinstance(labels, list):
        raise InvalidInput(
            'feedback must be {"request_ids": [...], "labels": [...]}: the ids the predictions '
            "were answered with (x-request-id or parameters.modelport.request_id) and their labels"
        )
    if len(ids) != len(labels):
        raise InvalidInput(f"{len(ids)} request ids but {len(labels)} labels; give one label each")
    if not ids:
        raise InvalidInput("feedback holds no labels")
    if len(ids) > MAX_FEEDBACK:
        raise InvalidInput(f"at most {MAX_FEEDBACK} labels per request; split the feedback")
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidInput("every request id must be a non-empty string")
    return ids, labels


def score(
    pairs: Iterable[tuple[int | None, Mapping[str, Any], Any]],
    versions: Mapping[int, ModelVersion],
) -> dict[int, Score]:
    """Per version, logged outputs against labels.

    The output compared is the version's `feedback_output` metadata, else its first output;
    floating-point outputs are scored by absolute error, others by equality. A label is one
    value per row of the request (a single value for a one-row request).
    """
    scores: dict[int, Score] = {}
    for version, outputs, label in pairs:
        if version is None or not outputs:
            continue
        mv = versions.get(version)
        name, kind = _compared(mv, outputs)
        if name not in outputs:
            continue
        predicted = _rows(outputs[name])
        truth = _rows(label)
        if len(truth) != len(predicted):
            continue
        entry = scores.setdefault(version, Score(kind))
        for p, t in zip(predicted, truth, strict=True):
            entry.rows += 1
            if kind == "regression":
                try:
                    entry.abs_error += abs(float(p) - float(t))
                except (TypeError, ValueError):
                    entry.rows -= 1
            elif _equal(p, t):
                entry.correct += 1
    return scores


def _compared(mv: ModelVersion | None, outputs: Mapping[str, Any]) -> tuple[str, str]:
    """The output to compare and how: from the signature when the version is known."""
    if mv is not None and mv.signature.outputs:
        chosen = mv.metadata.get("feedback_output")
        specs = {s.name: s for s in mv.signature.outputs}
        spec = specs.get(chosen) if isinstance(chosen, str) else None
        spec = spec or mv.signature.outputs[0]
        kind = "regression" if spec.datatype in _FLOAT_TYPES else "classification"
        return spec.name, kind
    name = next(iter(outputs))
    values = _rows(outputs[name])
    floating = bool(values) and isinstance(values[0], float)
    return name, "regression" if floating else "classification"


def _rows(value: Any) -> Sequence[Any]:
    """One value per row: [[a], [b]] and [a, b] give [a, b]; a scalar gives [scalar]."""
    if not isinstance(value, list):
        return [value]
    array = np.asarray(value, dtype=object)
    if array.ndim >= 2 and array.shape[1:] == (1,) * (array.ndim - 1):
        return list(array.reshape(len(array)))
    if array.ndim == 1:
        return value
    return [list(row) for row in value]


def _equal(predicted: Any, truth: Any) -> bool:
    if isinstance(predicted, int | float) and isinstance(truth, int | float):
        return float(predicted) == float(truth)
    return str(predicted) == str(truth)
