"""The XGBoost runtime against XGBoost's own predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_iris, make_regression

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.xgboost import XGBoostRuntime

from ...conftest import assert_close_float32

BATCHES = [1, 9]


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def softprob(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> xgboost.Booster:
    x, y = iris
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1}
    return xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=3)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
@pytest.mark.parametrize("batch", BATCHES)
def test_multiclass_matches_xgboost(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    softprob: xgboost.Booster,
    tmp_path: Path,
    suffix: str,
    batch: int,
) -> None:
    path = tmp_path / f"model{suffix}"
    softprob.save_model(path)
    runtime = XGBoostRuntime.load(path)
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "predict", "datatype": "FP32", "shape": [-1, 3]}],
    }
    x = iris[0][60 : 60 + batch]
    out = runtime.predict({"input-0": x}, ["predict"])
    assert out["predict"].dtype == np.float32
    assert out["predict"].shape == (batch, 3)
    assert_close_float32(out["predict"], softprob.predict(xgboost.DMatrix(x)))


def test_regression_gives_one_value_per_row(tmp_path: Path) -> None:
    x, y = make_regression(n_samples=40, n_features=6, random_state=0)
    x = x.astype(np.float32)
    booster = xgboost.train(
        {"max_depth": 2, "nthread": 1}, xgboost.DMatrix(x, label=y), num_boost_round=3
    )
    booster.save_model(tmp_path / "reg.json")
    runtime = XGBoostRuntime.load(tmp_path / "reg.json")
    assert runtime.signature.outputs == (TensorSpec("predict", "FP32", (-1,)),)
    for batch in BATCHES:
        out = runtime.predict({"input-0": x[:batch]}, ["predict"])
        assert out["predict"].shape == (batch,)
        assert_close_float32(out["predict"], booster.predict(xgboost.DMatrix(x[:batch])))


def test_model_with_feature_names_takes_plain_arrays(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    x, y = iris
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    booster = xgboost.train(
        {"max_depth": 2, "nthread": 1},
        xgboost.DMatrix(x, label=y, feature_names=names),
        num_boost_round=2,
    )
    booster.save_model(tmp_path / "named.json")
    runtime = XGBoostRuntime.load(tmp_path / "named.json")
    out = runtime.predict({"input-0": x[:3]}, ["predict"])
    expected = booster.predict(xgboost.DMatrix(x[:3], feature_names=names))
    assert_close_float32(out["predict"], expected)


def test_prediction_runs_on_one_thread(softprob: xgboost.Booster, tmp_path: Path) -> None:
    softprob.save_model(tmp_path / "m.json")
    runtime = XGBoostRuntime.load(tmp_path / "m.json")
    config = json.loads(runtime._booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"


def test_empty_batch(softprob: xgboost.Booster, tmp_path: Path) -> None:
    softprob.save_model(tmp_path / "m.json")
    runtime = XGBoostRuntime.load(tmp_path / "m.json")
    out = runtime.predict({"input-0": np.empty((0, 4), np.float32)}, ["predict"])
    assert out["predict"].shape == (0, 3)
    assert out["predict"].dtype == np.float32


def test_given_signature_is_used(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    softprob: xgboost.Booster,
    tmp_path: Path,
) -> None:
    softprob.save_model(tmp_path / "m.json")
    signature = Signature(
        (TensorSpec("features", "FP64", (-1, 4)),), (TensorSpec("predict", "FP64", (-1, 3)),)
    )
    runtime = XGBoostRuntime.load(tmp_path / "m.json", signature)
    assert runtime.signature == signature
    x = iris[0][:2].astype(np.float64)
    out = runtime.predict({"features": x}, ["predict"])
    assert out["predict"].dtype == np.float64
    # XGBoost computes in float32 whatever the signature carries.
    assert_close_float32(out["predict"], softprob.predict(xgboost.DMatrix(x)))


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            Signature(
                (TensorSpec("x", "FP32", (-1, 5)),), (TensorSpec("predict", "FP32", (-1, 3)),)
            ),
            "takes 4",
        ),
        (
            Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("predict", "FP32", (-1,)),)),
            "one output",
        ),
        (
            Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("score", "FP32", (-1, 3)),)),
            "one output",
        ),
        (
            Signature(
                (TensorSpec("x", "BYTES", (-1, 4)),), (TensorSpec("predict", "FP32", (-1, 3)),)
            ),
            "numeric",
        ),
    ],
)
def test_incompatible_signature_is_refused(
    softprob: xgboost.Booster, tmp_path: Path, signature: Signature, message: str
) -> None:
    softprob.save_model(tmp_path / "m.json")
    with pytest.raises(InvalidInput, match=message):
        XGBoostRuntime.load(tmp_path / "m.json", signature)


def test_unreadable_file_is_invalid_input_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.ubj"
    path.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(InvalidInput, match=r"broken\.ubj") as info:
        XGBoostRuntime.load(path)
    assert str(tmp_path) not in info.value.message


def test_recognizes_only_xgboost_json(softprob: xgboost.Booster, tmp_path: Path) -> None:
    softprob.save_model(tmp_path / "m.json")
    (tmp_path / "other.json").write_text('{"weights": [1, 2]}')
    assert XGBoostRuntime.recognizes(tmp_path / "m.json")
    assert not XGBoostRuntime.recognizes(tmp_path / "other.json")
