"""The models that paths on disk hold, for `modelport serve PATH...`, and their registration.

A path is a model file (any format `models push` tells from its name and content), an MLflow
model directory (one holding an MLmodel file), or a directory of models such as KServe's
`/mnt/models` or SageMaker's `/opt/ml/model`: each model file directly inside it, and each
subdirectory holding an MLmodel file, is one model. Files that are no model (a README, a
`requirements.txt`, a JSON file that is not an XGBoost model) are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import Conflict, InvalidInput, Unsupported
from modelport.intake.mlflow_import import MLMODEL, import_mlflow_model, read_mlflow_model
from modelport.intake.push import push_artifact
from modelport.registry.manifest import ModelVersion, check_model_name
from modelport.registry.store import Registry
from modelport.registry.trust import sha256_file
from modelport.runtimes.discovery import detect_format


@dataclass(frozen=True, slots=True)
class PathModel:
    """One model found on disk: the name it is served under and where it is."""

    name: str
    path: Path
    """The model file, or the MLflow model directory."""
    mlflow: bool
    """True when `path` is an MLflow model directory (imported as `models import-mlflow`)."""
    format: str | None = None
    """The model file's format as `models push --format` takes it; None: told from the file."""

    @property
    def shown(self) -> str:
        """How messages name the model's file or directory: its parent's name and its own."""
        parent = self.path.parent.name
        return f"{parent}/{self.path.name}" if parent else self.path.name


def find_models(
    paths: Sequence[Path], model_name: str | None = None, format: str | None = None
) -> list[PathModel]:
    """The models `paths` hold, each named after its file's stem (an MLflow directory: its name).

    `model_name` names the model instead, and `format` gives a model file's format (for a
    file whose name does not tell it); each is only allowed when the paths hold exactly one
    model. InvalidInput for a path that is neither a model file nor a directory holding
    models, a name that is not a valid model name, and two models that would get the same name.
    """
    found = [model for path in paths for model in _models_in(path)]
    for flag, value in (("--model-name", model_name), ("--format", format)):
        if value is not None and len(found) != 1:
            names = ", ".join(m.shown for m in found)
            raise InvalidInput(
                f"{flag} applies to the one model of PATH, but the paths hold {len(found)} "
                f"models ({names}); leave it out, or give one model's PATH"
            )
    if format is not None:
        if found[0].mlflow:
            raise InvalidInput(
                "--format applies to a model file; an MLflow model directory's MLmodel file "
                "names its format"
            )
        found = [dataclasses.replace(found[0], format=format)]
    if model_name is not None:
        found = [dataclasses.replace(found[0], name=check_model_name(model_name))]
    for model in found:
        _check_name(model)
    seen: dict[str, PathModel] = {}
    for model in found:
        other = seen.setdefault(model.name, model)
        if other is not model:
            raise InvalidInput(
                f"two models would both be named {model.name!r} ({other.shown} and "
                f"{model.shown}): a model is named after its file; rename one of them, or "
                "serve each with its own --model-name"
            )
    return found


def register_models(
    registry: Registry,
    models: Sequence[PathModel],
    *,
    created_by: str,
    trust_pickle: bool = False,
) -> list[ModelVersion]:
    """Register each model as `models push` (MLflow directories: `models import-mlflow`) does.

    The trust rules are theirs: a pickle-family artifact is refused with UntrustedArtifact
    unless `trust_pickle`. A model whose registry already holds the same bytes is not pushed
    again; its existing version is returned.
    """
    versions: list[ModelVersion] = []
    for model in models:
        try:
            if model.mlflow:
                mv = import_mlflow_model(
                    registry,
                    model.path,
                    name=model.name,
                    created_by=created_by,
                    trust_pickle=trust_pickle,
                )
            else:
                mv = push_artifact(
                    registry,
                    model.path,
                    name=model.name,
                    created_by=created_by,
                    format=model.format,
                    trust_pickle=trust_pickle,
                )
        except Conflict:
            same = _same_bytes(registry, model)
            if same is None:
                raise
            mv = same
        versions.append(mv)
    return versions


def _models_in(path: Path) -> list[PathModel]:
    if path.is_file():
        return [PathModel(path.stem, path, mlflow=False)]
    if not path.is_dir():
        raise InvalidInput(f"{path.name!r} is neither a model file nor a directory")
    if (path / MLMODEL).is_file():
        return [PathModel(path.resolve().name, path, mlflow=True)]
    found: list[PathModel] = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and (entry / MLMODEL).is_file():
            found.append(PathModel(entry.name, entry, mlflow=True))
        elif entry.is_file() and _is_model_file(entry):
            found.append(PathModel(entry.stem, entry, mlflow=False))
    if not found:
        raise InvalidInput(
            f"directory {path.resolve().name!r} holds no model: put model files (.skops, "
            ".joblib, .pkl, .onnx, .ubj, .json, .txt, .cloudpickle, ...) or MLflow model "
            "directories directly in it, or give the model file itself"
        )
    return found


def _is_model_file(path: Path) -> bool:
    try:
        detect_format(path)
    except (InvalidInput, Unsupported):
        return False
    return True


def _check_name(model: PathModel) -> None:
    try:
        check_model_name(model.name)
    except InvalidInput as exc:
        raise InvalidInput(
            f"{exc.message}; the name comes from {model.shown!r}: rename it, or pass --model-name"
        ) from None


def _same_bytes(registry: Registry, model: PathModel) -> ModelVersion | None:
    """The version of `model.name` holding the artifact's bytes, which the push found."""
    artifact = read_mlflow_model(model.path).artifact if model.mlflow else model.path
    digest = sha256_file(artifact)
    return next((mv for mv in registry.versions(model.name) if mv.digest == digest), None)
