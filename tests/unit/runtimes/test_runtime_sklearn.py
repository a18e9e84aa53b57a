"""The scikit-learn runtime against scikit-learn's own predictions."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.sklearn import SklearnRuntime, is_skops_file

from ...conftest import assert_close_float32

BATCHES = [1, 7]
TEXTS = ["a good movie", "a bad film", "great fun", "awful and dull", "good fun", "bad acting"]
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def iris_model(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=300).fit(x, y)


def _dump(model: Any, path: Path) -> Path:
    if path.suffix == ".skops":
        skops.io.dump(model, path)
    elif path.suffix == ".joblib":
        joblib.dump(model, path)
    else:
        path.write_bytes(pickle.dumps(model))
    return path


def test_iris_signature_is_the_demo_contract(
    iris_model: LogisticRegression, tmp_path: Path
) -> None:
    runtime = SklearnRuntime.load(_dump(iris_model, tmp_path / "iris.skops"))
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }


@pytest.mark.parametrize("filename", ["iris.skops", "iris.joblib", "iris.pkl"])
@pytest.mark.parametrize("batch", BATCHES)
def test_predictions_match_sklearn(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    iris_model: LogisticRegression,
    tmp_path: Path,
    filename: str,
    batch: int,
) -> None:
    runtime = SklearnRuntime.load(_dump(iris_model, tmp_path / filename))
    x = iris[0][45 : 45 + batch]
    out = runtime.predict({"input-0": x}, ["predict", "predict_proba"])
    assert out["predict"].dtype == np.int64
    assert out["predict"].shape == (batch,)
    np.testing.assert_array_equal(out["predict"], iris_model.predict(x))
    assert out["predict_proba"].dtype == np.float32
    assert out["predict_proba"].shape == (batch, 3)
    assert_close_float32(out["predict_proba"], iris_model.predict_proba(x))


def test_only_requested_outputs_are_returned(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    iris_model: LogisticRegression,
    tmp_path: Path,
) -> None:
    runtime = SklearnRuntime.load(_dump(iris_model, tmp_path / "iris.skops"))
    out = runtime.predict({"input-0": iris[0][:3]}, ["predict_proba"])
    assert set(out) == {"predict_proba"}


def test_empty_batch_gives_empty_outputs(iris_model: LogisticRegression, tmp_path: Path) -> None:
    runtime = SklearnRuntime.load(_dump(iris_model, tmp_path / "iris.skops"))
    out = runtime.predict({"input-0": np.empty((0, 4), np.float32)}, ["predict", "predict_proba"])
    assert out["predict"].shape == (0,)
    assert out["predict"].dtype == np.int64
    assert out["predict_proba"].shape == (0, 3)


def test_untrusted_skops_types_are_refused_unless_trusted(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    x, y = iris
    forest = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0)
    ).fit(x, y)
    path = _dump(forest, tmp_path / "forest.skops")
    with pytest.raises(UntrustedArtifact, match=r"sklearn\.tree\._tree\.Tree") as info:
        SklearnRuntime.load(path)
    assert "--trust-pickle" in info.value.message
    assert str(tmp_path) not in info.value.message

    runtime = SklearnRuntime.load(path, trusted=True)
    out = runtime.predict({"input-0": x[:5]}, ["predict"])
    np.testing.assert_array_equal(out["predict"], forest.predict(x[:5]))


@pytest.mark.parametrize("batch", [1, 4])
def test_text_pipeline_takes_bytes(tmp_path: Path, batch: int) -> None:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)
    runtime = SklearnRuntime.load(_dump(model, tmp_path / "text.skops"))
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }
    texts = ["good fun film", "dull acting", "great movie", "bad bad bad"][:batch]
    x = np.array([t.encode() for t in texts], dtype=object)
    out = runtime.predict({"input-0": x}, ["predict", "predict_proba"])
    assert out["predict"].dtype == object
    assert list(out["predict"]) == [label.encode() for label in model.predict(texts)]
    # Computed in float64, rounded to the signature's FP32.
    assert_close_float32(out["predict_proba"], model.predict_proba(texts))


def test_text_input_must_be_utf8(tmp_path: Path) -> None:
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)
    runtime = SklearnRuntime.load(_dump(model, tmp_path / "text.skops"))
    with pytest.raises(InvalidInput, match="UTF-8"):
        runtime.predict({"input-0": np.array([b"\xff\xfe"], dtype=object)}, ["predict"])


@pytest.mark.parametrize(("n_targets", "shape"), [(1, [-1]), (2, [-1, 2])])
def test_regressor_predicts_fp64(tmp_path: Path, n_targets: int, shape: list[int]) -> None:
    x, y = make_regression(n_samples=30, n_features=5, n_targets=n_targets, random_state=0)
    x = x.astype(np.float32)
    model = LinearRegression().fit(x, y)
    runtime = SklearnRuntime.load(_dump(model, tmp_path / "reg.skops"))
    assert runtime.signature.to_dict()["outputs"] == [
        {"name": "predict", "datatype": "FP64", "shape": shape}
    ]
    for batch in BATCHES:
        out = runtime.predict({"input-0": x[:batch]}, ["predict"])
        assert out["predict"].dtype == np.float64
        # Fitted on float32 rows, the model computes in float32: FP64 is only the carrier.
        assert_close_float32(out["predict"], model.predict(x[:batch]))


def test_given_signature_is_used(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    iris_model: LogisticRegression,
    tmp_path: Path,
) -> None:
    signature = Signature(
        (TensorSpec("features", "FP32", (-1, 4)),),
        (TensorSpec("predict_proba", "FP64", (-1, 3)),),
    )
    runtime = SklearnRuntime.load(_dump(iris_model, tmp_path / "iris.skops"), signature)
    assert runtime.signature == signature
    out = runtime.predict({"features": iris[0][:2]}, ["predict_proba"])
    assert out["predict_proba"].dtype == np.float64
    # The float32 model's probabilities, widened: the float32 rule.
    assert_close_float32(out["predict_proba"], iris_model.predict_proba(iris[0][:2]))


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            Signature(
                (TensorSpec("x", "FP32", (-1, 5)),), (TensorSpec("predict", "INT64", (-1,)),)
            ),
            "fitted on 4",
        ),
        (
            Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("embed", "FP32", (-1,)),)),
            "embed",
        ),
        (
            Signature(
                (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "FP32", (-1, 2))),
                (TensorSpec("predict", "INT64", (-1,)),),
            ),
            "exactly one input",
        ),
        (
            Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("predict", "INT64", (-1,)),)),
            "two-dimensional",
        ),
    ],
)
def test_incompatible_signature_is_refused(
    iris_model: LogisticRegression, tmp_path: Path, signature: Signature, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        SklearnRuntime.load(_dump(iris_model, tmp_path / "iris.skops"), signature)


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no predict method"):
        SklearnRuntime.load(_dump(StandardScaler().fit([[0.0], [1.0]]), tmp_path / "s.joblib"))


def test_skops_suffix_is_never_unpickled(iris_model: LogisticRegression, tmp_path: Path) -> None:
    path = tmp_path / "disguised.skops"
    path.write_bytes(pickle.dumps(iris_model))
    assert not is_skops_file(path)
    with pytest.raises(InvalidInput, match="not a skops archive"):
        SklearnRuntime.load(path)


def test_is_skops_file(iris_model: LogisticRegression, tmp_path: Path) -> None:
    assert is_skops_file(_dump(iris_model, tmp_path / "m.skops"))
    assert not is_skops_file(_dump(iris_model, tmp_path / "m.joblib"))
    assert not is_skops_file(tmp_path / "missing.skops")


def test_unreadable_pickle_does_not_leak_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(InvalidInput, match=r"broken\.pkl") as info:
        SklearnRuntime.load(path)
    assert str(tmp_path) not in info.value.message
