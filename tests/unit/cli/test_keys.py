"""`modelport keys create|list|revoke` on real registries: the secret is shown once, then never."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from modelport.registry.keys import SCOPES, KeyStore, looks_like_key
from modelport.registry.store import Registry

from .conftest import fails, ok, run


@pytest.fixture
def registry(tmp_path: Path) -> str:
    location = str(tmp_path / "registry")
    Registry.open(location).close()
    return location


def create(registry: str, *args: str) -> str:
    """Run `keys create` and return the secret it printed (all of stdout)."""
    result = run("keys", "create", "--registry", registry, *args)
    out = ok(result)
    secret = out.strip()
    assert out == secret + "\n"
    assert looks_like_key(secret)
    assert "cannot be shown again" in result.stderr
    assert secret not in result.stderr
    return secret


def test_create_list_revoke_round_trip(registry: str) -> None:
    secret = create(registry, "--scope", "infer", "--name", "checkout")
    with KeyStore.open(registry) as store:
        key = store.verify(secret)
    assert key is not None
    assert (key.name, key.scope) == ("checkout", "infer")

    listed = ok(run("keys", "list", "--registry", registry))
    assert key.id in listed
    assert "checkout" in listed
    assert "infer" in listed
    assert secret not in listed
    as_json = json.loads(ok(run("keys", "list", "--json", "--registry", registry)))
    assert [(k["id"], k["name"], k["scope"], k["revoked_at"]) for k in as_json] == [
        (key.id, "checkout", "infer", None)
    ]
    assert secret not in json.dumps(as_json)

    out = ok(run("keys", "revoke", "checkout", "--registry", registry))
    assert f"revoked key 'checkout' ({key.id})" in out
    with KeyStore.open(registry) as store:
        assert store.verify(secret) is None
    again = ok(run("keys", "revoke", key.id, "--registry", registry))
    assert "already revoked" in again
    [revoked] = json.loads(ok(run("keys", "list", "--json", "--registry", registry)))
    assert revoked["revoked_at"] is not None
    assert revoked["revoked_by"]


def test_the_registry_comes_from_the_environment(registry: str) -> None:
    result = run("keys", "create", "--scope", "admin", env={"MODELPORT_REGISTRY": registry})
    secret = ok(result).strip()
    with KeyStore.open(registry) as store:
        found = store.verify(secret)
    assert found is not None
    assert found.scope == "admin"
    assert found.name == ""
    listed = ok(run("keys", "list", env={"MODELPORT_REGISTRY": registry}))
    assert found.id in listed


def test_errors_are_one_line_and_change_nothing(registry: str, tmp_path: Path) -> None:
    create(registry, "--scope", "read", "--name", "dash")
    fails(
        run("keys", "create", "--scope", "read", "--name", "dash", "--registry", registry),
        "already named 'dash'",
    )
    fails(
        run("keys", "create", "--scope", "read", "--name", "bad name", "--registry", registry),
        "invalid key name",
    )
    fails(run("keys", "revoke", "nobody", "--registry", registry), "no API key", "keys list")
    missing = str(tmp_path / "elsewhere")
    fails(run("keys", "create", "--scope", "read", "--registry", missing), "no registry")
    fails(run("keys", "list", "--registry", missing), "no registry")
    assert not Path(missing).exists()
    usage = run("keys", "create", "--scope", "root", "--registry", registry)
    assert usage.exit_code == 2
    assert "infer" in usage.stderr
    assert len(json.loads(ok(run("keys", "list", "--json", "--registry", registry)))) == 1


def test_an_empty_list_says_how_to_create_a_key(registry: str) -> None:
    assert "modelport keys create" in ok(run("keys", "list", "--registry", registry))
    assert json.loads(ok(run("keys", "list", "--json", "--registry", registry))) == []


def test_help_lists_the_commands_and_scopes() -> None:
    assert "keys" in ok(run("--help"))
    help_text = ok(run("keys", "create", "--help"))
    for scope in SCOPES:
        assert scope in help_text
    # The CLI spells the scopes out to stay light at start-up; they must match the registry's.
    assert importlib.import_module("modelport.cli.keys")._SCOPES == SCOPES


def test_round_trip_on_postgresql(database_url: str, tmp_path: Path) -> None:
    url = f"{database_url}?artifacts={quote(str(tmp_path / 'artifacts'), safe='/')}"
    Registry.open(url).close()
    secret = create(database_url, "--scope", "read", "--name", "grafana")
    with KeyStore.open(database_url) as store:
        key = store.verify(secret)
    assert key is not None
    listed = ok(run("keys", "list", "--registry", database_url))
    assert key.id in listed
    assert secret not in listed
    ok(run("keys", "revoke", key.id, "--registry", database_url))
    with KeyStore.open(database_url) as store:
        assert store.verify(secret) is None
