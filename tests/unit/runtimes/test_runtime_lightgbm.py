"""The LightGBM runtime against LightGBM's own predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from modelport.errors import InvalidInput
from modelport.protocol.signature import Signature, TensorSpec
from modelport.runtimes.lightgbm import LightGBMRuntime

from ...conftest import assert_close_float32, assert_close_float64

BATCHES = [1, 8]
PARAMS = {"num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}


def _train(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], **params: Any) -> lightgbm.Booster:
    return lightgbm.train({**PARAMS, **params}, lightgbm.Dataset(x, label=y), num_boost_round=3)


@pytest.fixture(scope="module")
def multiclass() -> tuple[lightgbm.Booster, np.ndarray[Any, Any]]:
    x, y = make_classification(
        n_samples=90, n_features=5, n_informative=3, n_classes=3, random_state=0
    )
    x = x.astype(np.float32)
    return _train(x, y, objective="multiclass", num_class=3), x


@pytest.mark.parametrize("batch", BATCHES)
def test_multiclass_matches_lightgbm(
    multiclass: tuple[lightgbm.Booster, np.ndarray[Any, Any]], tmp_path: Path, batch: int
) -> None:
    booster, x = multiclass
    booster.save_model(tmp_path / "m.txt")
    runtime = LightGBMRuntime.load(tmp_path / "m.txt")
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1, 3]}],
    }
    out = runtime.predict({"input-0": x[:batch]}, ["predict"])
    assert out["predict"].dtype == np.float64
    assert out["predict"].shape == (batch, 3)
    # LightGBM computes in float64 throughout.
    assert_close_float64(out["predict"], booster.predict(x[:batch]))


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_single_output_models(tmp_path: Path, objective: str) -> None:
    if objective == "binary":
        x, y = make_classification(n_samples=60, n_features=4, random_state=0)
    else:
        x, y = make_regression(n_samples=60, n_features=4, random_state=0)
    x = x.astype(np.float32)
    booster = _train(x, y, objective=objective)
    booster.save_model(tmp_path / "m.lgb")
    runtime = LightGBMRuntime.load(tmp_path / "m.lgb")
    assert runtime.signature.outputs == (TensorSpec("predict", "FP64", (-1,)),)
    for batch in BATCHES:
        out = runtime.predict({"input-0": x[:batch]}, ["predict"])
        assert out["predict"].shape == (batch,)
        assert_close_float64(out["predict"], booster.predict(x[:batch]))


def test_empty_batch(
    multiclass: tuple[lightgbm.Booster, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    multiclass[0].save_model(tmp_path / "m.txt")
    runtime = LightGBMRuntime.load(tmp_path / "m.txt")
    out = runtime.predict({"input-0": np.empty((0, 5), np.float32)}, ["predict"])
    assert out["predict"].shape == (0, 3)


def test_given_signature_is_used(
    multiclass: tuple[lightgbm.Booster, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    booster, x = multiclass
    booster.save_model(tmp_path / "m.txt")
    signature = Signature(
        (TensorSpec("features", "FP32", (-1, 5)),), (TensorSpec("predict", "FP32", (-1, 3)),)
    )
    runtime = LightGBMRuntime.load(tmp_path / "m.txt", signature)
    assert runtime.signature == signature
    out = runtime.predict({"features": x[:4]}, ["predict"])
    assert out["predict"].dtype == np.float32
    # Rounded to the signature's FP32: the float32 rule.
    assert_close_float32(out["predict"], booster.predict(x[:4]))


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            Signature(
                (TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("predict", "FP64", (-1, 3)),)
            ),
            "takes 5",
        ),
        (
            Signature((TensorSpec("x", "FP32", (-1, 5)),), (TensorSpec("predict", "FP64", (-1,)),)),
            "one output",
        ),
    ],
)
def test_incompatible_signature_is_refused(
    multiclass: tuple[lightgbm.Booster, np.ndarray[Any, Any]],
    tmp_path: Path,
    signature: Signature,
    message: str,
) -> None:
    multiclass[0].save_model(tmp_path / "m.txt")
    with pytest.raises(InvalidInput, match=message):
        LightGBMRuntime.load(tmp_path / "m.txt", signature)


def test_unreadable_file_is_invalid_input_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.txt"
    path.write_text("tree\nthis is not a model\n")
    with pytest.raises(InvalidInput, match=r"broken\.txt") as info:
        LightGBMRuntime.load(path)
    assert str(tmp_path) not in info.value.message


def test_recognizes_lightgbm_text(
    multiclass: tuple[lightgbm.Booster, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    multiclass[0].save_model(tmp_path / "m.txt")
    (tmp_path / "readme.txt").write_text("hello")
    assert LightGBMRuntime.recognizes(tmp_path / "m.txt")
    assert not LightGBMRuntime.recognizes(tmp_path / "readme.txt")
