"""`modelport models import-mlflow`: a directory mlflow saved becomes a served version."""

from __future__ import annotations

import os

# mlflow reports usage over the network from import on unless told not to; tests never do.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import json
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pytest
from mlflow.models import Model
from sklearn.linear_model import LogisticRegression

import modelport

from .conftest import run

ROWS = np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def classifier() -> LogisticRegression:
    return LogisticRegression().fit(ROWS, (ROWS[:, 0] > 0).astype(np.int64))


@pytest.fixture(scope="module")
def pickled_dir(tmp_path_factory: pytest.TempPathFactory, classifier: LogisticRegression) -> Path:
    """A cloudpickle file, as mlflow.sklearn wrote by default before skops; run id recorded."""
    path = tmp_path_factory.mktemp("run") / "fraud"
    mlflow.sklearn.save_model(
        classifier,
        path,
        serialization_format="cloudpickle",
        pip_requirements=[],
        mlflow_model=Model(run_id="abc123"),
    )
    return path


def test_import_prints_the_version_and_keeps_provenance(
    tmp_path: Path, pickled_dir: Path, classifier: LogisticRegression
) -> None:
    registry = str(tmp_path / "registry")
    refused = run("models", "import-mlflow", str(pickled_dir), "--registry", registry)
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.startswith("error: 'model.pkl' can run arbitrary code when loaded")
    assert "--trust-pickle" in refused.stderr
    assert "Traceback" not in refused.output

    imported = run(
        "models", "import-mlflow", str(pickled_dir), "--trust-pickle",
        "--meta", "team=risk", "--registry", registry,
    )  # fmt: skip
    assert imported.exit_code == 0, (imported.output, imported.exception)
    assert imported.stdout == "1\n"
    assert imported.stderr == "imported model.pkl of the MLflow sklearn flavour (run abc123)\n"

    shown = json.loads(run("models", "show", "fraud", "--json", "--registry", registry).stdout)
    assert shown["format"] == "sklearn"
    assert shown["trusted_pickle"] is True
    assert shown["metadata"]["team"] == "risk"
    assert shown["metadata"]["mlflow.run_id"] == "abc123"
    assert shown["metadata"]["mlflow.flavor"] == "sklearn"
    assert shown["metadata"]["mlflow.mlflow_version"] == mlflow.__version__

    model = modelport.load("fraud", registry=registry)
    try:
        predicted = model.predict(ROWS)["predict"]
    finally:
        model.close()
    assert predicted.tolist() == classifier.predict(ROWS).tolist()


def test_json_output_and_a_chosen_name(tmp_path: Path, pickled_dir: Path) -> None:
    registry = str(tmp_path / "registry")
    out = run(
        "models", "import-mlflow", str(pickled_dir), "--name", "fraud-v2", "--trust-pickle",
        "--json", "--registry", registry,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    pushed = json.loads(out.stdout)
    assert (pushed["name"], pushed["version"], pushed["source"]) == ("fraud-v2", 1, "model.pkl")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--meta", "mlflow.run_id=forged"], ["'mlflow.run_id'", "provenance"]),
        (["--reference", __file__], ["--reference is only used with --compile"]),
    ],
)
def test_bad_options(tmp_path: Path, pickled_dir: Path, extra: list[str], words: list[str]) -> None:
    registry = str(tmp_path / "registry")
    out = run(
        "models", "import-mlflow", str(pickled_dir), "--trust-pickle", *extra,
        "--registry", registry,
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    for word in words:
        assert word in out.stderr, out.stderr


def test_a_directory_without_mlmodel(tmp_path: Path) -> None:
    out = run("models", "import-mlflow", str(tmp_path), "--registry", str(tmp_path / "registry"))
    assert out.exit_code == 1
    assert out.stderr.startswith(f"error: {tmp_path.name!r} has no MLmodel file")


def test_help_has_an_example() -> None:
    out = run("models", "import-mlflow", "--help")
    assert out.exit_code == 0
    assert "modelport models import-mlflow ./mlruns/" in out.stdout
    assert "--trust-pickle" in out.stdout
    assert "import-mlflow" in run("models", "--help").stdout
