"""The Python runtime: any pickled object with `predict(dict of arrays) -> dict of arrays`.

This is the route for a custom model whose code travels with it (like an MLflow pyfunc). The
other route is a custom Runtime class, found by entry point or dotted path (see discovery).
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.base import Arrays, Runtime, output_array
from modelport.runtimes.pickled import read_object, require_predict


class PythonRuntime(Runtime):
    """A pickled (usually cloudpickled) object whose `predict` maps input arrays to outputs.

    The object's `predict(inputs: dict[str, ndarray]) -> Mapping[str, array-like]` receives
    every input by name and must return at least the requested outputs, each with the batch
    size of the inputs; results are converted to the signature's datatypes.
    """

    format: ClassVar[str] = "python"
    suffixes: ClassVar[tuple[str, ...]] = (".cloudpickle",)

    def __init__(self, model: Any, signature: Signature) -> None:
        super().__init__(signature)
        self._predict = model.predict
        self._specs = {s.name: s for s in signature.outputs}
        # The batch size is read from the first input with a variable leading dimension.
        self._batch_input = next(
            (s.name for s in signature.inputs if s.shape and s.shape[0] == -1), None
        )

    @classmethod
    def runs_code(cls, path: Path) -> bool:
        """Always: the artifact is a pickled Python object."""
        return True

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> PythonRuntime:
        """Unpickle the object; only call this after the artifact's trust and digest checks.

        The signature is the one given, else the object's own `signature` attribute (a
        Signature or its dict form); without either this raises InvalidInput.
        """
        model = _unpickle(path)
        require_predict(model, "python", "pickle an object with predict(inputs: dict) -> dict")
        if signature is None:
            signature = _own_signature(model)
        return cls(model, signature)

    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Call the object's predict with all inputs and keep the requested outputs."""
        result = self._predict(dict(inputs))
        if not isinstance(result, Mapping):
            raise InternalError(
                f"the model's predict returned a {type(result).__name__}; it must return a "
                "dict of output name to array"
            )
        batch = inputs[self._batch_input].shape[0] if self._batch_input is not None else None
        arrays: Arrays = {}
        for name in outputs:
            if name not in result:
                raise InternalError(f"the model's predict did not return output {name!r}")
            arrays[name] = _as_output(result[name], self._specs[name], batch)
        return arrays


def _unpickle(path: Path) -> Any:
    # cloudpickle files are ordinary pickles, but objects pickled by value refer to
    # cloudpickle's helpers, which must be importable while loading.
    with contextlib.suppress(ImportError):
        import cloudpickle  # noqa: F401

    def read() -> Any:
        with path.open("rb") as file:
            return pickle.load(file)  # noqa: S301 - only reached for trusted, digest-checked files

    return read_object(
        read, f"cannot unpickle {path.name!r}", "save the model with cloudpickle.dump"
    )


def _own_signature(model: Any) -> Signature:
    own = getattr(model, "signature", None)
    if isinstance(own, Signature):
        return own
    if isinstance(own, Mapping):
        return Signature.from_dict(own)
    raise InvalidInput(
        "a python model cannot describe its inputs and outputs: pass --signature FILE "
        '(JSON {"inputs": [...], "outputs": [...]}) or give the object a `signature` attribute'
    )


def _as_output(value: Any, spec: TensorSpec, batch: int | None) -> np.ndarray[Any, Any]:
    array = np.asarray(value)
    try:
        converted = output_array(array, spec.datatype)
    except (TypeError, ValueError):
        raise InternalError(
            f"output {spec.name!r}: the model returned {array.dtype} values that do not "
            f"convert to {spec.datatype}; fix the model or its signature"
        ) from None
    if not spec.shape_matches(converted.shape):
        raise InternalError(
            f"output {spec.name!r}: the model returned shape {list(converted.shape)}, but the "
            f"signature says {list(spec.shape)}"
        )
    if batch is not None and spec.shape and spec.shape[0] == -1 and converted.shape[0] != batch:
        raise InternalError(
            f"output {spec.name!r}: the model returned {converted.shape[0]} rows for a batch "
            f"of {batch}"
        )
    return converted
