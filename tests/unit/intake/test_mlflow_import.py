"""Directories that mlflow itself wrote import with their provenance; broken ones fail clearly."""

from __future__ import annotations

import os

# mlflow reports usage over the network from import on unless told not to; tests never do.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm
import mlflow.lightgbm
import mlflow.onnx
import mlflow.sklearn
import mlflow.xgboost
import numpy as np
import onnxruntime
import pytest
import xgboost
import yaml
from mlflow.models import Model, infer_signature
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.intake.mlflow_import import import_mlflow_model, read_mlflow_model
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.serving.artifacts import load_runtime

from ...conftest import assert_close_float32, assert_close_float64

RUN_ID = "5f1c0ffee0ddba11"
ROWS = np.random.default_rng(7).normal(size=(60, 4)).astype(np.float32)
LABELS = (ROWS[:, 0] + ROWS[:, 1] > 0).astype(np.int64) + (ROWS[:, 2] > 0.5)
# Saving with explicit (empty) requirements skips mlflow's requirement inference, which
# imports the model in a subprocess and takes seconds per model.
NO_REQUIREMENTS: dict[str, Any] = {"pip_requirements": []}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def logistic() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(ROWS, LABELS)


@pytest.fixture(scope="module")
def sklearn_skops(saved: Path, logistic: LogisticRegression) -> Path:
    """A model as mlflow logs it in a run: run_id, artifact_path and a signature."""
    path = saved / "churn"
    mlflow.sklearn.save_model(
        logistic,
        path,
        serialization_format="skops",
        signature=infer_signature(ROWS, logistic.predict(ROWS)),
        mlflow_model=Model(run_id=RUN_ID, artifact_path="model"),
        **NO_REQUIREMENTS,
    )
    return path


@pytest.fixture(scope="module")
def sklearn_pickle(saved: Path, logistic: LogisticRegression) -> Path:
    """What mlflow.sklearn wrote by default before skops: a cloudpickle file."""
    path = saved / "pickled"
    mlflow.sklearn.save_model(logistic, path, serialization_format="cloudpickle", **NO_REQUIREMENTS)
    return path


@pytest.fixture(scope="module")
def xgboost_booster(saved: Path) -> tuple[Path, Any]:
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgboost.DMatrix(ROWS, label=LABELS),
        num_boost_round=4,
    )
    path = saved / "xgb"
    mlflow.xgboost.save_model(booster, path, **NO_REQUIREMENTS)
    return path, booster


@pytest.fixture(scope="module")
def lightgbm_booster(saved: Path) -> tuple[Path, Any]:
    booster = lightgbm.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5},
        lightgbm.Dataset(ROWS, label=ROWS[:, 0] * 2 + ROWS[:, 3]),
        num_boost_round=4,
    )
    path = saved / "lgb"
    mlflow.lightgbm.save_model(booster, path, **NO_REQUIREMENTS)
    return path, booster


@pytest.fixture(scope="module")
def onnx_forest(saved: Path) -> tuple[Path, bytes]:
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0)
    graph = to_onnx(forest.fit(ROWS, LABELS), ROWS[:1], options={"zipmap": False})
    path = saved / "forest"
    mlflow.onnx.save_model(graph, path, **NO_REQUIREMENTS)
    return path, graph.SerializeToString()


def predicted(registry: Registry, mv: ModelVersion, x: np.ndarray[Any, Any]) -> dict[str, Any]:
    runtime = load_runtime(registry, mv)
    try:
        return runtime.predict({mv.signature.inputs[0].name: x}, mv.signature.output_names)
    finally:
        runtime.close()


def test_sklearn_skops_keeps_the_mlmodel_provenance(
    registry: Registry, sklearn_skops: Path, logistic: LogisticRegression
) -> None:
    mv = import_mlflow_model(registry, sklearn_skops, created_by="tests", metadata={"team": "a"})
    assert (mv.name, mv.version, mv.format, mv.pickle) == ("churn", 1, "sklearn", False)
    assert mv.source == "model.skops"
    spec = yaml.safe_load((sklearn_skops / "MLmodel").read_text())
    assert mv.metadata == {
        "team": "a",
        "mlflow.run_id": RUN_ID,
        "mlflow.artifact_path": "model",
        "mlflow.model_uuid": spec["model_uuid"],
        "mlflow.utc_time_created": spec["utc_time_created"],
        "mlflow.mlflow_version": mlflow.__version__,
        "mlflow.flavor": "sklearn",
        "mlflow.flavor.sklearn_version": spec["flavors"]["sklearn"]["sklearn_version"],
        "mlflow.flavor.serialization_format": "skops",
        "mlflow.python_version": spec["flavors"]["python_function"]["python_version"],
        "mlflow.signature.inputs": spec["signature"]["inputs"],
        "mlflow.signature.outputs": spec["signature"]["outputs"],
    }
    out = predicted(registry, mv, ROWS)
    assert out["predict"].tolist() == logistic.predict(ROWS).tolist()
    assert_close_float32(out["predict_proba"], logistic.predict_proba(ROWS))


