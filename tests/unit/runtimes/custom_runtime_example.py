"""A sample custom runtime: a linear model stored as a small JSON file of weights.

Shows the other extension route next to the python runtime: a Runtime subclass, installed as
an entry point (group `modelport.runtimes`) or named by its dotted path,
`custom_runtime_example:LinearJsonRuntime`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime


class LinearJsonRuntime(Runtime):
    """`predict = input-0 @ weights + bias` from a JSON file {"weights": [...], "bias": b}."""

    format: ClassVar[str] = "linear-json"
    suffixes: ClassVar[tuple[str, ...]] = (".linear.json",)

    def __init__(self, weights: np.ndarray[Any, Any], bias: float, signature: Signature) -> None:
        super().__init__(signature)
        self._weights = weights
        self._bias = bias

    @classmethod
    def load(cls, path: Path, signature: Signature | None = None) -> LinearJsonRuntime:
        """Read the weights; the signature is always [-1, len(weights)] -> predict [-1]."""
        raw = json.loads(path.read_text())
        try:
            weights = np.asarray(raw["weights"], dtype=np.float64)
            bias = float(raw["bias"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(
                'a linear-json model is {"weights": [numbers], "bias": number}'
            ) from None
        inferred = Signature(
            (TensorSpec("input-0", "FP32", (-1, len(weights))),),
            (TensorSpec("predict", "FP64", (-1,)),),
        )
        return cls(weights, bias, signature or inferred)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """The linear function of the single input."""
        x = inputs[self.signature.inputs[0].name].astype(np.float64)
        return {"predict": x @ self._weights + self._bias}


class NotARuntime:
    """Has the right shape but does not subclass Runtime: discovery must refuse it."""

    format = "not-a-runtime"

    @classmethod
    def load(cls, path: Path, signature: Signature | None = None) -> NotARuntime:
        """Never reached."""
        return cls()
