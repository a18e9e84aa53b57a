"""NaN and infinity: a compiled model answers them exactly as far as its original does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelport.errors import InvalidInput
from modelport.intake import nonfinite
from modelport.intake.compilation import compile_model, verify
from modelport.intake.nonfinite import ANSWERED, DIFFERS, REJECTED, RejectNonFinite, guarded
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.python import PythonRuntime
from modelport.runtimes.sklearn import SklearnRuntime
from modelport.runtimes.xgboost import XGBoostRuntime

from ...conftest import assert_close_compiled

X, Y = load_iris(return_X_y=True)
X = X.astype(np.float32)
SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP64", (-1,)),))


def compiled_runtime(artifact: bytes, signature: Signature, tmp_path: Path) -> Any:
    from modelport.runtimes.onnx import OnnxRuntime

    path = tmp_path / "compiled.onnx"
    path.write_bytes(artifact)
    return OnnxRuntime.load(path, signature)


def test_scikit_learn_refusals_carry_over_to_the_compiled_form(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, Y), tmp_path / "lr.joblib")
    original = SklearnRuntime.load(tmp_path / "lr.joblib", trusted=True)
    compiled = compile_model(original)
    assert compiled.artifact is not None
    assert compiled.report["non_finite"] == {"nan": REJECTED, "inf": REJECTED}
    bare = compiled_runtime(compiled.artifact, original.signature, tmp_path)
    served = guarded(bare, compiled.report)
    assert isinstance(served, RejectNonFinite)
    for value, word in ((np.nan, "NaN"), (np.inf, "infinity")):
        rows = X[:3].copy()
        rows[1, 2] = value
        with pytest.raises(ValueError, match=r"NaN|infinity"):
            original.predict({"input-0": rows}, ["predict"])
        with pytest.raises(InvalidInput, match=word):
            served.predict({"input-0": rows}, ["predict"])
        bare.predict({"input-0": rows}, ["predict"])  # unguarded, ONNX would have answered
    np.testing.assert_array_equal(
        served.predict({"input-0": X}, ["predict"])["predict"],
        original.predict({"input-0": X}, ["predict"])["predict"],
    )


def test_models_that_answer_nan_must_agree_on_it(tmp_path: Path) -> None:
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, Y)
    model.get_booster().save_model(tmp_path / "m.ubj")
    original = XGBoostRuntime.load(tmp_path / "m.ubj")
    compiled = compile_model(original)
    assert compiled.artifact is not None
    assert compiled.report["non_finite"] == {"nan": ANSWERED, "inf": ANSWERED}
    served = guarded(
        compiled_runtime(compiled.artifact, original.signature, tmp_path), compiled.report
    )
    assert not isinstance(served, RejectNonFinite)
    rows = X[:4].copy()
    rows[0, 0] = np.nan
    rows[2, :] = np.nan
    assert_close_compiled(
        served.predict({"input-0": rows}, ["predict"])["predict"],
        original.predict({"input-0": rows}, ["predict"])["predict"],
    )


class NanIsZero:
    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.nan_to_num(inputs["x"], nan=0.0, posinf=0.0).sum(axis=1)}


class NanIsOne:
    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.nan_to_num(inputs["x"], nan=1.0, posinf=0.0).sum(axis=1)}


def test_a_compiled_form_that_answers_nan_differently_refuses_it() -> None:
    sample = {"x": np.ones((5, 2), np.float32)}
    original = PythonRuntime(NanIsZero(), SIGNATURE)
    unlike = PythonRuntime(NanIsOne(), SIGNATURE)

    def agree(a: Any, b: Any, rows: Any) -> bool:
        return all(check["passed"] for check in verify(a, b, rows).values())

    found = nonfinite.behaviour(original, unlike, sample, agree)
    assert found == {"nan": DIFFERS, "inf": ANSWERED}
    served = guarded(unlike, {"non_finite": found})
    with pytest.raises(InvalidInput, match=r"unlike the original.*--no-compiled"):
        served.predict({"x": np.array([[np.nan, 1]], np.float32)}, ["y"])
    # Infinity is answered alike, so it passes.
    assert served.predict({"x": np.array([[np.inf, 1]], np.float32)}, ["y"])["y"][0] == 1
    same = nonfinite.behaviour(original, PythonRuntime(NanIsZero(), SIGNATURE), sample, agree)
    assert same == {"nan": ANSWERED, "inf": ANSWERED}


def test_no_float_inputs_means_nothing_to_probe() -> None:
    assert nonfinite.probe({"x": np.ones((3, 2), np.int64)}, np.nan) is None


def test_versions_compiled_before_the_probe_are_served_unguarded() -> None:
    runtime = PythonRuntime(NanIsZero(), SIGNATURE)
    assert guarded(runtime, None) is runtime
    assert guarded(runtime, {"kept": True}) is runtime
