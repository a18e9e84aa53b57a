"""The LightGBM runtime: text model files from `Booster.save_model`, predicted on one thread."""

from __future__ import annotations

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


class LightGBMRuntime(Runtime):
    """A LightGBM Booster: one FP32 [-1, num_feature] input, one `predict` output.

    `predict` is FP64 [-1], or [-1, k] with the class probabilities of a multi-class model.
    Prediction uses one thread so a server worker keeps to its core.
    """

    format: ClassVar[str] = "lightgbm"
    suffixes: ClassVar[tuple[str, ...]] = (".txt", ".lgb")

    def __init__(self, booster: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._booster = booster
        self._input = signature.inputs[0].name
        self._output = signature.outputs[0]
        self._dtype = numpy_dtype(self._output.datatype)

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        """True when the file starts the way LightGBM model files do (a "tree" line)."""
        try:
            with path.open("rb") as file:
                head = file.read(16)
        except OSError:
            return False
        return head.lstrip().startswith(b"tree")

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> LightGBMRuntime:
        """Load a text model saved with `Booster.save_model`."""
        try:
            import lightgbm
        except ImportError:
            raise Unsupported(
                "LightGBM models need lightgbm; install modelport[lightgbm]"
            ) from None
        try:
            booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as exc:
            detail = str(exc).split("[LightGBM]")[0].strip().replace(str(path), path.name)
            raise InvalidInput(
                f"cannot read {path.name!r} as a LightGBM model ({detail}); "
                "save it with Booster.save_model"
            ) from None
        n_features = int(booster.num_feature())
        # One prediction on a dummy row gives the output width (k for multi-class).
        probe = booster.predict(np.zeros((1, n_features), dtype=np.float32), num_threads=1)
        inferred = Signature(
            (TensorSpec(INPUT, "FP32", (-1, n_features)),),
            (TensorSpec(OUTPUT, "FP64", (-1, *np.shape(probe)[1:])),),
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
        y = self._booster.predict(x, num_threads=1)
        return {self._output.name: np.asarray(y).astype(self._dtype, copy=False)}


def _check_signature(signature: Signature, inferred: Signature) -> None:
    n_features = inferred.inputs[0].shape[1]
    if len(signature.inputs) != 1:
        raise InvalidInput(
            f"a LightGBM model takes exactly one input; the signature lists {len(signature.inputs)}"
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
            f"a LightGBM model has one output, {OUTPUT!r} {list(model_output.shape)}; "
            "fix the signature"
        )


def _compatible(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(declared) == len(actual) and all(
        d == a or -1 in (d, a) for d, a in zip(declared, actual, strict=True)
    )
