"""Reading the inference log for `modelport logs`: which log, which records, in what shape."""

from __future__ import annotations

import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from modelport.cli.options import registry_option
from modelport.config import registry_location
from modelport.errors import InvalidInput, NotFound
from modelport.inference_log.record import COLUMNS

if TYPE_CHECKING:
    from modelport.inference_log.record import StoredRecord
    from modelport.inference_log.store import LogStore

F = TypeVar("F", bound=Callable[..., Any])

PAGE: Final = 10_000
"""Records read from the store at a time, so a large log streams through in bounded memory."""
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
FIELDS: Final = ("id", *COLUMNS)
"""Fields of an exported record, in column order; `at` is Unix time in seconds."""
SINCE_HELP: Final = (
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
    from modelport.inference_log.location import inference_log_targets, open_store
    from modelport.registry.database import display_location
    from modelport.registry.location import is_url

    settings = InferenceLogSettings(location=inference_log or "")
    target, _ = inference_log_targets(registry_location(registry), settings)
    if not target:
        raise InvalidInput("--inference-log off names no log; give its SQLite file or URL")
    if not is_url(target) and not Path(target).is_file():
        raise NotFound(
            f"no inference log at {display_location(target)}: the server has not recorded an "
            "inference there yet; check --registry (or $MODELPORT_REGISTRY) or --inference-log"
        )
    return open_store(target)


def pages(
    store: LogStore, model: str | None, since: float | None, after_id: int = 0
) -> Iterator[list[StoredRecord]]:
    """The records of `model` (every model if None) from `since` on, a page at a time."""
    while True:
        page = store.read(model=model, since=since, after_id=after_id, limit=PAGE)
        if not page:
            return
        yield page
        after_id = page[-1].id


def window(
    store: LogStore, model: str | None, since: float | None, until: float | None
) -> Iterator[StoredRecord]:
    """Every record of `model` from `since` up to `until` (inclusive), in log order."""
    for page in pages(store, model, since):
        for record in page:
            if until is None or record.at <= until:
                yield record


def latest(store: LogStore, model: str | None, since: float | None, n: int) -> list[StoredRecord]:
    """The newest `n` records of `model` from `since` on, oldest first.

    The store reads forward by id only, so this reads windows of ids back from the end, each
    four times wider than the last, until one holds `n` records: a busy log is never read
    whole to find its tail.
    """
    top = top_id(store)
    width = max(n, 64)
    while True:
        start = max(top - width, 0)
        kept: deque[StoredRecord] = deque(maxlen=n)
        for page in pages(store, model, since, after_id=start):
            kept.extend(page)
        if len(kept) >= n or start == 0:
            return list(kept)
        width *= 4


def top_id(store: LogStore) -> int:
    """An id at least as large as any in the log (ids rise from 1, with few gaps)."""
    top = store.count()
    while page := store.read(after_id=top, limit=PAGE):
        top = page[-1].id
    return top


def to_dict(record: StoredRecord) -> dict[str, Any]:
    """The record as an exported row (`at` in Unix seconds, tensors as nested lists)."""
    return {name: getattr(record, name) for name in FIELDS}


def reader_gone() -> None:
    """Stop quietly when the reader of standard output went away (`| head`), as Unix tools do."""
    # Python would complain again when it flushes stdout at exit: point it at /dev/null first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool killed by the broken pipe
