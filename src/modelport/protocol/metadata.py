"""Server metadata, model metadata and repository-index entries, as the wire carries them.

Frozen dataclasses whose fields are, in order, the JSON keys of the Open Inference Protocol:
orjson encodes an instance to the same JSON the REST API has always answered, and the gRPC
codec reads the same fields into its messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """Who answers: server name, version and the protocol extensions it offers."""

    name: str
    version: str
    extensions: list[str]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One input or output of a model: its name, OIP datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A loaded version: its versions, platform, tensors, and provenance in `parameters`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]
    """OIP parameters: string keys to str, int, float or bool values."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the repository index: a loaded version (READY) or a model with none."""

    name: str
    version: str
    state: str
    """"READY" or "UNAVAILABLE"."""
    reason: str
    """Why a model is UNAVAILABLE ("" when READY)."""
