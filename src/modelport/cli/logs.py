"""`modelport logs tail|export|replay`: read the inference log that `modelport serve` writes."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import click

from modelport.cli.options import console, registry_option, reported
from modelport.config import registry_location
from modelport.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from modelport.observability.log_store import LogStore, StoredRecord
    from modelport.observability.replay import Replay

F = TypeVar("F", bound=Callable[..., Any])

PAGE: Final = 10_000
"""Records read from the store at a time, so a large log streams through in bounded memory."""
FOLLOW_SECONDS: Final = 0.5
_SHOWN_CHARS: Final = 48
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_FIELDS: Final = (
    "id",
    "request_id",
    "at",
    "model",
    "version",
    "digest",
    "protocol",
    "caller",
    "inputs",
    "outputs",
    "latency_ms",
    "status",
    "error",
)
"""Fields of an exported record, in column order; `at` is Unix time in seconds."""
_SINCE_HELP: Final = (
    "Only records from this time on: ISO 8601 (2026-11-30T10:00:00; UTC unless it names a "
    "zone) or an age before now (30s, 15m, 2h, 7d, 1w)."
)


def moment_option(name: str, help: str) -> Callable[[F], F]:
    """An option naming a point in time (`parse_moment`), converted to Unix seconds."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return parse_moment(value, now=time.time())
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return click.option(name, metavar="TIME", default=None, callback=convert, help=help)


