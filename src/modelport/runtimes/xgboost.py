"""The XGBoost runtime: native JSON or UBJ Booster files, predicted in place on one thread."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime

INPUT: Final = "input-0"
OUTPUT: Final = "predict"
_FLOATS: Final = (np.dtype(np.float32), np.dtype(np.float64))

_SNIFF_BYTES: Final = 65536
# XGBoost prefixes its messages with a timestamp and its own source location.
_LOG_PREFIX: Final = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


class XGBoostRuntime(Runtime):
    """An XGBoost Booster: one FP32 [-1, num_features] input, one `predict` output.

    `predict` is FP32 [-1] for one value per row, [-1, k] for multi-class probabilities or
    multi-output models. Prediction uses one thread so a server worker keeps to its core.
    """

    format: ClassVar[str] = "xgboost"
    suffixes: ClassVar[tuple[str, ...]] = (".ubj", ".json")

    def __init__(self, booster: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._booster = booster
        self._input = signature.inputs[0].name
        self._output = signature.outputs[0]
        self._dtype = numpy_dtype(self._output.datatype)

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        """True unless `path` is a JSON file without XGBoost's top-level "learner" key."""
        if path.suffix.lower() != ".json":
            return True
        try:
            with path.open("rb") as file:
                head = file.read(_SNIFF_BYTES)
        except OSError:
            return False
        # XGBoost writes "learner" as the first key, so the head of the file is enough.
        return head.lstrip().startswith(b"{") and b'"learner"' in head

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> XGBoostRuntime:
        """Load a model saved with `Booster.save_model` (.json or .ubj)."""
        try:
            import xgboost
        except ImportError:
            raise Unsupported("XGBoost models need xgboost; install modelport[xgboost]") from None
        try:
            # From a buffer XGBoost tells JSON from UBJ by content; registry blobs have no
            # suffix, and from a file path it would guess the format from the name.
            booster = xgboost.Booster(model_file=bytearray(path.read_bytes()))
        except xgboost.core.XGBoostError as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            detail = _LOG_PREFIX.sub("", first).replace(str(path), path.name)
            raise InvalidInput(
                f"cannot read {path.name!r} as an XGBoost model ({detail}); "
                "save it with Booster.save_model to a .json or .ubj file"
            ) from None
        booster.set_param({"nthread": 1})
        n_features = int(booster.num_features())
        inferred = Signature(
            (TensorSpec(INPUT, "FP32", (-1, n_features)),),
            (_output_spec(booster, n_features),),
        )
        if signature is None:
            signature = inferred
        else:
            _check_signature(signature, inferred)
        return cls(booster, signature)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Predict every row of the single input."""
        x = inputs[self._input]
        if x.shape[0] == 0:
            shape = (0, *(max(d, 0) for d in self._output.shape[1:]))
            return {self._output.name: np.empty(shape, dtype=self._dtype)}
        if x.dtype not in _FLOATS:
            # Integer or half-precision features: the library reads float32 and float64 only.
            x = x.astype(np.float32)
        # Inputs are positional arrays: feature names saved with the model do not apply.
        y = self._booster.inplace_predict(x, validate_features=False)
        return {self._output.name: np.asarray(y).astype(self._dtype, copy=False)}


def _output_spec(booster: Any, n_features: int) -> TensorSpec:
    # The objective decides the output width (softprob, multi-output, ...); one prediction on
    # a dummy row tells it without decoding the objective's parameters.
    probe = booster.inplace_predict(
        np.zeros((1, n_features), dtype=np.float32), validate_features=False
    )
    return TensorSpec(OUTPUT, "FP32", (-1, *np.shape(probe)[1:]))


def _check_signature(signature: Signature, inferred: Signature) -> None:
    n_features = inferred.inputs[0].shape[1]
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"an XGBoost model takes exactly one input; the signature lists {len(signature.inputs)}"
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
    if [s.name for s in signature.outputs] != [OUTPUT] or not _compatible(
        signature.outputs[0].shape, model_output.shape
    ):
        raise InvalidInput(
            f"an XGBoost model has one output, {OUTPUT!r} {list(model_output.shape)}; "
            "fix the signature"
        )


def _compatible(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(
        d == a or -1 in (d, a) for d, a in zip(declared, actual, strict=True)
    )
