"""`modelport batch MODEL INPUT... --output DIR`: score files with a registered model."""

from __future__ import annotations

import sys
from typing import Any

import click

from modelport.cli.options import registry_option, reported


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(n.strip() for n in value.split(",") if n.strip())


@click.command(
    "batch",
    epilog="""\b
Examples:
  modelport batch iris data/iris.parquet --output scores/
  modelport batch iris:production 'data/2026-*/*.csv' --output scores/ --id-column id
  modelport batch iris s3://bucket/rows/ --output scores/ --passthrough all
  modelport batch iris data/ --output scores/ --resume     # after a crash or a stop

\b
Output: DIR/part-NNNNN.parquet (one per input file, or per Parquet row group), in
input order; each row has its key (--id-column, else _file and _row), the
--passthrough columns, the model's outputs (a [-1, K] output as NAME_0..NAME_{K-1}),
and _model, _version, _sha256, _job_id. Refused rows go to DIR/_errors/part-NNNNN.jsonl
with their key, stage and message. DIR/_manifest.json lists the committed parts,
DIR/_summary.json the counts. Exit status 1 past --max-errors. See docs/batch.md.""",
)
@click.argument("model", metavar="MODEL[:VERSION|ALIAS]")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="DIR",
    help="Output directory (path or fsspec URL); must be empty or missing unless --resume.",
)
@click.option(
    "--features",
    metavar="A,B,C",
    help="Columns of the model's single [-1, F] input, in order. Default: the feature order "
    "of the reference data the version was pushed with.",
)
@click.option("--id-column", metavar="COLUMN", help="Key each output row by this input column.")
@click.option(
    "--passthrough",
    metavar="A,B|all",
    help="Input columns to copy to the output (default none; `all` for every column).",
)
@click.option(
    "--max-errors",
    default="0",
    show_default=True,
    metavar="N|P%",
    help="Stop (exit 1) once more than N rows, or P% of the rows read, were refused.",
)
@click.option("--resume", is_flag=True, help="Continue the job DIR holds (same arguments).")
@click.option(
    "--compiled/--no-compiled",
    default=True,
    help="Run a version's compiled (ONNX) artifact when it has one (as `serve`).",
)
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    default="parquet",
    show_default=True,
    help="Format of the part files.",
)
@click.option(
    "--outputs-as",
    type=click.Choice(["columns", "lists"]),
    default="columns",
    show_default=True,
    help="A [-1, K] output as K columns NAME_0..NAME_{K-1}, or one list column NAME.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    help="Rows per record batch and model call.",
)
@click.option(
    "--dask",
    metavar="local:N|tcp://HOST:PORT",
    help="Score the partitions on Dask: a cluster of N worker processes started for the job, "
    "or a running scheduler whose workers reach the registry, inputs and output. Needs "
    "modelport[dask].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary line.")
@registry_option
def batch(
    model: str,
    inputs: tuple[str, ...],
    output: str,
    features: str | None,
    id_column: str | None,
    passthrough: str | None,
    max_errors: str,
    resume: bool,
    compiled: bool,
    output_format: Any,
    outputs_as: Any,
    batch_size: int,
    dask: str | None,
    quiet: bool,
    registry: str | None,
) -> None:
    """Score Parquet, CSV or JSON-lines files with a registered model, resumably.

    MODEL is NAME (its `production` alias, else its newest version), NAME:VERSION or
    NAME:ALIAS. INPUT is a file, a directory (read recursively) or a glob, as a local path or
    an fsspec URL; every input is checked before any row is scored. Progress goes to stderr:
    a bar on a terminal, a JSON line every few seconds otherwise.
    """
    from modelport import batch as jobs

    shown: Any = ()
    if passthrough is not None:
        shown = "all" if passthrough.strip() == "all" else _names(passthrough)
    with reported():
        summary = jobs.run(
            model,
            list(inputs),
            output,
            registry=registry,
            features=_names(features),
            id_column=id_column,
            passthrough=shown,
            max_errors=max_errors,
            resume=resume,
            compiled=compiled,
            output_format=output_format,
            outputs_as=outputs_as,
            batch_size=batch_size,
            dask=dask,
            progress="none" if quiet else "auto",
        )
    data = summary.data
    if not quiet or not summary.ok:
        line = (
            f"{data['model']['name']}:{data['model']['version']} job {data['job_id']}: "
            f"{data['rows_out']:,} rows scored, {data['error_rows']:,} refused, "
            f"{data['committed_parts']}/{data['partitions']} parts in {data['output']} "
            f"({data['rows_per_s'] or 0:,.0f} rows/s)"
        )
        click.echo(line, err=not summary.ok)
    if not summary.ok:
        click.secho(f"error: {data['reason']}", fg="red", err=True)
        sys.exit(1)
