"""`modelport models ...`: the command group, and listing and showing registered versions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from modelport.cli.options import console, registry_option, reported
from modelport.config import registry_location

if TYPE_CHECKING:
    from modelport.registry.manifest import ModelVersion


@click.group()
def models() -> None:
    """Register model artifacts, move aliases between versions, and audit what was done."""


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
