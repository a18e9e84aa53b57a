"""Replay: logged inputs re-run on another version, and how far the answers agree.

`replay` runs the inputs of inference-log records through a loaded version and folds each
new output into an `OutputAgreement` with the logged one: numbers agree within a tolerance,
labels (integers, booleans, text) are also counted element by element. Records that cannot be
replayed (errors, redacted tensors, inputs the version refuses) are counted by reason. No I/O:
the caller reads the records and loads the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from modelport.errors import ModelportError
from modelport.inference_log.record import REDACTED, StoredRecord

if TYPE_CHECKING:
    from modelport.serving.embedded import Model

__all__ = ["OK_STATUSES", "OutputAgreement", "Replay", "replay"]

Array = np.ndarray[Any, Any]

OK_STATUSES: Final = frozenset({"200", "OK"})
"""Statuses of answered inferences: REST 200 and gRPC OK."""


@dataclass(slots=True)
class OutputAgreement:
    """How one output of the replayed version compares with the logged answers."""

    datatype: str
    records: int = 0
    equal_records: int = 0
    max_abs_diff: float | None = None
    """Largest |new - logged| over numeric elements; None for text outputs."""
    labels: int = 0
    equal_labels: int = 0
    """Element counts, for label-like (integer, boolean or text) outputs only."""

    @property
    def label_like(self) -> bool:
        """Integers, booleans and text: outputs whose values are labels, compared exactly."""
        return not self.datatype.startswith("FP")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `logs replay --json` prints."""
        label_like = self.label_like
        return {
            "datatype": self.datatype,
            "records": self.records,
            "equal_records": self.equal_records,
            "max_abs_diff": self.max_abs_diff,
            "labels": self.labels if label_like else None,
            "label_agreement": _share(self.equal_labels, self.labels) if label_like else None,
        }


@dataclass(slots=True)
class Replay:
    """The outcome of replaying logged inputs on one version."""

    model: str
    version: int
    tolerance: float
    considered: int = 0
    replayed: int = 0
    equal_records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    logged_versions: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, OutputAgreement] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `logs replay --json` prints."""
        return {
            "model": self.model,
            "against": self.version,
            "tolerance": self.tolerance,
            "considered": self.considered,
            "replayed": self.replayed,
            "skipped": dict(sorted(self.skipped.items())),
            "equal_records": self.equal_records,
            "agreement": _share(self.equal_records, self.replayed),
            "logged_versions": dict(sorted(self.logged_versions.items())),
            "outputs": {name: o.to_dict() for name, o in self.outputs.items()},
        }


def replay(model: Model, records: list[StoredRecord], tolerance: float) -> Replay:
    """Run the inputs of `records` on `model`; how its outputs agree with the logged ones.

    Only answered records with unredacted inputs are replayed, asking for the logged outputs
    that `model` has; numbers agree when they differ by at most `tolerance`.
    """
    mv = model.version
    result = Replay(mv.name, mv.version, tolerance, considered=len(records))
    datatypes = {spec.name: spec.datatype for spec in model.signature.outputs}
    for record in records:
        reason = _unreplayable(record)
        if reason:
            result.skipped[reason] += 1
            continue
        assert record.inputs is not None
        assert record.outputs is not None
        logged = {
            name: value
            for name, value in record.outputs.items()
            if name in datatypes and value != REDACTED
        }
        if not logged:
            result.skipped[f"no logged output that version {mv.version} has"] += 1
            continue
        try:
            new = model.predict(record.inputs, outputs=list(logged))
        except ModelportError:
            # Its inputs no longer fit (e.g. the signature changed): say so in the counts.
            result.skipped[f"inputs rejected by version {mv.version}"] += 1
            continue
        result.replayed += 1
        result.logged_versions["?" if record.version is None else str(record.version)] += 1
        all_equal = True
        for name, value in logged.items():
            agreement = result.outputs.setdefault(name, OutputAgreement(datatypes[name]))
            all_equal &= _compare(agreement, value, new[name], tolerance)
        result.equal_records += all_equal
    return result


def _unreplayable(record: StoredRecord) -> str:
    """Why a record cannot be replayed ("" when it can)."""
    if record.status not in OK_STATUSES:
        return "not answered (error status)"
    if not record.inputs:
        return "no logged inputs"
    if any(value == REDACTED for value in record.inputs.values()):
        return "inputs redacted"
    if not record.outputs or all(value == REDACTED for value in record.outputs.values()):
        return "outputs redacted or not logged"
    return ""


def _compare(agreement: OutputAgreement, logged: Any, new: Array, tolerance: float) -> bool:
    """Fold one record's output into `agreement`; True when every element agrees."""
    agreement.records += 1
    if agreement.datatype == "BYTES":
        old = np.asarray(logged, dtype=object)
        # The log keeps text tensors as UTF-8 strings (undecodable bytes replaced): do the same.
        fresh = np.array([_as_text(v) for v in new.reshape(-1)], dtype=object)
        if old.shape != new.shape:
            return False
        same = old == fresh.reshape(new.shape)
        equal = same
    else:
        try:
            old = np.asarray(logged, dtype=np.float64)
        except (TypeError, ValueError):
            return False  # ragged or non-numeric: it cannot agree with a numeric tensor
        if old.shape != new.shape:
            return False
        fresh = new.astype(np.float64)
        nan = np.isnan(old) & np.isnan(fresh)
        if new.dtype.kind in "biu":
            # Exactly, as integers: float64 would merge labels above 2**53.
            same = np.asarray(logged, dtype=new.dtype) == new
        else:
            same = (old == fresh) | nan
        diff = np.nan_to_num(np.where(nan, 0.0, np.abs(fresh - old)), nan=np.inf)
        if diff.size:
            agreement.max_abs_diff = max(agreement.max_abs_diff or 0.0, float(diff.max()))
        equal = same | (diff <= tolerance)
    if agreement.label_like:
        agreement.labels += int(same.size)
        agreement.equal_labels += int(np.count_nonzero(same))
    agrees = bool(np.all(equal))
    agreement.equal_records += agrees
    return agrees


def _as_text(value: Any) -> Any:
    """A BYTES element as the log keeps it: bytes decoded as UTF-8, anything else unchanged."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _share(part: int, whole: int) -> float | None:
    """part / whole rounded to 6 places; None when there is no whole."""
    return round(part / whole, 6) if whole else None
