"""Finding a runtime by format name or dotted path, and a format by file name and content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelport.errors import InvalidInput, Unsupported
from modelport.runtimes.base import Runtime
from modelport.runtimes.discovery import available_formats, detect_format, runtime_class
from modelport.runtimes.lightgbm import LightGBMRuntime
from modelport.runtimes.onnx import OnnxRuntime
from modelport.runtimes.python import PythonRuntime
from modelport.runtimes.sklearn import SklearnRuntime
from modelport.runtimes.xgboost import XGBoostRuntime

BUILT_INS = {
    "sklearn": SklearnRuntime,
    "xgboost": XGBoostRuntime,
    "lightgbm": LightGBMRuntime,
    "onnx": OnnxRuntime,
    "python": PythonRuntime,
}
HERE = Path(__file__).parent


@pytest.mark.parametrize(("name", "cls"), BUILT_INS.items())
def test_built_in_formats_resolve_by_entry_point(name: str, cls: type[Runtime]) -> None:
    assert runtime_class(name) is cls
    assert cls.format == name


def test_available_formats_lists_built_ins_first() -> None:
    formats = available_formats()
    assert set(formats[: len(BUILT_INS)]) == set(BUILT_INS)


def test_unknown_format_is_unsupported_and_lists_the_formats() -> None:
    with pytest.raises(Unsupported) as info:
        runtime_class("tensorflow")
    for name in BUILT_INS:
        assert name in info.value.message


def test_custom_runtime_by_dotted_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    cls = runtime_class("custom_runtime_example:LinearJsonRuntime")
    assert issubclass(cls, Runtime)
    assert cls.__name__ == "LinearJsonRuntime"

    artifact = tmp_path / "model.linear.json"
    artifact.write_text(json.dumps({"weights": [1.0, -2.0, 0.5], "bias": 3.0}))
    runtime = cls.load(artifact)
    assert runtime.signature.to_dict() == {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
    }
    x = np.array([[1, 1, 1], [0, 2, 4]], dtype=np.float32)
    out = runtime.predict({"input-0": x}, ["predict"])
    # Small whole numbers and halves: every partial sum is exact, in any order.
    np.testing.assert_array_equal(out["predict"], [2.5, 1.0])


def test_dotted_path_to_a_class_that_is_not_a_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    with pytest.raises(InvalidInput, match="not a subclass"):
        runtime_class("custom_runtime_example:NotARuntime")


def test_dotted_path_to_an_abstract_runtime() -> None:
    with pytest.raises(InvalidInput, match="abstract"):
        runtime_class("modelport.runtimes.base:Runtime")


def test_dotted_path_to_a_missing_module_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="no_such_module_here"):
        runtime_class("no_such_module_here:Runtime")


def test_dotted_path_to_a_missing_attribute() -> None:
    with pytest.raises(InvalidInput, match="NoSuchClass"):
        runtime_class("modelport.runtimes.base:NoSuchClass")


@pytest.mark.parametrize("name", ["../evil:Cls", "a:b:c", "mod:", ":Cls", "a b:C"])
def test_malformed_dotted_path(name: str) -> None:
    with pytest.raises(InvalidInput, match=r"package\.module:Class"):
        runtime_class(name)


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("model.skops", b"", "sklearn"),
        ("model.joblib", b"", "sklearn"),
        ("model.pkl", b"", "sklearn"),
        ("model.pickle", b"", "sklearn"),
        ("MODEL.ONNX", b"", "onnx"),
        ("model.ubj", b"{", "xgboost"),
        ("model.json", b'{"learner":{"attributes":{}},"version":[2,1,0]}', "xgboost"),
        ("model.txt", b"tree\nversion=v4\nnum_class=1\n", "lightgbm"),
        ("model.lgb", b"tree\nversion=v4\n", "lightgbm"),
        ("model.cloudpickle", b"", "python"),
    ],
)
def test_detect_format_by_suffix_and_content(
    tmp_path: Path, filename: str, content: bytes, expected: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    assert detect_format(path) == expected


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("config.json", b'{"name": "not a model"}'),
        ("notes.txt", b"some notes, not a tree"),
        ("data.csv", b"a,b\n1,2\n"),
        ("model", b""),
    ],
)
def test_detect_format_asks_for_format(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match="--format") as info:
        detect_format(path)
    assert str(tmp_path) not in info.value.message


def test_detect_format_on_real_model_files(tmp_path: Path) -> None:
    import lightgbm
    import xgboost
    from sklearn.datasets import make_regression

    x, y = make_regression(n_samples=40, n_features=3, random_state=0)
    booster = xgboost.train(
        {"max_depth": 2, "nthread": 1}, xgboost.DMatrix(x, label=y), num_boost_round=2
    )
    booster.save_model(tmp_path / "xgb.json")
    lgb = lightgbm.train(
        {"num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(x, label=y),
        num_boost_round=2,
    )
    lgb.save_model(tmp_path / "lgb.txt")
    assert detect_format(tmp_path / "xgb.json") == "xgboost"
    assert detect_format(tmp_path / "lgb.txt") == "lightgbm"
