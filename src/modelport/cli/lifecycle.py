"""`modelport models alias|rollback|history|verify`: move traffic between versions, audit it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from modelport.cli.models import models
from modelport.cli.options import console, registry_option, reported
from modelport.config import current_user, registry_location
from modelport.errors import InvalidInput, ModelportError

if TYPE_CHECKING:
    from modelport.registry.manifest import Event

_REASON_HELP = "Why (kept in `models history`)."


@models.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False, type=int)
@click.option("--reason", default=None, help=_REASON_HELP)
@click.option("--remove", is_flag=True, help="Delete the alias instead of moving it.")
@registry_option
def alias(
    name: str,
    alias: str,
    version: int | None,
    reason: str | None,
    remove: bool,
    registry: str | None,
) -> None:
    """Point ALIAS of model NAME at VERSION (e.g. `models alias iris production 3`).

    `production` is what /v2/models/NAME/... serves when it is set; any alias is served at
    /v2/models/NAME/versions/ALIAS/.... Running servers follow the move within seconds.
    """
    from modelport.registry.store import Registry

    with reported():
        if remove == (version is not None):
            raise InvalidInput("give a VERSION to point the alias at, or --remove to delete it")
        with Registry.open(registry_location(registry), create=False) as store:
            if remove:
                event = store.remove_alias(name, alias, actor=current_user(), reason=reason)
            else:
                assert version is not None
                event = store.set_alias(name, alias, version, actor=current_user(), reason=reason)
    click.echo(_moved(event))


@models.command("rollback")
@click.argument("name")
@click.argument("alias", default="production")
@click.option("--reason", default=None, help=_REASON_HELP)
@registry_option
def rollback(name: str, alias: str, reason: str | None, registry: str | None) -> None:
    """Move ALIAS (default: production) of NAME back to the version it named before.

    Rolling back twice returns to where it was; `models history NAME` shows every move.
    """
    from modelport.registry.store import Registry

    with reported(), Registry.open(registry_location(registry), create=False) as store:
        event = store.rollback(name, alias, actor=current_user(), reason=reason)
    click.echo(_moved(event))


@models.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@registry_option
def history(name: str, as_json: bool, registry: str | None) -> None:
    """Every push, alias move, rollback, load, unload and batch job of NAME: when, who, why."""
    from modelport.registry.store import Registry

    with reported(), Registry.open(registry_location(registry), create=False) as store:
        events = store.history(name)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in events], indent=2))
        return
    from rich.table import Table

    table = Table("when", "what", "alias", "from", "to", "who", "where", "reason", title=name)
    for e in events:
        table.add_row(
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.kind,
            e.alias or "",
            "" if e.from_version is None else str(e.from_version),
            "" if e.to_version is None else str(e.to_version),
            e.actor,
            e.host,
            e.reason or _detail_line(e),
        )
    console().print(table)


@models.command("verify")
@click.argument("name", required=False)
@registry_option
def verify(name: str | None, registry: str | None) -> None:
    """Re-hash every stored artifact (of NAME, or of every model) against its recorded digest.

    Prints one line per artifact; exits 1 if any is missing or changed.
    """
    from modelport.registry.store import Registry

    failures = 0
    with reported(), Registry.open(registry_location(registry), create=False) as store:
        names = [name] if name else store.models()
        for model in names:
            for mv in store.versions(model):
                checks = [("artifact", store.verify)]
                if mv.compiled is not None:
                    checks.append(("compiled", store.verify_compiled))
                for what, check in checks:
                    label = f"{mv.name}:{mv.version} {what}"
                    try:
                        check(mv)
                    except ModelportError as exc:
                        failures += 1
                        click.secho(f"FAIL  {label}: {exc.message}", fg="red")
                    else:
                        click.echo(f"ok    {label}")
    if failures:
        click.secho(f"{failures} artifact(s) failed verification", fg="red", err=True)
        sys.exit(1)


def _detail_line(event: Event) -> str:
    """What the reason column shows for an event without a reason."""
    detail = event.detail or {}
    if event.kind == "batch":
        return (
            f"job {detail.get('job_id', '?')}: {detail.get('rows_out', 0):,} of "
            f"{detail.get('rows_in', 0):,} rows -> {detail.get('output', '?')} "
            f"({detail.get('error_rows', 0):,} errors)"
        )
    return str(detail.get("error") or "")


def _moved(event: Event) -> str:
    """One line saying what an alias event did."""
    if event.kind == "unalias":
        return f"{event.name}: alias {event.alias} removed (was version {event.from_version})"
    before = "new" if event.from_version is None else f"was {event.from_version}"
    return f"{event.name}: {event.alias} -> version {event.to_version} ({before})"
