"""MLflow model directories: read MLmodel, pick the native flavour, push its artifact.

A directory written by `mlflow.<flavour>.save_model` (or downloaded from a run) holds an `MLmodel`
YAML file that names the flavours the model can be loaded as and, for each, the file inside the
directory that holds the model. modelport serves the native file of the scikit-learn, XGBoost,
LightGBM and ONNX flavours with its own runtimes (never MLflow's python_function loader, which
would need MLflow and the model's code), and keeps MLflow's record of the model as version
metadata under `mlflow.` keys.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from modelport.errors import InvalidInput
from modelport.intake.compilation import Reference
from modelport.intake.push import push_artifact
from modelport.registry.manifest import ModelVersion, check_model_name
from modelport.registry.store import Registry
from modelport.runtimes.discovery import runtime_class

MLMODEL: Final = "MLmodel"
"""The file that makes a directory an MLflow model."""

META_PREFIX: Final = "mlflow."
"""Prefix of the metadata keys that hold MLflow's provenance; user metadata may not use it."""


@dataclass(frozen=True, slots=True)
class _Flavour:
    format: str
    """The runtime that serves the flavour's native model file."""
    file_key: str
    """The field of the flavour's MLmodel section that names the model file."""


# In order of preference when an MLmodel names several: formats that load without running code
# first. python_function is never used: it loads through MLflow and the model's own code.
_FLAVOURS: Final = {
    "onnx": _Flavour("onnx", "data"),
    "xgboost": _Flavour("xgboost", "data"),
    "lightgbm": _Flavour("lightgbm", "data"),
    "sklearn": _Flavour("sklearn", "pickled_model"),
}
SUPPORTED_FLAVOURS: Final = tuple(_FLAVOURS)
"""The MLflow flavours modelport imports, most preferred first."""

# Top-level MLmodel fields kept as provenance, each under "mlflow.<field>".
_MODEL_FIELDS: Final = (
    "run_id",
    "model_uuid",
    "model_id",
    "artifact_path",
    "utc_time_created",
    "mlflow_version",
)
# Fields of the chosen flavour's section kept besides its "*_version" fields,
# each under "mlflow.flavor.<field>".
_FLAVOUR_FIELDS: Final = ("model_class", "model_format", "serialization_format")


@dataclass(frozen=True, slots=True)
class MlflowModel:
    """What an MLflow model directory holds, as modelport will register it."""

    flavour: str
    """The MLflow flavour chosen (one of SUPPORTED_FLAVOURS)."""
    artifact: Path
    """The model file inside the directory, as the flavour names it."""
    format: str
    """The modelport format that serves `artifact`."""
    provenance: dict[str, str]
    """MLflow's record of the model, keyed "mlflow.<field>"."""


def read_mlflow_model(directory: Path) -> MlflowModel:
    """Read `directory/MLmodel` and find the model file of its preferred supported flavour.

    InvalidInput when the directory has no MLmodel, the file is not YAML mapping flavours to
    their settings, no flavour is one of SUPPORTED_FLAVOURS, or the flavour's model file is
    missing or named outside the directory.
    """
    directory = directory.resolve()
    if not directory.is_dir():
        raise InvalidInput(f"{directory.name!r} is not a directory; give an MLflow model directory")
    spec = _read_mlmodel(directory)
    flavours = spec.get("flavors")
    if not isinstance(flavours, Mapping) or not flavours:
        raise InvalidInput(
            f"{directory.name}/{MLMODEL} has no 'flavors' section; it is not an MLflow model file"
        )
    chosen = next((name for name in SUPPORTED_FLAVOURS if name in flavours), None)
    if chosen is None:
        raise InvalidInput(
            f"{directory.name}/{MLMODEL} has no flavour modelport can import: it has "
            f"{', '.join(map(str, flavours))}, and modelport imports "
            f"{', '.join(SUPPORTED_FLAVOURS)}; save the model with one of those mlflow modules"
        )
    section = flavours[chosen]
    if not isinstance(section, Mapping):
        raise InvalidInput(f"{directory.name}/{MLMODEL}: the {chosen} flavour has no settings")
    flavour = _FLAVOURS[chosen]
    artifact = _model_file(directory, chosen, section.get(flavour.file_key), flavour.file_key)
    return MlflowModel(
        flavour=chosen,
        artifact=artifact,
        format=_format_of(flavour, artifact),
        provenance=_provenance(spec, flavours, chosen),
    )