def test_a_pickled_sklearn_model_needs_trust(
    registry: Registry, sklearn_pickle: Path, logistic: LogisticRegression
) -> None:
    with pytest.raises(UntrustedArtifact) as caught:
        import_mlflow_model(registry, sklearn_pickle, created_by="tests")
    assert "--trust-pickle" in caught.value.message
    assert registry.models() == []
    mv = import_mlflow_model(registry, sklearn_pickle, created_by="tests", trust_pickle=True)
    assert (mv.pickle, mv.trusted_pickle, mv.source) == (True, True, "model.pkl")
    assert mv.metadata["mlflow.flavor.serialization_format"] == "cloudpickle"
    assert "mlflow.run_id" not in mv.metadata  # saved outside a run
    assert predicted(registry, mv, ROWS)["predict"].tolist() == logistic.predict(ROWS).tolist()


def test_xgboost(registry: Registry, xgboost_booster: tuple[Path, Any]) -> None:
    path, booster = xgboost_booster
    mv = import_mlflow_model(registry, path, created_by="tests")
    assert (mv.name, mv.format, mv.source) == ("xgb", "xgboost", "model.ubj")
    assert mv.metadata["mlflow.flavor"] == "xgboost"
    assert mv.metadata["mlflow.flavor.xgb_version"] == xgboost.__version__
    assert mv.metadata["mlflow.flavor.model_class"] == "xgboost.core.Booster"
    expected = booster.predict(xgboost.DMatrix(ROWS))
    assert_close_float32(predicted(registry, mv, ROWS)["predict"], expected)


def test_lightgbm(registry: Registry, lightgbm_booster: tuple[Path, Any]) -> None:
    path, booster = lightgbm_booster
    mv = import_mlflow_model(registry, path, created_by="tests", name="sales")
    assert (mv.name, mv.format, mv.source) == ("sales", "lightgbm", "model.lgb")
    assert mv.metadata["mlflow.flavor.lgb_version"] == lightgbm.__version__
    assert_close_float64(predicted(registry, mv, ROWS)["predict"], booster.predict(ROWS))


def test_lightgbm_sklearn_wrapper_is_served_as_sklearn(registry: Registry, saved: Path) -> None:
    classifier = lightgbm.LGBMClassifier(n_estimators=4, verbose=-1, n_jobs=1)
    classifier.fit(ROWS, LABELS)
    path = saved / "lgbm-classifier"
    mlflow.lightgbm.save_model(classifier, path, **NO_REQUIREMENTS)
    # skops names LightGBM's classes, which it does not trust by default.
    with pytest.raises(UntrustedArtifact, match="--trust-pickle"):
        import_mlflow_model(registry, path, created_by="tests")
    mv = import_mlflow_model(registry, path, created_by="tests", trust_pickle=True)
    assert (mv.format, mv.metadata["mlflow.flavor"]) == ("sklearn", "lightgbm")
    out = predicted(registry, mv, ROWS)
    assert out["predict"].tolist() == classifier.predict(ROWS).tolist()


def test_onnx(registry: Registry, onnx_forest: tuple[Path, bytes]) -> None:
    path, graph = onnx_forest
    mv = import_mlflow_model(registry, path, created_by="tests")
    assert (mv.format, mv.source, mv.pickle) == ("onnx", "model.onnx", False)
    assert mv.metadata["mlflow.flavor.onnx_version"]
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: ROWS})
    out = predicted(registry, mv, ROWS)
    assert out["label"].tolist() == labels.tolist()
    assert_close_float32(out["probabilities"], probabilities)


def test_compile_and_user_metadata_pass_through(
    registry: Registry, lightgbm_booster: tuple[Path, Any]
) -> None:
    path, _ = lightgbm_booster
    mv = import_mlflow_model(
        registry, path, created_by="tests", compile="onnx", metadata={"ticket": "ML-7"}
    )
    assert mv.compiled is not None
    assert mv.compiled.format == "onnx"
    assert mv.metadata["ticket"] == "ML-7"
    with pytest.raises(InvalidInput, match=r"'mlflow\.run_id'"):
        import_mlflow_model(registry, path, created_by="tests", metadata={"mlflow.run_id": "x"})


