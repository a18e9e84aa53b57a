"""What `serve PATH...` finds on disk, how it names it, and how it registers it."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelport.errors import InvalidInput, UntrustedArtifact
from modelport.intake.model_paths import PathModel, find_models, register_models
from modelport.registry.store import Registry


@pytest.fixture(scope="module")
def skops_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("model") / "iris.skops"
    skops.io.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def names(found: list[PathModel]) -> list[tuple[str, str, bool]]:
    return [(m.name, m.shown, m.mlflow) for m in found]


def test_a_file_is_named_after_its_stem_unless_a_name_is_given(skops_file: Path) -> None:
    assert names(find_models([skops_file])) == [
        ("iris", f"{skops_file.parent.name}/iris.skops", False)
    ]
    assert find_models([skops_file], "flowers")[0].name == "flowers"


def test_a_directory_holds_its_model_files_and_mlflow_directories(
    skops_file: Path, tmp_path: Path
) -> None:
    copy(skops_file, tmp_path / "models" / "b.skops")
    copy(skops_file, tmp_path / "models" / "a.pkl")
    (tmp_path / "models" / "README.md").write_text("# models\n")
    (tmp_path / "models" / "config.json").write_text('{"threshold": 0.5}\n')  # not XGBoost
    (tmp_path / "models" / ".hidden.skops").write_text("")
    (tmp_path / "models" / "churn").mkdir()
    (tmp_path / "models" / "churn" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "models" / "notes").mkdir()
    assert names(find_models([tmp_path / "models"])) == [
        ("a", "models/a.pkl", False),
        ("b", "models/b.skops", False),
        ("churn", "models/churn", True),
    ]


def test_an_mlflow_directory_is_one_model_named_after_it(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "model" / "model.pkl").write_bytes(b"")
    assert names(find_models([tmp_path / "model"])) == [("model", f"{tmp_path.name}/model", True)]
    assert find_models([tmp_path / "model"], "churn")[0].name == "churn"


def test_what_cannot_be_served_or_named_is_refused_with_what_to_do(
    skops_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("nothing\n")
    with pytest.raises(InvalidInput, match="directory 'empty' holds no model: put model files"):
        find_models([tmp_path / "empty"])
    with pytest.raises(InvalidInput, match=r"two models would both be named 'iris' \("):
        find_models([skops_file, copy(skops_file, tmp_path / "other" / "iris.skops")])
    with pytest.raises(InvalidInput, match="the paths hold 2 models"):
        find_models([skops_file, copy(skops_file, tmp_path / "b.skops")], "x")
    bad = copy(skops_file, tmp_path / "-iris.skops")
    with pytest.raises(InvalidInput, match=r"the name comes from .*-iris\.skops.*--model-name"):
        find_models([bad])
    with pytest.raises(InvalidInput, match="invalid model name"):
        find_models([skops_file], "../x")


def test_registering_the_same_bytes_again_serves_the_version_that_holds_them(
    registry: Registry, skops_file: Path, tmp_path: Path
) -> None:
    (first,) = register_models(registry, find_models([skops_file]), created_by="tests")
    (again,) = register_models(registry, find_models([skops_file]), created_by="tests")
    assert (first.name, first.version) == (again.name, again.version) == ("iris", 1)
    assert [mv.version for mv in registry.versions("iris")] == [1]


def test_the_trust_rules_of_push_apply(registry: Registry, tmp_path: Path) -> None:
    import joblib

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    with pytest.raises(UntrustedArtifact, match="--trust-pickle"):
        register_models(registry, find_models([path]), created_by="tests")
    assert registry.models() == []
    (mv,) = register_models(registry, find_models([path]), created_by="tests", trust_pickle=True)
    assert (mv.name, mv.pickle, mv.trusted_pickle) == ("iris", True, True)


def test_an_mlflow_directory_is_imported_with_its_provenance(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow reports usage over the network from import on unless told not to.
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow.sklearn

    x, y = load_iris(return_X_y=True)
    target = tmp_path / "models" / "churn"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(x, y),
        target,
        serialization_format="skops",
        pip_requirements=[],
    )
    (mv,) = register_models(registry, find_models([tmp_path / "models"]), created_by="tests")
    assert (mv.name, mv.source, mv.metadata["mlflow.flavor"]) == ("churn", "model.skops", "sklearn")


def test_a_format_is_given_for_one_model_file_whose_name_does_not_tell_it(
    registry: Registry, skops_file: Path, tmp_path: Path
) -> None:
    odd = copy(skops_file, tmp_path / "iris.model")
    with pytest.raises(InvalidInput, match=r"cannot tell the format of 'iris\.model'.*--format"):
        register_models(registry, find_models([odd]), created_by="tests")
    (mv,) = register_models(registry, find_models([odd], format="sklearn"), created_by="tests")
    assert (mv.name, mv.format) == ("iris", "sklearn")
    with pytest.raises(InvalidInput, match="--format applies to the one model of PATH"):
        find_models([odd, skops_file.parent], format="sklearn")
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(InvalidInput, match="--format applies to a model file"):
        find_models([tmp_path / "mlflow"], format="sklearn")
