"""`modelport logs export`: a model's inference records as JSON lines, CSV or Parquet."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import click

from modelport.cli.log_reader import (
    FIELDS,
    PAGE,
    SINCE_HELP,
    log_options,
    moment_option,
    open_log,
    reader_gone,
    to_dict,
    window,
)
from modelport.cli.options import reported
from modelport.errors import InvalidInput
from modelport.inference_log.record import COLUMN_KINDS, TENSORS

if TYPE_CHECKING:
    from modelport.inference_log.record import StoredRecord

_TENSOR_COLUMNS: Final = tuple(name for name, kind in COLUMN_KINDS if kind is TENSORS)


@click.command("export")
@click.option("--model", required=True, metavar="NAME", help="The model whose records to export.")
@moment_option("--since", SINCE_HELP)
@moment_option("--until", "Only records up to this time (same forms as --since).")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl",
    show_default=True,
    help="jsonl: one JSON object per line. csv: inputs and outputs as JSON text. parquet: "
    "columns as in csv (needs --output).",
)  # fmt: skip
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File to write. Default: standard output (jsonl and csv only).",
)  # fmt: skip
@log_options
def export(
    model: str,
    since: float | None,
    until: float | None,
    fmt: str,
    output: Path | None,
    registry: str | None,
    inference_log: str | None,
) -> None:
    """Write the inference records of a model, oldest first, for analysis elsewhere.

    Each record has: id, request_id, at (Unix time, seconds), model, version, digest (sha256 of
    the artifact), protocol, caller, inputs, outputs (tensor name -> nested lists), latency_ms,
    status and error.
    """
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet writes a file: add --output FILE")
    with reported(), open_log(registry, inference_log) as store:
        records = window(store, model, since, until)
        try:
            if fmt == "parquet":
                assert output is not None
                written = _write_parquet(records, output)
            elif output is None:
                written = _write_text(records, fmt, sys.stdout)
            else:
                with output.open("w", encoding="utf-8", newline="") as handle:
                    written = _write_text(records, fmt, handle)
        except BrokenPipeError:
            reader_gone()
        except OSError as exc:
            name = "standard output" if output is None else repr(output.name)
            raise InvalidInput(f"cannot write {name}: {exc.strerror or exc}") from None
    if output is not None:
        click.echo(f"exported {written} record(s) of {model} to {output}", err=True)


def _write_text(records: Iterator[StoredRecord], fmt: str, out: IO[str]) -> int:
    written = 0
    if fmt == "jsonl":
        for record in records:
            out.write(json.dumps(to_dict(record), ensure_ascii=False) + "\n")
            written += 1
        return written
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for record in records:
        writer.writerow(_flat(record).values())
        written += 1
    return written


def _flat(record: StoredRecord) -> dict[str, Any]:
    """A record as one row of scalars: tensors as JSON text, None as an empty cell."""
    row = to_dict(record)
    for name in _TENSOR_COLUMNS:
        row[name] = None if row[name] is None else json.dumps(row[name], ensure_ascii=False)
    return row


def _write_parquet(records: Iterator[StoredRecord], output: Path) -> int:
    # pyarrow ships no type hints; the ignores stay harmless once the project configures it.
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    columns = [("id", "int64"), *((name, kind.arrow) for name, kind in COLUMN_KINDS)]
    schema = pa.schema([(name, getattr(pa, arrow)()) for name, arrow in columns])
    written = 0
    with pq.ParquetWriter(output, schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(_flat(record))
            if len(batch) == PAGE:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written, batch = written + len(batch), []
        if batch or not written:  # an empty export still writes a readable file
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
    return written