def parse_moment(text: str, *, now: float) -> float:
    """Unix time of `text`: an ISO 8601 time (naive = UTC) or an age before `now` (30s-4w)."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return now - float(age.group(1)) * _UNIT_SECONDS[age.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time (e.g. 2026-11-30T10:00:00, UTC unless it "
            "names a zone such as +02:00) nor an age (a number and s, m, h, d or w: 15m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@click.group()
def logs() -> None:
    """Read the inference log: follow it, export it, replay it on another version.

    `modelport serve` records every inference (inputs, outputs, version, latency, status)
    in the inference log; these commands read it while the server runs or after it stopped.
    """


def log_options(fn: F) -> F:
    """--registry and --inference-log: which log to read, found as `modelport serve` finds it."""
    fn = click.option(
        "--inference-log",
        default=None,
        metavar="PATH|URL",
        help="The inference log to read: a SQLite file or a postgresql:// URL. Default: the one "
        "`modelport serve --registry` writes (inference-log.sqlite in the registry directory; "
        "for a PostgreSQL registry, its database).",
    )(fn)
    return registry_option(fn)


def open_log(registry: str | None, inference_log: str | None) -> LogStore:
    """The store `modelport serve` would write for these options; NotFound if it has none."""
    from modelport.config import InferenceLogSettings
    from modelport.observability.log_location import inference_log_targets
    from modelport.observability.log_store import display_target, open_store
    from modelport.registry.location import is_url

    settings = InferenceLogSettings(location=inference_log or "")
    target, _ = inference_log_targets(registry_location(registry), settings)
    if not target:
        raise InvalidInput("--inference-log off names no log; give its SQLite file or URL")
    if not is_url(target) and not Path(target).is_file():
        raise NotFound(
            f"no inference log at {display_target(target)}: the server has not recorded an "
            "inference there yet; check --registry (or $MODELPORT_REGISTRY) or --inference-log"
        )
    return open_store(target)


def _pages(
    store: LogStore, model: str | None, since: float | None, after_id: int = 0
) -> Iterator[list[StoredRecord]]:
    """The records of `model` (every model if None) from `since` on, a page at a time."""
    while True:
        page = store.read(model=model, since=since, after_id=after_id, limit=PAGE)
        if not page:
            return
        yield page
        after_id = page[-1].id


def _window(
    store: LogStore, model: str | None, since: float | None, until: float | None
) -> Iterator[StoredRecord]:
    """Every record of `model` from `since` up to `until` (inclusive), in log order."""
    for page in _pages(store, model, since):
        for record in page:
            if until is None or record.at <= until:
                yield record


def _latest(store: LogStore, model: str | None, since: float | None, n: int) -> list[StoredRecord]:
    """The newest `n` records of `model` from `since` on, oldest first.

    The store reads forward by id only, so this reads windows of ids back from the end, each
    four times wider than the last, until one holds `n` records: a busy log is never read
    whole to find its tail.
    """
    top = _top_id(store)
    width = max(n, 64)
    while True:
        start = max(top - width, 0)
        kept: deque[StoredRecord] = deque(maxlen=n)
        for page in _pages(store, model, since, after_id=start):
            kept.extend(page)
        if len(kept) >= n or start == 0:
            return list(kept)
        width *= 4


def _top_id(store: LogStore) -> int:
    """An id at least as large as any in the log (ids rise from 1, with few gaps)."""
    top = store.count()
    while page := store.read(after_id=top, limit=PAGE):
        top = page[-1].id
    return top


def to_dict(record: StoredRecord) -> dict[str, Any]:
    """The record as an exported row (`at` in Unix seconds, tensors as nested lists)."""
    return {name: getattr(record, name) for name in _FIELDS}


# -- tail ------------------------------------------------------------------------------------


@logs.command("tail")
@click.option("--model", default=None, metavar="NAME", help="Only this model's records.")
@click.option(
    "-n", "--lines", "count", type=click.IntRange(min=0), default=20, show_default=True,
    help="How many of the newest records to print first.",
)  # fmt: skip
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new records as they arrive (Ctrl-C stops)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record and line.")
@log_options
def tail(
    model: str | None,
    count: int,
    follow: bool,
    as_json: bool,
    registry: str | None,
    inference_log: str | None,
) -> None:
    """Print the newest inference records: time (UTC), request id, model:version, protocol,
    status, latency, caller, and the start of the inputs and outputs.
    """
    with reported():
        store = open_log(registry, inference_log)
    try:
        with reported():
            records = _latest(store, model, None, count) if count else []
            last = records[-1].id if records else _top_id(store)
            _print_records(records, as_json)
            while follow:
                time.sleep(FOLLOW_SECONDS)
                for page in _pages(store, model, None, after_id=last):
                    _print_records(page, as_json)
                    last = page[-1].id
    except KeyboardInterrupt:
        pass  # Ctrl-C is how --follow ends
    except BrokenPipeError:
        _reader_gone()
    finally:
        store.close()


def _reader_gone() -> None:
    """Stop quietly when the reader of standard output went away (`| head`), as Unix tools do."""
    # Python would complain again when it flushes stdout at exit: point it at /dev/null first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe


def _print_records(records: list[StoredRecord], as_json: bool) -> None:
    for record in records:
        if as_json:
            click.echo(json.dumps(to_dict(record), ensure_ascii=False))
        else:
            click.echo(_line(record))
    sys.stdout.flush()


def _line(r: StoredRecord) -> str:
    moment = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    version = "?" if r.version is None else str(r.version)
    head = (
        f"{moment}  {r.request_id:<32}  {f'{r.model}:{version}':<16}  {r.protocol:<4}  "
        f"{r.status:>3}  {r.latency_ms:8.2f} ms  {r.caller or '-'}"
    )
    if r.error:
        return f"{head}  error: {_short(r.error)}"
    return f"{head}  in {_tensors(r.inputs)}  out {_tensors(r.outputs)}"


def _tensors(tensors: dict[str, Any] | None) -> str:
    if not tensors:
        return "-"
    return " ".join(f"{name}={_short(json.dumps(v))}" for name, v in tensors.items())


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


# -- export ----------------------------------------------------------------------------------


@logs.command("export")
@click.option("--model", required=True, metavar="NAME", help="The model whose records to export.")
@moment_option("--since", _SINCE_HELP)
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
        records = _window(store, model, since, until)
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
            _reader_gone()
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
    writer.writerow(_FIELDS)
    for record in records:
        writer.writerow(_flat(record).values())
        written += 1
    return written


def _flat(record: StoredRecord) -> dict[str, Any]:
    """A record as one row of scalars: tensors as JSON text, None as an empty cell."""
    row = to_dict(record)
    for name in ("inputs", "outputs"):
        row[name] = None if row[name] is None else json.dumps(row[name], ensure_ascii=False)
    return row


def _write_parquet(records: Iterator[StoredRecord], output: Path) -> int:
    # pyarrow ships no type hints; the ignores stay harmless once the project configures it.
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("request_id", pa.string()),
            ("at", pa.float64()),
            ("model", pa.string()),
            ("version", pa.int64()),
            ("digest", pa.string()),
            ("protocol", pa.string()),
            ("caller", pa.string()),
            ("inputs", pa.string()),
            ("outputs", pa.string()),
            ("latency_ms", pa.float64()),
            ("status", pa.string()),
            ("error", pa.string()),
        ]
    )
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


# -- replay ----------------------------------------------------------------------------------


@logs.command("replay")
@click.option("--model", required=True, metavar="NAME", help="The model whose records to replay.")
@click.option(
    "--against", required=True, type=click.IntRange(min=1), metavar="VERSION",
    help="The registered version to run the logged inputs on.",
)  # fmt: skip
@moment_option("--since", _SINCE_HELP)
@click.option(
    "--limit", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Take the newest LIMIT records of the model (those that cannot be replayed are "
    "counted as skipped).",
)  # fmt: skip
@click.option(
    "--tolerance", type=click.FloatRange(min=0), default=1e-6, show_default=True,
    help="Numbers agree when they differ by at most this much.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@log_options
def replay(
    model: str,
    against: int,
    since: float | None,
    limit: int,
    tolerance: float,
    as_json: bool,
    registry: str | None,
    inference_log: str | None,
) -> None:
    """Run the logged inputs of --model on version --against; report how the outputs agree.

    Takes the newest --limit records of the model, replays in this process those that were
    answered (status 200 or OK) and whose inputs were not redacted, and compares the new
    outputs with the logged ones: the share of records whose outputs all agree, and per output
    the largest difference and, for labels, the share that is equal. Useful before moving
    `production` to a new version. Changes nothing; the server need not run.
    """
    import modelport
    from modelport.observability.replay import replay as replay_records

    with reported():
        loaded = modelport.load(model, version=against, registry=registry_location(registry))
        try:
            with open_log(registry, inference_log) as store:
                records = _latest(store, model, since, limit)
            result = replay_records(loaded, records, tolerance)
        finally:
            loaded.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_replay(result)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}% ({part}/{whole})" if whole else "-"


def _print_replay(result: Replay) -> None:
    from rich.table import Table

    out = console()
    summary = Table(
        show_header=False,
        title=f"{result.model}: logged answers replayed on version {result.version}",
    )
    summary.add_row("records considered", str(result.considered))
    summary.add_row("replayed", str(result.replayed))
    for reason, n in sorted(result.skipped.items()):
        summary.add_row(f"skipped: {reason}", str(n))
    versions = ", ".join(f"v{v}: {n}" for v, n in sorted(result.logged_versions.items()))
    summary.add_row("answered by", versions or "-")
    summary.add_row("all outputs agree", _percent(result.equal_records, result.replayed))
    summary.add_row("tolerance", f"{result.tolerance:g}")
    out.print(summary)
    if not result.outputs:
        out.print("nothing was replayed: no record had both inputs and outputs to compare")
        return
    table = Table(
        "output", "datatype", "records", "records agreeing", "max abs diff", "equal labels"
    )
    for name, o in result.outputs.items():
        table.add_row(
            name,
            o.datatype,
            str(o.records),
            _percent(o.equal_records, o.records),
            "-" if o.max_abs_diff is None else f"{o.max_abs_diff:.3g}",
            _percent(o.equal_labels, o.labels) if o.label_like else "-",
        )
    out.print(table)
