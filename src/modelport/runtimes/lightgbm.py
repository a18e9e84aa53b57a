"""The LightGBM runtime: text model files from `Booster.save_model`, predicted on one thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.signature import Signature
from modelport.runtimes.tabular import TabularRuntime


class LightGBMRuntime(TabularRuntime):
    """A LightGBM Booster: one FP32 [-1, num_feature] input, one `predict` output.

    `predict` is FP64 [-1], or [-1, k] with the class probabilities of a multi-class model.
    Prediction uses one thread so a server worker keeps to its core.
    """

    format: ClassVar[str] = "lightgbm"
    suffixes: ClassVar[tuple[str, ...]] = (".txt", ".lgb")
    described_as: ClassVar[str] = "a LightGBM model"
    output_datatype: ClassVar[str] = "FP64"

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
        return cls._from_booster(booster, int(booster.num_feature()), signature)

    @staticmethod
    def _predict_rows(booster: Any, x: np.ndarray[Any, Any]) -> Any:
        return booster.predict(x, num_threads=1)
