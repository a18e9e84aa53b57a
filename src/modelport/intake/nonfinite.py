"""Parity on NaN and infinity between a model and its compiled form.

Many scikit-learn models refuse non-finite inputs; their ONNX forms answer them anyway. Trees
that answer NaN may route it down another branch than their ONNX form does. At push the original
is probed with a NaN row and an infinity row and the finding goes into the compile report; the
compiled form is served behind a guard that refuses every kind of value it would not answer
exactly as the original: never a silently different answer, at worst a clear refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np

from modelport.errors import InvalidInput, Unsupported
from modelport.protocol.signature import Signature
from modelport.runtimes.base import Arrays, Runtime

REJECTED: Final = "rejected"
"""The original refuses this kind of value; the compiled form is served behind a guard."""
ANSWERED: Final = "answered"
"""The original answers this kind of value and the compiled form agrees."""
DIFFERS: Final = "answered differently"
"""The original answers this kind of value but the compiled form disagrees: refused when served
compiled, with a pointer to serving the original."""
VALUES: Final = {"nan": np.nan, "inf": np.inf}
"""The non-finite kinds probed, by the name the report uses."""

_SAID: Final = {"nan": "NaN", "inf": "infinity"}

Check = Callable[[Runtime, Runtime, Mapping[str, np.ndarray[Any, Any]]], bool]


def probe(
    sample: Mapping[str, np.ndarray[Any, Any]], value: float
) -> dict[str, np.ndarray[Any, Any]] | None:
    """One row of `sample` with `value` in every float input; None when no input is float."""
    floats = [name for name, a in sample.items() if a.dtype.kind == "f"]
    if not floats:
        return None
    rows = {name: np.array(a[:1]) for name, a in sample.items()}
    for name in floats:
        rows[name][...] = value
    return rows


def behaviour(
    original: Runtime,
    compiled: Runtime,
    sample: Mapping[str, np.ndarray[Any, Any]],
    agree: Check,
) -> dict[str, str]:
    """How the pair treats NaN and infinity: {"nan": ..., "inf": ...} of REJECTED, ANSWERED or
    DIFFERS ({} without float inputs).

    `agree(original, compiled, rows)` compares both on rows the original answers.
    """
    found: dict[str, str] = {}
    for kind, value in VALUES.items():
        rows = probe(sample, value)
        if rows is None:
            return {}
        try:
            original.predict(rows, original.signature.output_names)
        except (ValueError, TypeError, InvalidInput):
            found[kind] = REJECTED
            continue
        found[kind] = ANSWERED if agree(original, compiled, rows) else DIFFERS
    return found


class RejectNonFinite(Runtime):
    """Serves a compiled model but refuses the non-finite values its original refuses."""

    row_independent: ClassVar[bool] = True
    steady: ClassVar[bool] = True  # it only wraps compiled (ONNX) forms

    def __init__(self, inner: Runtime, refused: Mapping[str, str]) -> None:
        super().__init__(inner.signature)
        self._inner = inner
        self._floats = tuple(s.name for s in inner.signature.inputs if s.datatype.startswith("FP"))
        self._nan = refused.get("nan")
        self._inf = refused.get("inf")

    @classmethod
    def load(
        cls, path: Any, signature: Signature | None = None, *, trusted: bool = False
    ) -> Runtime:
        """Not a format: this runtime only wraps a loaded one (see `guarded`)."""
        raise Unsupported("RejectNonFinite wraps a loaded runtime; it loads no artifact")

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Refuse the refused values with the same kind of error the original gives."""
        for name in self._floats:
            x = inputs[name]
            if self._nan and np.isnan(x).any():
                raise InvalidInput(_refusal(name, "nan", self._nan))
            if self._inf and np.isinf(x).any():
                raise InvalidInput(_refusal(name, "inf", self._inf))
        return self._inner.predict(inputs, outputs)

    def close(self) -> None:
        """Release the wrapped runtime."""
        self._inner.close()


def guarded(runtime: Runtime, report: Mapping[str, Any] | None) -> Runtime:
    """`runtime` (a compiled form) wrapped to refuse what it would not answer as its original."""
    kinds = (report or {}).get("non_finite") or {}
    refused = {kind: seen for kind, seen in kinds.items() if seen in (REJECTED, DIFFERS)}
    return RejectNonFinite(runtime, refused) if refused else runtime


def _refusal(name: str, kind: str, why: str) -> str:
    said = _SAID[kind]
    if why == REJECTED:
        return f"input {name!r} holds {said}, which this model does not accept"
    return (
        f"input {name!r} holds {said}, which the compiled form of this model would answer "
        "unlike the original; serve the original to send it (--no-compiled, or "
        "compiled = false under [models.NAME])"
    )
