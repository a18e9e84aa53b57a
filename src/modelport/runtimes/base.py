"""The runtime contract: load an artifact, describe its signature, predict on numpy arrays."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import numpy_dtype
from modelport.protocol.signature import Signature, TensorSpec

Arrays = dict[str, np.ndarray[Any, Any]]


class Runtime(abc.ABC):
    """One loaded model. Plain synchronous code: the server decides where it runs.

    Subclasses set `format` (the name used by `models push --format`) and implement `load`
    and `predict`. Import heavy libraries inside `load`, never at module import.
    """

    format: ClassVar[str]
    """Name of the artifact format this runtime loads (e.g. "sklearn")."""

    suffixes: ClassVar[tuple[str, ...]] = ()
    """File suffixes that select this runtime when `--format` is not given."""

    row_independent: ClassVar[bool] = False
    """True when each output row depends only on the same input row, so the server may stack
    concurrent requests into one call and split the result (adaptive batching)."""

    steady: ClassVar[bool] = False
    """True when a call that was fast stays fast (a fixed computation, such as a tree walk or
    an ONNX graph), so the server may run fast calls on its event loop. A runtime that runs
    arbitrary code may sleep or hang on some input: it always runs in a thread, so that the
    server keeps answering meanwhile (and its deadline can fire)."""

    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    @classmethod
    def recognizes(cls, path: Path) -> bool:
        """Whether the file's content looks like this format (checked after its suffix matched)."""
        return True

    @classmethod
    def runs_code(cls, path: Path) -> bool:
        """Whether loading this artifact can run code it carries (pickle and kin).

        Such artifacts are registered only with `--trust-pickle`, and `load` gets
        `trusted=True` only for versions pushed that way.
        """
        return False

    @classmethod
    @abc.abstractmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> Runtime:
        """Load the artifact at `path`.

        `signature` is the registered one (or the user's `--signature`); when None the
        runtime infers it from the model and raises InvalidInput if it cannot. `trusted` says
        the pusher vouched for an artifact that can run code (`--trust-pickle`); artifacts
        for which `runs_code` is true are only handed to `load` once trusted and digest-checked.
        """

    @abc.abstractmethod
    def predict(self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]) -> Arrays:
        """Compute `outputs` (a non-empty subset of the signature's) from validated inputs.

        Inputs match the signature's names, datatypes and shapes. Each returned array has the
        dtype of its output's datatype and the batch size of the inputs.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing
        """Release what the model holds; called once when it is unloaded."""


def input_text(x: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """BYTES input `name` as an object array of str, for libraries that take text.

    InvalidInput when an element is not UTF-8.
    """
    try:
        decoded = np.fromiter(
            (v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in x.ravel()),
            dtype=object,
            count=x.size,
        )
    except UnicodeDecodeError:
        raise InvalidInput(f"input {name!r} must hold UTF-8 text") from None
    return decoded.reshape(x.shape)


def output_array(values: Any, datatype: str) -> np.ndarray[Any, Any]:
    """`values` as an array with the dtype of `datatype`, as `Runtime.predict` must return them.

    BYTES becomes an object array of bytes (other values are written as UTF-8 text). Values
    that do not convert raise TypeError or ValueError; the caller says whose values they were.
    """
    array = np.asarray(values)
    if datatype == "BYTES":
        encoded = np.fromiter(
            (v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel()),
            dtype=object,
            count=array.size,
        )
        return encoded.reshape(array.shape)
    return array.astype(numpy_dtype(datatype), copy=False)


def empty_output(spec: TensorSpec) -> np.ndarray[Any, Any]:
    """The answer for an empty batch: no rows of the output's dtype, variable inner sizes 0."""
    return np.empty((0, *(max(d, 0) for d in spec.shape[1:])), dtype=numpy_dtype(spec.datatype))
