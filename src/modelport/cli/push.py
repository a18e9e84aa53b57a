"""`modelport models push FILE`, and the options every command that registers an artifact shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelport.cli.models import models
from modelport.cli.options import file_option, registry_option, reported
from modelport.config import current_user, registry_location
from modelport.errors import InvalidInput

if TYPE_CHECKING:
    from modelport.registry.manifest import ModelVersion

F = TypeVar("F", bound=Callable[..., Any])


def parse_meta(items: tuple[str, ...], meta_file: Path | None = None) -> dict[str, Any]:
    """--meta-file's JSON object, then each --meta KEY=VALUE on top of it."""
    meta: dict[str, Any] = {}
    if meta_file is not None:
        try:
            loaded = json.loads(meta_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(
                f"--meta-file {meta_file.name!r} is not readable JSON: {exc}"
            ) from None
        if not isinstance(loaded, dict):
            raise InvalidInput(
                f"--meta-file {meta_file.name!r} must hold a JSON object "
                '(e.g. {"git_commit": "abc123", "metrics": {"accuracy": 0.97}})'
            )
        meta.update(loaded)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--meta expects KEY=VALUE, got {item!r}")
        meta[key] = value
    return meta


def meta_options(meta_file_help: str) -> Callable[[F], F]:
    """--meta and --meta-file, which `parse_meta` reads; `meta_file_help` describes the file."""
    meta = click.option(
        "--meta", multiple=True, metavar="KEY=VALUE", help="Provenance metadata (repeatable)."
    )
    meta_file = file_option("--meta-file", help=meta_file_help)

    def decorate(fn: F) -> F:
        return meta(meta_file(fn))

    return decorate


def compile_options(fn: F) -> F:
    """--compile, --reference and --json, shared by the commands that register artifacts."""
    for option in reversed(
        (
            click.option(
                "--compile",
                "compile_to",
                type=click.Choice(["onnx"]),
                default=None,
                help="Also convert the model (scikit-learn, XGBoost, LightGBM) to ONNX and "
                "serve that form, kept only if its outputs match the original's on a "
                "verification sample.",
            ),
            file_option(
                "--reference",
                "reference_file",
                help="Rows to verify the compiled model on (.npy, or .csv of numbers without "
                "a header). Default: rows generated from the signature.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON."),
        )
    ):
        fn = option(fn)
    return fn


def compile_reference(compile_to: str | None, reference_file: Path | None) -> Any:
    """The rows of --reference (None without it); InvalidInput when --compile is missing."""
    if reference_file is None:
        return None
    if compile_to is None:
        raise InvalidInput("--reference is only used with --compile; add --compile onnx")
    return read_reference(reference_file)


@models.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name (letters, digits, '.', '_', '-').")
@click.option(
    "--format",
    "fmt",
    default=None,
    help="sklearn, xgboost, lightgbm, onnx, python, or package.module:Class for a custom "
    "runtime. Default: guessed from the file suffix.",
)
@meta_options(
    "JSON object of provenance metadata (training data digest, git commit, metrics...); "
    "--meta entries override its keys."
)
@file_option(
    "--signature",
    "signature_file",
    help='JSON {"inputs": [...], "outputs": [...]} for models whose signature cannot be inferred.',
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow a pickle/joblib/cloudpickle artifact. Loading one runs code: "
    "only for files you trust.",
)
@file_option(
    "--reference-data",
    "reference_data",
    help="CSV (first line naming the columns) or Parquet file of typical inputs, such as the "
    "training set, to measure drift against; its profile is stored with the version. "
    "Columns named like the inputs feed them (each input one value per row); for a model "
    "with one [-1, F] input, give exactly F columns in feature order. Files over 100,000 "
    "rows are sampled.",
)
@click.option(
    "--reference-label",
    metavar="COLUMN",
    default=None,
    help="A column of --reference-data to leave out of its profile (e.g. the label).",
)
@compile_options
@registry_option
def push(
    file: Path,
    name: str,
    fmt: str | None,
    meta: tuple[str, ...],
    meta_file: Path | None,
    signature_file: Path | None,
    trust_pickle: bool,
    reference_data: Path | None,
    reference_label: str | None,
    compile_to: str | None,
    reference_file: Path | None,
    as_json: bool,
    registry: str | None,
) -> None:
    """Register FILE as the next immutable version of a model and print its version number.

    With --compile, a line on stderr says whether the compiled form was kept, and why not.
    """
    from modelport.cli.reference_data import profile_of, read_reference_data
    from modelport.intake.push import push_artifact
    from modelport.protocol.signature import Signature
    from modelport.registry.store import Registry

    with reported():
        signature = None
        if signature_file is not None:
            try:
                signature = Signature.from_dict(json.loads(signature_file.read_text()))
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"--signature file is not valid JSON: {exc}") from None
        reference = compile_reference(compile_to, reference_file)
        if reference_label is not None and reference_data is None:
            raise InvalidInput("--reference-label names a column of --reference-data; add it")
        # Read before the model loads, so that a bad file fails fast.
        profile = None
        if reference_data is not None:
            profile = partial(
                profile_of, read_reference_data(reference_data, label=reference_label)
            )
        with Registry.open(registry_location(registry)) as store:
            mv = push_artifact(
                store,
                file,
                name=name,
                format=fmt,
                signature=signature,
                metadata=parse_meta(meta, meta_file),
                trust_pickle=trust_pickle,
                created_by=current_user(),
                compile=compile_to,
                reference=reference,
                profile=profile,
            )
        echo_pushed(mv, as_json=as_json, compile_to=compile_to)


def echo_pushed(mv: ModelVersion, *, as_json: bool, compile_to: str | None) -> None:
    """Print a pushed version: its number (or JSON) on stdout, the --compile outcome on stderr."""
    click.echo(json.dumps(mv.to_dict(), indent=2) if as_json else str(mv.version))
    report = mv.compile_report
    if report is not None:
        # stderr, so that stdout stays the bare version number scripts read.
        if mv.compiled is not None:
            click.echo(
                f"compiled to {mv.compiled.format}: kept (sha256 {mv.compiled.digest[:12]}); "
                f"{report.get('headline', '')}",
                err=True,
            )
        else:
            click.secho(
                f"warning: compiled {report.get('target', compile_to)} form not kept, the "
                f"original serves: {report.get('headline', '')}",
                fg="yellow",
                err=True,
            )


def read_reference(path: Path) -> Any:
    """The rows of a --reference file: .npy (no pickled objects) or .csv of numbers."""
    import numpy as np

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".csv":
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InvalidInput(
            f"cannot read --reference {path.name!r} ({first.replace(str(path), path.name)}); "
            "give a .npy array (saved with numpy.save) or a .csv of numbers without a header"
        ) from None
    raise InvalidInput(f"--reference {path.name!r}: give a .npy or a .csv file")
