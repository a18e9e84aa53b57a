"""A model's signature (input and output tensors) and the checks compiled from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidInput
from modelport.protocol.datatypes import DATATYPES
from modelport.protocol.types import InferRequest, Tensor


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named tensor of a signature; -1 marks a variable dimension (the batch first)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInput("a tensor in a signature needs a non-empty name")
        if self.datatype not in DATATYPES:
            raise InvalidInput(
                f"tensor {self.name!r}: unknown datatype {self.datatype!r}; "
                f"use one of {', '.join(sorted(DATATYPES))}"
            )
        if any(d < -1 for d in self.shape):
            raise InvalidInput(f"tensor {self.name!r}: dimensions are -1 (variable) or >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The OIP metadata form: {"name", "datatype", "shape"}."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TensorSpec:
        """Build from the OIP metadata form; InvalidInput says what is missing."""
        try:
            return cls(str(raw["name"]), str(raw["datatype"]), tuple(int(d) for d in raw["shape"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                'each signature tensor needs "name", "datatype" and a list of integer "shape" '
                f"({exc.__class__.__name__}: {exc})"
            ) from None

    def shape_matches(self, shape: Sequence[int]) -> bool:
        """True when `shape` has this spec's rank and agrees on every fixed dimension."""
        if len(shape) != len(self.shape):
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape, shape, strict=True))


def shapes_agree(declared: Sequence[int], actual: Sequence[int]) -> bool:
    """True when two signature shapes have one rank and agree wherever both are fixed.

    Unlike `TensorSpec.shape_matches`, either side may hold -1 (variable), as when a declared
    signature is checked against the one a model describes.
    """
    return len(declared) == len(actual) and all(
        d == a or -1 in (d, a) for d, a in zip(declared, actual, strict=True)
    )


@dataclass(frozen=True, slots=True)
class Signature:
    """The inputs a model takes and the outputs it gives, in order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise InvalidInput(f"signature {kind} names must be unique, got {names}")
        if not self.outputs:
            raise InvalidInput("a signature needs at least one output")

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"inputs": [...], "outputs": [...]}."""
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Signature:
        """Build from the JSON form; InvalidInput says what is wrong."""
        if not isinstance(raw, Mapping):
            raise InvalidInput('a signature is a JSON object with "inputs" and "outputs" lists')
        try:
            inputs = tuple(TensorSpec.from_dict(t) for t in raw.get("inputs", []))
            outputs = tuple(TensorSpec.from_dict(t) for t in raw["outputs"])
        except (KeyError, TypeError):
            raise InvalidInput(
                'a signature is a JSON object with "inputs" and "outputs" lists of tensors'
            ) from None
        return cls(inputs, outputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names in signature order."""
        return tuple(s.name for s in self.outputs)


class RequestValidator:
    """Checks requests against one signature; built once when a model loads."""

    __slots__ = ("_expected", "_input_names", "_inputs", "_outputs")

    def __init__(self, signature: Signature) -> None:
        self._inputs = {s.name: s for s in signature.inputs}
        self._input_names = tuple(s.name for s in signature.inputs)
        self._outputs = frozenset(signature.output_names)
        self._expected = ", ".join(
            f"{s.name} {s.datatype} {list(s.shape)}" for s in signature.inputs
        )

    def inputs(self, request: InferRequest) -> dict[str, np.ndarray[Any, Any]]:
        """Validated inputs by name; InvalidInput explains the first mismatch."""
        given: dict[str, np.ndarray[Any, Any]] = {}
        for tensor in request.inputs:
            self._check(tensor)
            if tensor.name in given:
                raise InvalidInput(f"input {tensor.name!r} is given more than once")
            given[tensor.name] = tensor.data
        if len(given) != len(self._inputs):
            missing = [n for n in self._input_names if n not in given]
            raise InvalidInput(
                f"missing input(s) {', '.join(repr(n) for n in missing)}; "
                f"the model takes: {self._expected}"
            )
        return given

    def outputs(self, request: InferRequest) -> tuple[str, ...] | None:
        """The requested output names (None for all); InvalidInput for an unknown one."""
        if request.outputs is None:
            return None
        names = tuple(o.name for o in request.outputs)
        unknown = [n for n in names if n not in self._outputs]
        if unknown:
            raise InvalidInput(
                f"unknown output(s) {', '.join(repr(n) for n in unknown)}; "
                f"the model gives: {', '.join(sorted(self._outputs))}"
            )
        if len(set(names)) != len(names):
            # Each could ask for a different encoding; one answer per name keeps that unambiguous.
            # Counted once each: a count per name would take quadratic time on a hostile list.
            twice = sorted(n for n, times in Counter(names).items() if times > 1)
            raise InvalidInput(
                f"output(s) {', '.join(repr(n) for n in twice)} requested more than once; "
                "list each output once"
            )
        return names

    def _check(self, tensor: Tensor) -> None:
        spec = self._inputs.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"unknown input {tensor.name!r}; the model takes: {self._expected}")
        if tensor.datatype != spec.datatype:
            raise InvalidInput(
                f"input {spec.name!r} has datatype {tensor.datatype}; "
                f"the model expects {spec.datatype}"
            )
        if not spec.shape_matches(tensor.shape):
            raise InvalidInput(
                f"input {spec.name!r} has shape {list(tensor.shape)}; the model expects "
                f"{list(spec.shape)} (-1 means any size)"
            )
