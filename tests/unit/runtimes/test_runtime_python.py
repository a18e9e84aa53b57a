"""The python runtime: cloudpickled objects with predict(dict of arrays) -> dict of arrays."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from modelport.errors import InternalError, InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.python import PythonRuntime

SIGNATURE = Signature(
    (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2))),
    (TensorSpec("sum", "FP32", (-1, 2)), TensorSpec("label", "BYTES", (-1,))),
)


def _model(signature: Any = None, rows: int | None = None) -> Any:
    """A custom model class defined here, so cloudpickle stores it by value."""

    class AddAndLabel:
        def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
            total = inputs["a"] + inputs["b"]
            n = len(total) if rows is None else rows
            # Plain Python types on purpose: the runtime converts them to the signature.
            return {
                "sum": total.astype(np.float64).tolist()[:n],
                "label": ["big" if row.sum() > 1 else "small" for row in total][:n],
            }

    model = AddAndLabel()
    if signature is not None:
        model.signature = signature  # type: ignore[attr-defined]
    return model


def _save(model: Any, path: Path) -> Path:
    path.write_bytes(cloudpickle.dumps(model))
    return path


@pytest.mark.parametrize("batch", [1, 5])
def test_predict_converts_to_the_signature(tmp_path: Path, batch: int) -> None:
    runtime = PythonRuntime.load(_save(_model(), tmp_path / "m.cloudpickle"), SIGNATURE)
    a = np.arange(batch * 2, dtype=np.float32).reshape(batch, 2) / 10
    b = np.ones((batch, 2), np.float32)
    out = runtime.predict({"a": a, "b": b}, ["sum", "label"])
    assert out["sum"].dtype == np.float32
    # Exact: a float32 sum is correctly rounded on every CPU, and float64 holds it unchanged.
    np.testing.assert_array_equal(out["sum"], a + b)
    assert out["label"].dtype == object
    assert list(out["label"]) == [b"big" if s > 1 else b"small" for s in (a + b).sum(axis=1)]


def test_only_requested_outputs(tmp_path: Path) -> None:
    runtime = PythonRuntime.load(_save(_model(), tmp_path / "m.cloudpickle"), SIGNATURE)
    ones = np.ones((2, 2), np.float32)
    assert set(runtime.predict({"a": ones, "b": ones}, ["label"])) == {"label"}


@pytest.mark.parametrize("own", [SIGNATURE, SIGNATURE.to_dict()])
def test_signature_from_the_object(tmp_path: Path, own: Any) -> None:
    runtime = PythonRuntime.load(_save(_model(own), tmp_path / "m.cloudpickle"))
    assert runtime.signature == SIGNATURE


def test_without_signature_asks_for_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--signature FILE"):
        PythonRuntime.load(_save(_model(), tmp_path / "m.cloudpickle"))


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(InvalidInput, match="no predict method"):
        PythonRuntime.load(path, SIGNATURE)


def test_wrong_batch_size_from_the_model_is_an_internal_error(tmp_path: Path) -> None:
    runtime = PythonRuntime.load(_save(_model(rows=1), tmp_path / "m.cloudpickle"), SIGNATURE)
    ones = np.ones((3, 2), np.float32)
    with pytest.raises(InternalError, match="1 rows for a batch of 3"):
        runtime.predict({"a": ones, "b": ones}, ["sum"])


def test_missing_output_from_the_model_is_an_internal_error(tmp_path: Path) -> None:
    signature = Signature(SIGNATURE.inputs, (TensorSpec("score", "FP32", (-1,)),))
    runtime = PythonRuntime.load(_save(_model(), tmp_path / "m.cloudpickle"), signature)
    ones = np.ones((1, 2), np.float32)
    with pytest.raises(InternalError, match="score"):
        runtime.predict({"a": ones, "b": ones}, ["score"])


def test_unreadable_file_is_invalid_input_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.cloudpickle"
    path.write_bytes(b"garbage")
    with pytest.raises(InvalidInput, match=r"broken\.cloudpickle") as info:
        PythonRuntime.load(path, SIGNATURE)
    assert str(tmp_path) not in info.value.message
