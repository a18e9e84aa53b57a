"""Helpers shared by the serving tests."""

from __future__ import annotations

from datetime import UTC, datetime

from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.manifest import ModelVersion


def model_version(
    inputs: tuple[TensorSpec, ...],
    features: list[str] | None = None,
    outputs: tuple[TensorSpec, ...] = (TensorSpec("y", "FP32", (-1,)),),
) -> ModelVersion:
    """A registered version with this signature (and a reference profile of `features`)."""
    profile = None
    if features is not None:
        profile = {
            "format": 1,
            "rows": 1,
            "source_rows": 1,
            "features": [
                {"name": n, "input": inputs[0].name, "column": j, "kind": "numeric"}
                for j, n in enumerate(features)
            ],
        }
    return ModelVersion(
        name="m",
        version=1,
        digest="0" * 64,
        size=1,
        format="onnx",
        signature=Signature(inputs, outputs),
        created_at=datetime.now(UTC),
        created_by="tests",
        source="m.onnx",
        pickle=False,
        trusted_pickle=False,
        reference_profile=profile,
    )
