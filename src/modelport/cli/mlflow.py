"""`modelport models import-mlflow DIR`: register a locally saved MLflow model directory."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.models import models
from modelport.cli.options import registry_option, reported
from modelport.cli.push import (
    compile_options,
    compile_reference,
    echo_pushed,
    meta_options,
    parse_meta,
)
from modelport.config import current_user, registry_location


@models.command("import-mlflow")
@click.argument(
    "directory", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--name",
    default=None,
    help="Model name (letters, digits, '.', '_', '-'). Default: the directory's name.",
)
@meta_options(
    "JSON object of provenance metadata; --meta entries override its keys. "
    "Keys starting with 'mlflow.' are kept for the MLmodel's own."
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow a pickled model (mlflow.sklearn with serialization_format 'pickle' or "
    "'cloudpickle', the default of older MLflow versions). Loading one runs code: only for "
    "models you trust.",
)
@compile_options
@registry_option
def import_mlflow(
    directory: Path,
    name: str | None,
    meta: tuple[str, ...],
    meta_file: Path | None,
    trust_pickle: bool,
    compile_to: str | None,
    reference_file: Path | None,
    as_json: bool,
    registry: str | None,
) -> None:
    """Register an MLflow model directory (sklearn, xgboost, lightgbm or onnx flavour).

    DIR is what mlflow.<flavour>.save_model wrote, or a logged model downloaded from a run:
    the directory holding the MLmodel file. No MLflow installation or server is needed. The
    flavour's own model file is pushed as with `models push` (MLflow's python_function
    loader is never used), and MLflow's record of the model (run_id, model_uuid,
    utc_time_created, mlflow_version, flavour and library versions, signature) is kept as
    version metadata under `mlflow.` keys; `models show` lists them.

    Prints the new version number like `models push`, and on stderr which file was imported.

    \b
    Example:
      modelport models import-mlflow ./mlruns/0/abc123/artifacts/model --name churn
    """
    from modelport.intake.mlflow_import import import_mlflow_model
    from modelport.registry.store import Registry

    with reported():
        reference = compile_reference(compile_to, reference_file)
        metadata = parse_meta(meta, meta_file)
        store = Registry.open(registry_location(registry))
        try:
            mv = import_mlflow_model(
                store,
                directory,
                name=name,
                created_by=current_user(),
                metadata=metadata,
                trust_pickle=trust_pickle,
                compile=compile_to,
                reference=reference,
            )
        finally:
            store.close()
        run = mv.metadata.get("mlflow.run_id")
        click.echo(
            f"imported {mv.source} of the MLflow {mv.metadata.get('mlflow.flavor')} flavour"
            + (f" (run {run})" if run else ""),
            err=True,
        )
        echo_pushed(mv, as_json=as_json, compile_to=compile_to)
