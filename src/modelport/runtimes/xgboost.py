"""The XGBoost runtime: native JSON or UBJ Booster files, predicted in place on one thread."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.signature import Signature
from modelport.runtimes.tabular import TabularRuntime

_SNIFF_BYTES: Final = 65536
# XGBoost prefixes its messages with a timestamp and its own source location.
_LOG_PREFIX: Final = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


class XGBoostRuntime(TabularRuntime):
    """An XGBoost Booster: one FP32 [-1, num_features] input, one `predict` output.

    `predict` is FP32 [-1] for one value per row, [-1, k] for multi-class probabilities or
    multi-output models. Prediction uses one thread so a server worker keeps to its core.
    """

    format: ClassVar[str] = "xgboost"
    suffixes: ClassVar[tuple[str, ...]] = (".ubj", ".json")
    described_as: ClassVar[str] = "an XGBoost model"
    output_datatype: ClassVar[str] = "FP32"

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
        return cls._from_booster(booster, int(booster.num_features()), signature)

    @staticmethod
    def _predict_rows(booster: Any, x: np.ndarray[Any, Any]) -> Any:
        # Inputs are positional arrays: feature names saved with the model do not apply.
        return booster.inplace_predict(x, validate_features=False)
