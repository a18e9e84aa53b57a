"""Inference requests and responses as decoded from any transport; tensors are numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Parameters = dict[str, Any]
"""OIP parameters: string keys to str, int, float or bool values."""


@dataclass(slots=True)
class Tensor:
    """A named tensor: `data` already has `shape` and the dtype of `datatype`.

    BYTES tensors are numpy object arrays whose elements are `bytes`.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; `binary` is None when the client did not say."""

    name: str
    binary: bool | None = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """One inference request.

    `outputs` is None when the client asked for every output. `binary_output` is the
    request-level default of the binary tensor data extension (`binary_data_output`).
    """

    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False


@dataclass(slots=True)
class InferResponse:
    """One inference response; `parameters` carries provenance (digest, request id)."""

    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    parameters: Parameters = field(default_factory=dict)
