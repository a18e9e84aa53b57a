"""`modelport models ...`: register artifacts and inspect registered versions."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelport.cli.options import console, registry_option, reported
from modelport.config import current_user, registry_location
from modelport.errors import InvalidInput

if TYPE_CHECKING:
    from modelport.registry.manifest import ModelVersion

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def models() -> None:
    """Register model artifacts, move aliases between versions, and audit what was done."""


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
            click.option(
                "--reference",
                "reference_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
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
@click.option(
    "--meta", multiple=True, metavar="KEY=VALUE", help="Provenance metadata (repeatable)."
)
@click.option(
    "--meta-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON object of provenance metadata (training data digest, git commit, metrics...); "
    "--meta entries override its keys.",
)
@click.option(
    "--signature",
    "signature_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='JSON {"inputs": [...], "outputs": [...]} for models whose signature cannot be inferred.',
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow a pickle/joblib/cloudpickle artifact. Loading one runs code: "
    "only for files you trust.",
)
@click.option(
    "--reference-data",
    "reference_data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
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


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@registry_option
def list_models(as_json: bool, registry: str | None) -> None:
    """List registered models with their newest version."""
    from modelport.registry.store import Registry

    with reported():
        store = Registry.open(registry_location(registry), create=False)
        try:
            rows = [(mv, len(store.versions(mv.name))) for mv in store.latest()]
        finally:
            store.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        **mv.to_dict(),
                        "versions": count,
                        "reference_profile": _profile_summary(mv.reference_profile),
                    }
                    for mv, count in rows
                ],
                indent=2,
            )
        )
        return
    from rich.table import Table

    table = Table("name", "latest", "versions", "format", "sha256", "created", "by")
    for mv, count in rows:
        table.add_row(
            mv.name,
            str(mv.version),
            str(count),
            mv.format,
            mv.digest[:12],
            mv.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            mv.created_by,
        )
    console().print(
        table if rows else "no models registered; push one with `modelport models push`"
    )


@models.command("show")
@click.argument("ref", metavar="NAME[:VERSION|ALIAS]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@registry_option
def show(ref: str, as_json: bool, registry: str | None) -> None:
    """Show one version's provenance and signature.

    Default: what the server answers for NAME (its `production` alias, else the newest).
    """
    from modelport.registry.store import Registry

    with reported(), Registry.open(registry_location(registry), create=False) as store:
        name, _, ver = ref.partition(":")
        mv = store.resolve(name, ver or None)
        aliases = [a for a, v in store.aliases(name).items() if v == mv.version]
    if as_json:
        click.echo(json.dumps({**mv.to_dict(), "aliases": aliases}, indent=2))
        return
    from rich.table import Table

    info = Table(show_header=False, title=f"{mv.name} version {mv.version}")
    info.add_column(style="bold")
    info.add_column()
    pickle = "no" if not mv.pickle else ("yes, trusted at push" if mv.trusted_pickle else "yes")
    for key, value in (
        ("sha256", mv.digest),
        ("size", f"{mv.size:,} bytes"),
        ("format", mv.format),
        ("pickle", pickle),
        ("created", mv.created_at.isoformat()),
        ("created by", mv.created_by),
        ("created on", mv.created_host or "(not recorded)"),
        ("source", mv.source),
        ("aliases", ", ".join(aliases) or "-"),
        *((f"meta {k}", str(v)) for k, v in sorted(mv.metadata.items())),
        *_compiled_rows(mv),
        ("reference data", _profile_line(mv.reference_profile)),
    ):
        info.add_row(key, value)
    tensors = Table("", "name", "datatype", "shape", title="signature")
    for kind, specs in (("input", mv.signature.inputs), ("output", mv.signature.outputs)):
        for spec in specs:
            tensors.add_row(kind, spec.name, spec.datatype, str(list(spec.shape)))
    out = console()
    out.print(info)
    out.print(tensors)
    checks = (mv.compile_report or {}).get("outputs")
    if checks:
        table = Table(
            "output",
            "tolerance",
            "max abs diff",
            "max rel diff",
            "mismatches",
            "ties",
            "passed",
            title="compile check",
        )
        for output, check in checks.items():
            tolerance = check.get("tolerance")
            table.add_row(
                output,
                tolerance
                if isinstance(tolerance, str)
                else f"atol {tolerance['atol']:g} + rtol {tolerance['rtol']:g}",
                _number(check.get("max_abs_diff")),
                _number(check.get("max_rel_diff")),
                str(check.get("mismatches")),
                str(check.get("ties", 0)),
                "yes" if check.get("passed") else "no",
            )
        out.print(table)


def _compiled_rows(mv: ModelVersion) -> list[tuple[str, str]]:
    """`models show` rows for the compiled artifact and its check (none without --compile)."""
    report = mv.compile_report
    if report is None:
        return []
    compiled = mv.compiled
    if compiled is None:
        kept = f"{report.get('target', '?')}: not kept (the original serves)"
    else:
        kept = f"{compiled.format} sha256 {compiled.digest} ({compiled.size:,} bytes)"
    sample = report.get("sample")
    rows = [("compiled", kept), ("compile check", str(report.get("headline", "")))]
    if sample:
        rows.append(("check sample", f"{sample['rows']} {sample['source']} rows"))
    if report.get("converter"):
        rows.append(("converter", str(report["converter"])))
    return rows


def _profile_summary(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    """A reference profile without its bins and samples, for listings."""
    if profile is None:
        return None
    features = [
        {key: f.get(key) for key in ("name", "input", "column", "kind")}
        for f in profile.get("features", [])
    ]
    return {key: profile.get(key) for key in ("format", "rows", "source_rows")} | {
        "features": features
    }


def _profile_line(profile: dict[str, Any] | None) -> str:
    """`models show`'s one-line summary of the reference profile."""
    if profile is None:
        return "none (push with --reference-data to measure drift)"
    names = [str(f.get("name")) for f in profile.get("features", [])]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    rows, source = profile.get("rows", 0), profile.get("source_rows", 0)
    sampled = f" (sampled from {source:,})" if source > rows else ""
    return f"{rows:,} rows{sampled}; {len(names)} features: {shown}"


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"