def test_the_native_flavour_is_preferred(sklearn_skops: Path) -> None:
    model = read_mlflow_model(sklearn_skops)
    assert (model.flavour, model.format) == ("sklearn", "sklearn")
    assert model.artifact == (sklearn_skops / "model.skops").resolve()


# -- directories that are not what they claim ------------------------------------------------


@pytest.fixture
def edited(
    tmp_path: Path, sklearn_skops: Path
) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """A copy of a real MLflow directory whose MLmodel is changed by the given function."""

    def edit(change: Callable[[dict[str, Any]], None]) -> Path:
        path = tmp_path / "copy" / "model"
        shutil.copytree(sklearn_skops, path)
        spec = yaml.safe_load((path / "MLmodel").read_text())
        change(spec)
        (path / "MLmodel").write_text(yaml.safe_dump(spec))
        return path

    return edit


def test_no_mlmodel(registry: Registry, tmp_path: Path, sklearn_skops: Path) -> None:
    run = tmp_path / "artifacts"
    shutil.copytree(sklearn_skops, run / "model")
    with pytest.raises(InvalidInput) as caught:
        import_mlflow_model(registry, run, created_by="tests")
    assert "'artifacts' has no MLmodel file; it is in 'model/'" in caught.value.message
    (run / "model" / "MLmodel").unlink()
    with pytest.raises(InvalidInput, match="'artifacts' has no MLmodel file; give"):
        import_mlflow_model(registry, run, created_by="tests")
    assert registry.models() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flavors: {sklearn: [unclosed\n", "MLmodel is not valid YAML (.* at line 2)"),
        ("just words\n", "MLmodel is not a YAML mapping"),
        ("mlflow_version: 3.0.0\n", "MLmodel has no 'flavors' section"),
        ("flavors: !!python/object:os.system {}\n", "MLmodel is not valid YAML"),
    ],
)
def test_unreadable_mlmodel(registry: Registry, tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "MLmodel").write_text(text)
    with pytest.raises(InvalidInput, match=message):
        import_mlflow_model(registry, tmp_path, created_by="tests", name="m")


def test_no_supported_flavour(registry: Registry, edited: Any) -> None:
    def keep_only_pyfunc(spec: dict[str, Any]) -> None:
        spec["flavors"]["pytorch"] = {"model_data": "data"}
        del spec["flavors"]["sklearn"]

    with pytest.raises(InvalidInput) as caught:
        import_mlflow_model(registry, edited(keep_only_pyfunc), created_by="tests")
    assert "it has python_function, pytorch" in caught.value.message
    assert "modelport imports onnx, xgboost, lightgbm, sklearn" in caught.value.message


def test_missing_artifact(registry: Registry, edited: Any) -> None:
    path = edited(lambda spec: None)
    (path / "model.skops").unlink()
    with pytest.raises(InvalidInput, match=r"model file 'model\.skops' is missing from 'model'"):
        import_mlflow_model(registry, path, created_by="tests")


def test_flavour_without_a_file_name(registry: Registry, edited: Any) -> None:
    path = edited(lambda spec: spec["flavors"]["sklearn"].pop("pickled_model"))
    with pytest.raises(InvalidInput, match="names no model file"):
        import_mlflow_model(registry, path, created_by="tests")


@pytest.mark.parametrize("escape", ["../outside.skops", "/etc/hostname", "link.skops"])
def test_file_names_stay_inside_the_directory(
    registry: Registry, edited: Any, tmp_path: Path, escape: str
) -> None:
    def point_out(spec: dict[str, Any]) -> None:
        spec["flavors"]["sklearn"]["pickled_model"] = escape

    path = edited(point_out)
    outside = path.parent / "outside.skops"
    shutil.copy(path / "model.skops", outside)
    (path / "link.skops").symlink_to(outside)
    with pytest.raises(InvalidInput, match="points outside the model directory"):
        import_mlflow_model(registry, path, created_by="tests")
    assert registry.models() == []


def test_a_directory_name_that_is_no_model_name(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "my model"
    path.mkdir()
    with pytest.raises(InvalidInput, match="pass --name"):
        import_mlflow_model(registry, path, created_by="tests")
