"""Models that take one numeric [-1, n_features] input and give one `predict` output."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Self

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import Signature, TensorSpec, shapes_agree
from modelport.runtimes.base import Arrays, Runtime, empty_output

INPUT: Final = "input-0"
"""Name of the single input of an inferred signature."""

OUTPUT: Final = "predict"
"""Name of the single output."""

_FLOATS: Final = (np.dtype(np.float32), np.dtype(np.float64))


class TabularRuntime(Runtime):
    """A booster (gradient-boosted trees) predicting one output from rows of numeric features.

    Subclasses set `described_as` and `output_datatype`, implement `_predict_rows`, and end
    `load` with `_from_booster`. The inferred signature is FP32 [-1, n_features] in and
    `output_datatype` [-1] or [-1, k] out, the width found by one prediction.
    """

    row_independent: ClassVar[bool] = True
    steady: ClassVar[bool] = True

    described_as: ClassVar[str]
    """How messages name the model, with its article (e.g. "an XGBoost model")."""

    output_datatype: ClassVar[str]
    """Datatype of the `predict` output in an inferred signature."""

    def __init__(self, booster: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._booster = booster
        self._input = signature.inputs[0].name
        self._output = signature.outputs[0]
        self._dtype = numpy_dtype(self._output.datatype)

    @classmethod
    def _from_booster(cls, booster: Any, n_features: int, signature: Signature | None) -> Self:
        """A runtime for `booster`; `signature` is checked against its own, None takes that."""
        # The model decides the output width (multi-class, multi-output, ...); one prediction
        # on a dummy row tells it without decoding the model's parameters.
        probe = cls._predict_rows(booster, np.zeros((1, n_features), dtype=np.float32))
        inferred = Signature(
            (TensorSpec(INPUT, "FP32", (-1, n_features)),),
            (TensorSpec(OUTPUT, cls.output_datatype, (-1, *np.shape(probe)[1:])),),
        )
        if signature is None:
            signature = inferred
        else:
            _check_signature(signature, inferred, cls.described_as)
        return cls(booster, signature)

    @staticmethod
    @abc.abstractmethod
    def _predict_rows(booster: Any, x: np.ndarray[Any, Any]) -> Any:
        """The booster's predictions for a non-empty batch of float32 or float64 rows."""

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Predict every row of the single input."""
        x = inputs[self._input]
        if x.shape[0] == 0:
            return {self._output.name: empty_output(self._output)}
        if x.dtype not in _FLOATS:
            # Integer or half-precision features: the libraries read float32 and float64 only.
            x = x.astype(np.float32)
        y = self._predict_rows(self._booster, x)
        return {self._output.name: np.asarray(y).astype(self._dtype, copy=False)}


def _check_signature(signature: Signature, inferred: Signature, described_as: str) -> None:
    n_features = inferred.inputs[0].shape[1]
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"{described_as} takes exactly one input; the signature lists {len(signature.inputs)}"
        )
    spec = signature.inputs[0]
    if spec.datatype in ("BYTES", "BOOL") or len(spec.shape) != 2:
        raise InvalidInput(
            f"input {spec.name!r} must be a numeric [-1, {n_features}] tensor, "
            f"not {spec.datatype} {list(spec.shape)}"
        )
    if spec.shape[1] not in (-1, n_features):
        raise InvalidInput(
            f"input {spec.name!r} has {spec.shape[1]} features but the model takes "
            f"{n_features}; fix the signature"
        )
    model_output = inferred.outputs[0]
    if [s.name for s in signature.outputs] != [OUTPUT] or not shapes_agree(
        signature.outputs[0].shape, model_output.shape
    ):
        raise InvalidInput(
            f"{described_as} has one output, {OUTPUT!r} {list(model_output.shape)}; "
            "fix the signature"
        )
