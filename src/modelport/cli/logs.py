"""`modelport logs tail|export|replay`: read the inference log that `modelport serve` writes."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import click

from modelport.cli.log_export import export
from modelport.cli.log_reader import (
    SINCE_HELP,
    latest,
    log_options,
    moment_option,
    open_log,
    pages,
    reader_gone,
    to_dict,
    top_id,
)
from modelport.cli.options import console, reported
from modelport.config import registry_location

if TYPE_CHECKING:
    from modelport.inference_log.record import StoredRecord
    from modelport.monitoring.replay import Replay

FOLLOW_SECONDS: Final = 0.5
_SHOWN_CHARS: Final = 48


@click.group()
def logs() -> None:
    """Read the inference log: follow it, export it, replay it on another version.

    `modelport serve` records every inference (inputs, outputs, version, latency, status)
    in the inference log; these commands read it while the server runs or after it stopped.
    """


logs.add_command(export)


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
    # With --follow, Ctrl-C ends the loop between two reads: a KeyboardInterrupt raised in the
    # middle of the database driver could leave it holding a lock that close() then waits on.
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set()) if follow else None
    try:
        with reported():
            records = latest(store, model, None, count) if count else []
            last = records[-1].id if records else top_id(store)
            _print_records(records, as_json)
            while follow and not stop.wait(FOLLOW_SECONDS):
                for page in pages(store, model, None, after_id=last):
                    _print_records(page, as_json)
                    last = page[-1].id
    except KeyboardInterrupt:
        pass  # Ctrl-C without --follow
    except BrokenPipeError:
        reader_gone()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        store.close()


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


# -- replay ----------------------------------------------------------------------------------


@logs.command("replay")
@click.option("--model", required=True, metavar="NAME", help="The model whose records to replay.")
@click.option(
    "--against", required=True, type=click.IntRange(min=1), metavar="VERSION",
    help="The registered version to run the logged inputs on.",
)  # fmt: skip
@moment_option("--since", SINCE_HELP)
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
    from modelport.monitoring.replay import replay as replay_records

    with reported():
        loaded = modelport.load(model, version=against, registry=registry_location(registry))
        try:
            with open_log(registry, inference_log) as store:
                records = latest(store, model, since, limit)
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