def import_mlflow_model(
    registry: Registry,
    directory: Path,
    *,
    created_by: str,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
    compile: str | None = None,
    reference: Reference | None = None,
) -> ModelVersion:
    """Register the model in an MLflow model directory as the next version of `name`.

    `name` defaults to the directory's name. The flavour's model file is pushed with
    push_artifact (signature inferred, pickle files refused unless `trust_pickle`, optional
    `compile`), with MLflow's provenance (read_mlflow_model) added to `metadata`, whose keys
    must not start with "mlflow.".
    """
    directory = directory.resolve()
    if name is None:
        name = directory.name
        try:
            check_model_name(name)
        except InvalidInput as exc:
            raise InvalidInput(
                f"{exc.message}; the name comes from the directory's name, pass --name to set it"
            ) from None
    else:
        check_model_name(name)
    user = dict(metadata or {})
    reserved = sorted(key for key in user if key.startswith(META_PREFIX))
    if reserved:
        raise InvalidInput(
            f"metadata keys starting with {META_PREFIX!r} hold the MLmodel's provenance: "
            f"rename {', '.join(map(repr, reserved))}"
        )
    model = read_mlflow_model(directory)
    return push_artifact(
        registry,
        model.artifact,
        name=name,
        created_by=created_by,
        format=model.format,
        metadata={**user, **model.provenance},
        trust_pickle=trust_pickle,
        compile=compile,
        reference=reference,
    )


def _read_mlmodel(directory: Path) -> Mapping[str, Any]:
    path = directory / MLMODEL
    if not path.is_file():
        nested = sorted(p.parent.name for p in directory.glob(f"*/{MLMODEL}"))
        if not nested:
            hint = "; give the directory mlflow's save_model wrote, or a run's model directory"
        elif len(nested) == 1:
            hint = f"; it is in {nested[0] + '/'!r}, give that directory"
        else:
            hint = f"; give one of {', '.join(repr(n + '/') for n in nested)}, which have one"
        raise InvalidInput(f"{directory.name!r} has no {MLMODEL} file{hint}")
    where = f"{directory.name}/{MLMODEL}"
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read {where} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{where} is not UTF-8 text; it is not an MLflow model file") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where} is not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"{where} is not a YAML mapping; it is not an MLflow model file")
    return spec


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and its line, without quoting the file."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem is None:
        return exc.__class__.__name__
    mark = exc.problem_mark
    return exc.problem if mark is None else f"{exc.problem} at line {mark.line + 1}"


def _model_file(directory: Path, flavour: str, named: object, key: str) -> Path:
    """The file `named` by the flavour, refused unless it is a file inside `directory`."""
    where = f"{directory.name}/{MLMODEL}"
    if not isinstance(named, str) or not named:
        raise InvalidInput(f"{where}: the {flavour} flavour names no model file (its {key!r})")
    relative = Path(named)
    try:
        # resolve() follows symbolic links, so a link that leads out is caught as well.
        inside = (directory / relative).resolve().is_relative_to(directory)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise InvalidInput(
            f"{where}: the {flavour} flavour's {key} {named!r} is not a file name"
        ) from None
    if relative.is_absolute() or not inside:
        raise InvalidInput(
            f"{where}: the {flavour} flavour's {key} {named!r} points outside the model "
            "directory; a model file must be inside it"
        )
    path = directory / relative
    if not path.is_file():
        raise InvalidInput(
            f"{where}: the {flavour} flavour's model file {named!r} is missing from "
            f"{directory.name!r}; copy the whole directory MLflow wrote"
        )
    return path


def _format_of(flavour: _Flavour, artifact: Path) -> str:
    """The flavour's native runtime, unless MLflow saved a scikit-learn-API estimator object.

    MLflow writes LightGBM's scikit-learn wrappers (LGBMClassifier, ...) as a pickle or skops
    file rather than a Booster text file; the scikit-learn runtime serves those.
    """
    sklearn = runtime_class("sklearn")
    if artifact.name.lower().endswith(tuple(s.lower() for s in sklearn.suffixes)):
        return sklearn.format
    return flavour.format


def _provenance(
    spec: Mapping[str, Any], flavours: Mapping[str, Any], flavour: str
) -> dict[str, str]:
    """MLflow's record of the model as "mlflow.*" metadata (absent and null fields left out)."""
    found: dict[str, object] = {f"{META_PREFIX}{key}": spec.get(key) for key in _MODEL_FIELDS}
    found[f"{META_PREFIX}flavor"] = flavour
    for key, value in flavours[flavour].items():
        if isinstance(key, str) and (key.endswith("_version") or key in _FLAVOUR_FIELDS):
            found[f"{META_PREFIX}flavor.{key}"] = value
    pyfunc = flavours.get("python_function")
    if isinstance(pyfunc, Mapping):
        found[f"{META_PREFIX}python_version"] = pyfunc.get("python_version")
    signature = spec.get("signature")
    if isinstance(signature, Mapping):
        for part in ("inputs", "outputs", "params"):
            found[f"{META_PREFIX}signature.{part}"] = signature.get(part)
    return {key: text for key, value in found.items() if (text := _text(value)) is not None}


def _text(value: object) -> str | None:
    """A scalar YAML value as text; None for null, lists and mappings."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float | datetime.date):
        return str(value)
    return None
