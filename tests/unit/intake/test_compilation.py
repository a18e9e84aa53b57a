"""Compiling to ONNX: converted models answer like the libraries' own predict, or are not kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import skops.io
import xgboost
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelport.errors import InvalidInput, Unsupported, UntrustedArtifact
from modelport.intake.compilation import (
    SAMPLE_ROWS,
    Compilation,
    Tolerance,
    compile_model,
    verification_sample,
    verify,
)
from modelport.intake.nonfinite import RejectNonFinite
from modelport.intake.push import push_artifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry.store import Registry
from modelport.runtimes.base import Arrays, Runtime
from modelport.runtimes.lightgbm import LightGBMRuntime
from modelport.runtimes.onnx import OnnxRuntime
from modelport.runtimes.sklearn import SklearnRuntime
from modelport.runtimes.xgboost import XGBoostRuntime
from modelport.serving.artifacts import load_artifact, load_runtime

from ...conftest import assert_close_compiled

Array = np.ndarray[Any, Any]
TOLERANCE = Tolerance()


@pytest.fixture(scope="module")
def iris() -> tuple[Array, Array]:
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def fresh_iris(iris: tuple[Array, Array]) -> Array:
    """Rows neither the model nor the verification sample saw: iris rows plus noise."""
    rng = np.random.default_rng(42)
    x = iris[0]
    return (x + rng.normal(scale=0.3, size=x.shape)).astype(np.float32)


def _sklearn_runtime(model: Any, tmp_path: Path, signature: Signature | None = None) -> Runtime:
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    return SklearnRuntime.load(path, signature, trusted=True)


def _compiled(compilation: Compilation, tmp_path: Path, signature: Signature) -> OnnxRuntime:
    assert compilation.kept, compilation.report
    assert compilation.artifact is not None
    path = tmp_path / "compiled.onnx"
    path.write_bytes(compilation.artifact)
    # The graph describes itself with exactly the registered signature...
    assert OnnxRuntime.load(path).signature == signature
    # ...and is served under it.
    return OnnxRuntime.load(path, signature)


def _report_passed(compilation: Compilation, outputs: Sequence[str]) -> None:
    report = compilation.report
    assert report["kept"] is True
    assert report["target"] == "onnx"
    assert report["sample"] == {"source": "generated", "rows": SAMPLE_ROWS, "seed": 0}
    assert report["tolerance"] == {"atol": TOLERANCE.atol, "rtol": TOLERANCE.rtol}
    assert list(report["outputs"]) == list(outputs)
    for check in report["outputs"].values():
        assert check["passed"] is True
        assert check["mismatches"] == 0
    assert report["headline"].startswith(f"outputs match on {SAMPLE_ROWS} generated rows")


@pytest.mark.parametrize(
    "model",
    [LogisticRegression(max_iter=1000), RandomForestClassifier(n_estimators=10, random_state=0)],
    ids=["logistic", "forest"],
)
def test_classifiers_match_their_own_predict(
    model: Any, iris: tuple[Array, Array], fresh_iris: Array, tmp_path: Path
) -> None:
    model.fit(*iris)
    runtime = _sklearn_runtime(model, tmp_path)
    compilation = compile_model(runtime)
    _report_passed(compilation, ["predict", "predict_proba"])
    assert compilation.report["converter"].startswith("skl2onnx ")
    compiled = _compiled(compilation, tmp_path, runtime.signature)

    out = compiled.predict({"input-0": fresh_iris}, ["predict", "predict_proba"])
    assert out["predict"].dtype == np.int64
    assert out["predict"].shape == (len(fresh_iris),)
    np.testing.assert_array_equal(out["predict"], model.predict(fresh_iris))
    assert out["predict_proba"].dtype == np.float32
    assert_close_compiled(out["predict_proba"], model.predict_proba(fresh_iris))
    one = compiled.predict({"input-0": fresh_iris[:1]}, ["predict"])
    np.testing.assert_array_equal(one["predict"], model.predict(fresh_iris[:1]))


def test_a_regressor_keeps_its_float64_output(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    model = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0).fit(x, y)
    runtime = _sklearn_runtime(model, tmp_path)
    assert runtime.signature.outputs == (TensorSpec("predict", "FP64", (-1,)),)
    compilation = compile_model(runtime)
    _report_passed(compilation, ["predict"])
    compiled = _compiled(compilation, tmp_path, runtime.signature)

    fresh = (x + np.random.default_rng(1).normal(scale=0.01, size=x.shape)).astype(np.float32)
    out = compiled.predict({"input-0": fresh}, ["predict"])
    # The graph computes in float32; the signature's FP64 [-1] is what comes out.
    assert out["predict"].dtype == np.float64
    assert out["predict"].shape == (len(fresh),)
    assert_close_compiled(out["predict"], model.predict(fresh))


def test_a_text_pipeline_is_not_compiled(tmp_path: Path) -> None:
    docs = ["good film", "bad film", "great plot", "awful acting", "lovely cast", "dull story"]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, [1, 0, 1, 0, 1, 0])
    runtime = _sklearn_runtime(model, tmp_path)
    compilation = compile_model(runtime)
    assert not compilation.kept
    assert compilation.artifact is None
    assert compilation.report["kept"] is False
    assert "text models are not compiled" in compilation.report["reason"]
    assert compilation.report["headline"] == compilation.report["reason"]
    assert "outputs" not in compilation.report


def test_signature_names_that_collide_with_the_graph_s_own(
    iris: tuple[Array, Array], fresh_iris: Array, tmp_path: Path
) -> None:
    """skl2onnx names its outputs label and probabilities; a signature may use those names."""
    model = LogisticRegression(max_iter=1000).fit(*iris)
    signature = Signature(
        (TensorSpec("probabilities", "FP64", (-1, 4)),),
        (TensorSpec("predict_proba", "FP64", (-1, 3)), TensorSpec("predict", "INT64", (-1,))),
    )
    runtime = _sklearn_runtime(model, tmp_path, signature)
    compilation = compile_model(runtime)
    compiled = _compiled(compilation, tmp_path, signature)
    out = compiled.predict({"probabilities": fresh_iris.astype(np.float64)}, ["predict_proba"])
    assert out["predict_proba"].dtype == np.float64
    assert_close_compiled(out["predict_proba"], model.predict_proba(fresh_iris.astype(np.float64)))


XGBOOST_CASES = {
    "multi:softprob": ({"num_class": 3}, (-1, 3)),
    "multi:softmax": ({"num_class": 3}, (-1,)),
    "binary:logistic": ({}, (-1,)),
    "reg:squarederror": ({}, (-1,)),
}


@pytest.mark.parametrize("objective", list(XGBOOST_CASES))
def test_xgboost_matches_its_own_predict(
    objective: str, iris: tuple[Array, Array], fresh_iris: Array, tmp_path: Path
) -> None:
    x, y = iris
    extra, shape = XGBOOST_CASES[objective]
    label = y if "multi" in objective else (y == 2).astype(np.float32)
    params = {"objective": objective, "max_depth": 3, "nthread": 1, **extra}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=label), num_boost_round=10)
    path = tmp_path / "model.json"
    booster.save_model(path)
    runtime = XGBoostRuntime.load(path)
    assert runtime.signature.outputs[0].shape == shape
    compilation = compile_model(runtime)
    _report_passed(compilation, ["predict"])
    assert compilation.report["converter"].startswith("onnxmltools ")
    compiled = _compiled(compilation, tmp_path, runtime.signature)

    out = compiled.predict({"input-0": fresh_iris}, ["predict"])["predict"]
    want = booster.predict(xgboost.DMatrix(fresh_iris))
    assert out.dtype == np.float32
    assert out.shape == want.shape
    assert_close_compiled(out, want)


LIGHTGBM_CASES = {
    "regression": ({}, (-1,)),
    "binary": ({}, (-1,)),
    "multiclass": ({"num_class": 3}, (-1, 3)),
}


@pytest.mark.parametrize("objective", list(LIGHTGBM_CASES))
def test_lightgbm_matches_its_own_predict(objective: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = {
        "regression": x[:, 0] * 2 + x[:, 1],
        "binary": (x[:, 0] > 0).astype(np.float64),
        "multiclass": np.digitize(x[:, 0], [-0.5, 0.5]).astype(np.float64),
    }[objective]
    extra, shape = LIGHTGBM_CASES[objective]
    params = {"objective": objective, "verbose": -1, "num_threads": 1, **extra}
    booster = lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=15)
    path = tmp_path / "model.txt"
    booster.save_model(path)
    runtime = LightGBMRuntime.load(path)
    assert runtime.signature.outputs[0].shape == shape
    compilation = compile_model(runtime)
    _report_passed(compilation, ["predict"])
    compiled = _compiled(compilation, tmp_path, runtime.signature)

    fresh = rng.normal(size=(200, 5)).astype(np.float32)
    out = compiled.predict({"input-0": fresh}, ["predict"])["predict"]
    want = booster.predict(fresh)
    # LightGBM predicts in float64, and so does the compiled runtime's signature.
    assert out.dtype == np.float64
    assert out.shape == want.shape
    assert_close_compiled(out, want)


def test_a_different_model_fails_verification(iris: tuple[Array, Array], tmp_path: Path) -> None:
    x, y = iris
    model = LogisticRegression(max_iter=1000).fit(x, y)
    other = LogisticRegression(max_iter=1000).fit(x, (y + 1) % 3)  # same signature, wrong labels
    runtime = _sklearn_runtime(model, tmp_path)
    wrong = _compiled(compile_model(_sklearn_runtime(other, tmp_path)), tmp_path, runtime.signature)
    sample, source = verification_sample(runtime.signature, x)
    assert source == "reference"

    checks = verify(runtime, wrong, sample)
    assert set(checks) == {"predict", "predict_proba"}
    assert checks["predict"]["passed"] is False
    assert checks["predict"]["tolerance"] == "exact"
    assert checks["predict"]["mismatches"] > 100
    assert checks["predict_proba"]["passed"] is False
    assert checks["predict_proba"]["max_abs_diff"] > 0.5
    assert checks["predict_proba"]["tolerance"] == {"atol": 1e-5, "rtol": 1e-4}

    right = _compiled(compile_model(runtime), tmp_path, runtime.signature)
    assert all(check["passed"] for check in verify(runtime, right, sample).values())


class FixedRuntime(Runtime):
    """A runtime that answers every input with the same arrays (to compare chosen outputs)."""

    format = "fixed"

    def __init__(self, signature: Signature, answers: Arrays) -> None:
        super().__init__(signature)
        self._answers = answers

    @classmethod
    def load(
        cls, path: Path, signature: Signature | None = None, *, trusted: bool = False
    ) -> FixedRuntime:
        raise NotImplementedError

    def predict(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> Arrays:
        return {name: self._answers[name] for name in outputs}


CLASSES = Signature(
    (TensorSpec("x", "FP32", (-1, 2)),),
    (TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP32", (-1, 2))),
)


def test_labels_may_differ_only_where_the_probabilities_tie() -> None:
    proba = np.array([[0.5, 0.5], [0.2, 0.8], [0.5000001, 0.4999999], [0.9, 0.1]], np.float32)
    original = FixedRuntime(CLASSES, {"predict": np.array([0, 1, 0, 0]), "predict_proba": proba})
    tied = FixedRuntime(CLASSES, {"predict": np.array([1, 1, 1, 0]), "predict_proba": proba + 1e-7})
    sample = {"x": np.zeros((4, 2), np.float32)}
    checks = verify(original, tied, sample)
    assert checks["predict"]["passed"] is True
    assert (checks["predict"]["mismatches"], checks["predict"]["ties"]) == (0, 2)
    assert checks["predict_proba"]["passed"] is True

    wrong = FixedRuntime(CLASSES, {"predict": np.array([0, 0, 0, 0]), "predict_proba": proba})
    checks = verify(original, wrong, sample)
    assert (checks["predict"]["mismatches"], checks["predict"]["ties"]) == (1, 0)
    assert checks["predict"]["passed"] is False


def test_float_tolerance_is_absolute_plus_relative() -> None:
    signature = Signature((TensorSpec("x", "FP32", (-1, 1)),), (TensorSpec("y", "FP64", (-1,)),))
    want = np.array([0.0, 1000.0, 1.0, np.nan, np.inf, 5.0])
    ok = want + np.array([9e-6, 0.09, 1e-4, 0, 0, 0])
    ok[3] = np.nan
    original = FixedRuntime(signature, {"y": want})
    sample = {"x": np.zeros((6, 1), np.float32)}
    check = verify(original, FixedRuntime(signature, {"y": ok}), sample)["y"]
    assert check["passed"] is True, check
    assert check["max_abs_diff"] == pytest.approx(0.09)
    assert check["max_rel_diff"] == pytest.approx(1e-4)

    for index, bad in ((0, 2e-5), (1, 0.2), (3, 1.0), (4, -np.inf)):
        off = want.copy()
        off[index] = want[index] + bad if np.isfinite(want[index]) else bad
        check = verify(original, FixedRuntime(signature, {"y": off}), sample)["y"]
        assert (check["passed"], check["mismatches"]) == (False, 1), (index, check)

    short = FixedRuntime(signature, {"y": want[:5]})
    check = verify(original, short, sample)["y"]
    assert (check["passed"], check["mismatches"], check["note"]) == (
        False,
        6,
        "shape [5] instead of [6]",
    )


def test_generated_sample_is_seeded_and_spread() -> None:
    signature = Signature(
        (
            TensorSpec("f", "FP32", (-1, 3)),
            TensorSpec("i", "INT16", (-1,)),
            TensorSpec("u", "UINT8", (-1, 2)),
            TensorSpec("b", "BOOL", (-1,)),
            TensorSpec("t", "BYTES", (-1,)),
        ),
        (TensorSpec("y", "FP32", (-1,)),),
    )
    sample, source = verification_sample(signature)
    again, _ = verification_sample(signature)
    assert source == "generated"
    assert {k: v.shape for k, v in sample.items()} == {
        "f": (512, 3),
        "i": (512,),
        "u": (512, 2),
        "b": (512,),
        "t": (512,),
    }
    assert {k: v.dtype.str for k, v in sample.items()} == {
        "f": "<f4",
        "i": "<i2",
        "u": "|u1",
        "b": "|b1",
        "t": "|O",
    }
    for name in sample:
        np.testing.assert_array_equal(sample[name], again[name])
    magnitude = np.abs(sample["f"])
    assert 0.01 <= magnitude.min() < 0.1
    assert 10 < magnitude.max() <= 100
    assert (sample["f"] < 0).any()
    assert (sample["f"] > 0).any()
    assert -100 <= sample["i"].min() < -50
    assert 50 < sample["i"].max() <= 100
    assert 0.3 < sample["b"].mean() < 0.7
    assert all(isinstance(t, bytes) and t for t in sample["t"])
    assert not np.array_equal(verification_sample(signature, seed=1)[0]["f"], sample["f"])


def test_reference_rows_are_subsampled_and_converted(iris: tuple[Array, Array]) -> None:
    signature = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP64", (-1,)),))
    many = np.tile(iris[0].astype(np.float64), (5, 1))  # 750 rows
    sample, source = verification_sample(signature, many)
    assert source == "reference"
    assert sample["x"].shape == (512, 4)
    assert sample["x"].dtype == np.float32
    assert {tuple(row) for row in sample["x"]} <= {tuple(row) for row in iris[0]}
    few, _ = verification_sample(signature, {"x": iris[0][:7]})
    np.testing.assert_array_equal(few["x"], iris[0][:7])

    with pytest.raises(InvalidInput, match=r"shape \[150, 3\]; the signature says \[-1, 4\]"):
        verification_sample(signature, iris[0][:, :3])
    with pytest.raises(InvalidInput, match="must be numbers"):
        verification_sample(signature, np.array([["a"] * 4]))
    with pytest.raises(InvalidInput, match=r"for the inputs \['x'\]"):
        verification_sample(signature, {"z": iris[0]})


def test_variable_inner_dimensions_need_reference_rows(
    iris: tuple[Array, Array], tmp_path: Path
) -> None:
    signature = Signature(
        (TensorSpec("input-0", "FP32", (-1, -1)),), (TensorSpec("predict", "INT64", (-1,)),)
    )
    with pytest.raises(Unsupported, match="pass reference rows"):
        verification_sample(signature)
    model = LogisticRegression(max_iter=1000).fit(*iris)
    runtime = _sklearn_runtime(model, tmp_path, signature)
    assert "pass reference rows" in compile_model(runtime).report["reason"]
    kept = compile_model(runtime, reference=iris[0])
    assert kept.kept, kept.report
    assert kept.report["sample"] == {"source": "reference", "rows": 150, "seed": 0}


def test_a_model_that_refuses_the_generated_rows_is_not_compiled(
    iris: tuple[Array, Array], tmp_path: Path
) -> None:
    x = np.round(iris[0])
    # The encoder refuses categories it has not seen, which generated rows are full of.
    model = make_pipeline(OneHotEncoder(), LogisticRegression(max_iter=1000)).fit(x, iris[1])
    runtime = _sklearn_runtime(model, tmp_path)
    compilation = compile_model(runtime)
    assert compilation.artifact is None
    reason = compilation.report["reason"]
    assert reason.startswith("the models could not be run on the generated sample (ValueError:")
    assert reason.endswith("give reference rows that the model accepts")
    assert compile_model(runtime, reference=x).kept


def test_models_without_a_converter_are_not_compiled(tmp_path: Path) -> None:
    runtime = FixedRuntime(CLASSES, {})
    compilation = compile_model(runtime)
    assert compilation.artifact is None
    assert "no ONNX converter for 'fixed' models" in compilation.report["reason"]
    with pytest.raises(InvalidInput, match="cannot compile to 'tflite'"):
        compile_model(runtime, target="tflite")


# Through the registry: push compiles, load_artifact serves the compiled form.


@pytest.fixture
def iris_file(iris: tuple[Array, Array], tmp_path: Path) -> tuple[Path, LogisticRegression]:
    model = LogisticRegression(max_iter=1000).fit(*iris)
    path = tmp_path / "iris.skops"
    skops.io.dump(model, path)
    return path, model


def test_push_compiles_and_load_serves_the_compiled_form(
    registry: Registry,
    iris_file: tuple[Path, LogisticRegression],
    fresh_iris: Array,
) -> None:
    path, model = iris_file
    mv = push_artifact(registry, path, name="iris", created_by="tests", compile="onnx")
    assert mv.compiled is not None
    assert mv.compiled.format == "onnx"
    assert mv.compiled.digest != mv.digest
    assert mv.compile_report is not None
    assert mv.compile_report["kept"] is True
    assert registry.get("iris") == mv

    loaded = load_artifact(registry, mv)
    assert (loaded.compiled, loaded.format, loaded.digest) == (True, "onnx", mv.compiled.digest)
    # scikit-learn refuses NaN and infinity, so the ONNX form is served behind the same refusal.
    assert isinstance(loaded.runtime, RejectNonFinite)
    out = loaded.runtime.predict({"input-0": fresh_iris}, ["predict", "predict_proba"])
    np.testing.assert_array_equal(out["predict"], model.predict(fresh_iris))
    assert_close_compiled(out["predict_proba"], model.predict_proba(fresh_iris))

    original = load_artifact(registry, mv, prefer_compiled=False)
    assert (original.compiled, original.format, original.digest) == (False, "sklearn", mv.digest)
    assert isinstance(original.runtime, SklearnRuntime)
    assert isinstance(load_runtime(registry, mv, prefer_compiled=False), SklearnRuntime)
    assert isinstance(load_runtime(registry, mv), RejectNonFinite)


def test_a_changed_compiled_artifact_is_refused(
    registry: Registry, iris_file: tuple[Path, LogisticRegression]
) -> None:
    mv = push_artifact(registry, iris_file[0], name="iris", created_by="tests", compile="onnx")
    blob = registry.compiled_path(mv)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b" ")
    assert mv.compiled is not None
    with pytest.raises(UntrustedArtifact, match=f"expected {mv.compiled.digest}"):
        load_artifact(registry, mv)
    assert load_artifact(registry, mv, prefer_compiled=False).compiled is False


def test_push_keeps_the_report_when_the_compiled_form_is_not_kept(
    registry: Registry, iris: tuple[Array, Array], tmp_path: Path
) -> None:
    docs = ["good", "bad", "fine", "awful"]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, [1, 0, 1, 0])
    path = tmp_path / "text.skops"
    skops.io.dump(model, path)
    mv = push_artifact(registry, path, name="text", created_by="tests", compile="onnx")
    assert mv.compiled is None
    assert mv.compile_report is not None
    assert "text models are not compiled" in mv.compile_report["reason"]
    assert load_artifact(registry, mv).compiled is False


def test_push_checks_reference_rows(
    registry: Registry, iris_file: tuple[Path, LogisticRegression], iris: tuple[Array, Array]
) -> None:
    path = iris_file[0]
    with pytest.raises(InvalidInput, match="only used to check a compiled model"):
        push_artifact(registry, path, name="iris", created_by="tests", reference=iris[0])
    with pytest.raises(InvalidInput, match="have shape"):
        push_artifact(
            registry, path, name="iris", created_by="tests", compile="onnx", reference=iris[0].T
        )
    with pytest.raises(InvalidInput, match="cannot compile to 'onnx2'"):
        push_artifact(registry, path, name="iris", created_by="tests", compile="onnx2")
    assert registry.models() == []  # nothing registered by a refused push
    mv = push_artifact(
        registry, path, name="iris", created_by="tests", compile="onnx", reference=iris[0]
    )
    assert mv.compile_report is not None
    assert mv.compile_report["sample"]["source"] == "reference"


@pytest.mark.parametrize("compiled_format", ["not-installed", "onnx"])
def test_a_compiled_form_that_cannot_load_here_falls_back_to_the_original(
    registry: Registry,
    iris_file: tuple[Path, LogisticRegression],
    tmp_path: Path,
    compiled_format: str,
) -> None:
    """No runtime for its format, or one that cannot read it (as an older onnxruntime)."""
    path, _ = iris_file
    plain = push_artifact(registry, path, name="iris", created_by="tests")
    other = tmp_path / "other.bin"
    other.write_bytes(b"not a graph this installation can load")
    mv = registry.push(
        path,
        name="iris-2",
        format="sklearn",
        signature=plain.signature,
        metadata={},
        pickle=False,
        trusted_pickle=False,
        created_by="tests",
        source=path.name,
        compiled=other,
        compiled_format=compiled_format,
        compile_report={"kept": True},
    )
    loaded = load_artifact(registry, mv)
    assert (loaded.compiled, loaded.format, loaded.digest) == (False, "sklearn", mv.digest)
