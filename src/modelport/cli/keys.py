"""`modelport keys create|list|revoke`: the API keys that `serve --require-auth` accepts."""

from __future__ import annotations

import json

import click

from modelport.cli.options import console, registry_option, reported
from modelport.config import current_user, registry_location

# The registry module is imported inside the commands: `modelport --help` stays fast.
_SCOPES = ("infer", "read", "admin")
_SCOPE_HELP = (
    "infer: inference and model metadata; read: metadata, metrics and logs; "
    "admin: everything, including loading and unloading models."
)


@click.group()
def keys() -> None:
    """Create, list and revoke API keys for `modelport serve --require-auth`.

    Keys live in the registry database, as hashes: a server sees a new key, or a revoke,
    within seconds. Clients send a key as `Authorization: Bearer KEY` or `x-api-key: KEY`
    (HTTP headers or gRPC metadata).
    """


@keys.command("create")
@click.option("--scope", type=click.Choice(_SCOPES), required=True, help=_SCOPE_HELP)
@click.option(
    "--name",
    default="",
    help="A label to list and revoke the key by (e.g. the client that uses it); unique among "
    "unrevoked keys.",
)
@registry_option
def create(scope: str, name: str, registry: str | None) -> None:
    """Create a key and print its secret, once: only its hash is stored."""
    from modelport.registry.keys import KeyStore

    with reported(), KeyStore.open(registry_location(registry)) as store:
        secret, key = store.create(scope, name=name, created_by=current_user())
    # The secret alone on stdout, so `KEY=$(modelport keys create ...)` captures just it.
    click.echo(secret)
    label = f" {key.name!r}" if key.name else ""
    click.echo(
        f"created key{label} {key.id} with scope {key.scope!r}; store the secret above now: "
        "it cannot be shown again",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@registry_option
def list_keys(as_json: bool, registry: str | None) -> None:
    """List every key, revoked ones included (never their secrets)."""
    from modelport.registry.keys import KeyStore

    with reported(), KeyStore.open(registry_location(registry)) as store:
        found = store.list()
    if as_json:
        click.echo(json.dumps([key.to_dict() for key in found], indent=2))
        return
    if not found:
        console().print("no API keys; create one with `modelport keys create --scope infer`")
        return
    from rich.table import Table

    table = Table("id", "name", "scope", "created", "by", "revoked")
    for key in found:
        table.add_row(
            key.id,
            key.name or "-",
            key.scope,
            key.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            key.created_by,
            "-"
            if key.revoked_at is None
            else f"{key.revoked_at:%Y-%m-%d %H:%M:%S} by {key.revoked_by}",
        )
    console().print(table)


@keys.command("revoke")
@click.argument("key_ref", metavar="ID|NAME")
@registry_option
def revoke(key_ref: str, registry: str | None) -> None:
    """Revoke a key; servers refuse it within seconds. Its record stays in `keys list`."""
    from modelport.registry.keys import KeyStore

    with reported(), KeyStore.open(registry_location(registry)) as store:
        key, now = store.revoke(key_ref, revoked_by=current_user())
    label = f"{key.name!r} ({key.id})" if key.name else key.id
    assert key.revoked_at is not None
    if now:
        click.echo(f"revoked key {label}; servers refuse it within 5 seconds")
    else:
        click.echo(
            f"key {label} was already revoked, at {key.revoked_at:%Y-%m-%d %H:%M:%S} "
            f"by {key.revoked_by}"
        )
