"""A custom runtime whose load can be made to fail with a non-modelport exception."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))


class FlakyRuntime(Runtime):
    """Doubles its input; `load` raises RuntimeError while `broken` is set."""

    format: ClassVar[str] = "flaky"
    broken: ClassVar[bool] = False

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> FlakyRuntime:
        if cls.broken:
            raise RuntimeError("the accelerator caught fire")
        return cls(signature or SIGNATURE)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        return {"y": inputs["x"] * 2}
