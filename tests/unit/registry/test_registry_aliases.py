"""Aliases, rollback and the per-model history, on a real SQLite registry."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelport.errors import Conflict, InvalidInput, NotFound
from modelport.registry.store import PRODUCTION, Registry

from .conftest import Pusher


def test_an_alias_names_a_version_and_production_is_the_default(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    reg = fresh_registry
    for _ in range(3):
        push_version(reg)
    assert reg.resolve("iris").version == 3  # no production alias: the newest
    reg.set_alias("iris", PRODUCTION, 2, actor="bob", reason="v3 under review")
    reg.set_alias("iris", "staging", 3, actor="bob")
    assert reg.aliases("iris") == {"production": 2, "staging": 3}
    assert reg.resolve("iris").version == 2
    assert reg.resolve("iris", "staging").version == 3
    assert reg.resolve("iris", "latest").version == 3
    assert reg.resolve("iris", "1").version == 1
    push_version(reg)
    assert reg.resolve("iris").version == 2  # a push does not move production


def test_rollback_returns_to_the_previous_target_and_back(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    reg = fresh_registry
    for _ in range(3):
        push_version(reg)
    reg.set_alias("iris", PRODUCTION, 1, actor="bob")
    reg.set_alias("iris", PRODUCTION, 3, actor="bob")
    event = reg.rollback("iris", PRODUCTION, actor="carol", reason="v3 misbehaves")
    assert (event.from_version, event.to_version) == (3, 1)
    assert reg.resolve("iris").version == 1
    again = reg.rollback("iris", PRODUCTION, actor="carol")
    assert (again.from_version, again.to_version) == (1, 3)
    assert reg.resolve("iris").version == 3


def test_rollback_needs_an_earlier_target(fresh_registry: Registry, push_version: Pusher) -> None:
    reg = fresh_registry
    push_version(reg)
    with pytest.raises(NotFound, match="no alias 'production'"):
        reg.rollback("iris", PRODUCTION, actor="bob")
    reg.set_alias("iris", PRODUCTION, 1, actor="bob")
    with pytest.raises(Conflict, match="only ever named version 1"):
        reg.rollback("iris", PRODUCTION, actor="bob")


def test_history_records_who_when_from_to_and_why(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    reg = fresh_registry
    push_version(reg)
    push_version(reg)
    reg.set_alias("iris", PRODUCTION, 1, actor="bob", reason="first release")
    reg.set_alias("iris", PRODUCTION, 2, actor="bob")
    reg.rollback("iris", PRODUCTION, actor="carol", reason="bad latency")
    reg.record_event("iris", "load", actor="server", version=2)
    reg.record_event(
        "iris", "load_failed", actor="server", version=2, detail={"error": "warm-up failed"}
    )
    reg.remove_alias("iris", PRODUCTION, actor="dave")
    kinds = [(e.kind, e.alias, e.from_version, e.to_version, e.actor) for e in reg.history("iris")]
    assert kinds == [
        ("push", None, None, 1, "alice"),
        ("push", None, None, 2, "alice"),
        ("alias", "production", None, 1, "bob"),
        ("alias", "production", 1, 2, "bob"),
        ("rollback", "production", 2, 1, "carol"),
        ("load", None, None, 2, "server"),
        ("load_failed", None, None, 2, "server"),
        ("unalias", "production", 1, None, "dave"),
    ]
    events = reg.history("iris")
    assert events[2].reason == "first release"
    assert events[4].reason == "bad latency"
    assert events[6].detail == {"error": "warm-up failed"}
    assert all(e.host == socket.gethostname() for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert reg.aliases("iris") == {}


def test_the_change_counter_grows_with_every_change(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    reg = fresh_registry
    assert reg.change_counter() == 0
    push_version(reg)
    first = reg.change_counter()
    reg.set_alias("iris", "staging", 1, actor="bob")
    assert reg.change_counter() > first


@pytest.mark.parametrize("alias", ["", "1", "42", "-x", "a" * 65, "latest", "a/b", "a..b"])
def test_invalid_aliases_are_refused(
    fresh_registry: Registry, push_version: Pusher, alias: str
) -> None:
    push_version(fresh_registry)
    with pytest.raises(InvalidInput):
        fresh_registry.set_alias("iris", alias, 1, actor="bob")


def test_aliases_must_name_existing_versions_and_models(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    reg = fresh_registry
    push_version(reg)
    with pytest.raises(NotFound, match="no version 7; its versions are 1"):
        reg.set_alias("iris", PRODUCTION, 7, actor="bob")
    with pytest.raises(NotFound, match="unknown"):
        reg.set_alias("nope", PRODUCTION, 1, actor="bob")
    with pytest.raises(NotFound, match="no version or alias 'canary'"):
        reg.resolve("iris", "canary")
    assert reg.history("iris")[-1].kind == "push"  # nothing recorded for refused moves


def test_versions_record_the_host_they_were_pushed_from(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    assert push_version(fresh_registry).created_host == socket.gethostname()
    assert fresh_registry.get("iris").created_host == socket.gethostname()


def test_aliases_survive_reopening(tmp_path: Path, push_version: Pusher) -> None:
    with Registry.open(tmp_path / "r") as reg:
        push_version(reg)
        reg.set_alias("iris", PRODUCTION, 1, actor="bob")
    with Registry.open(tmp_path / "r", create=False) as reg:
        assert reg.aliases("iris") == {"production": 1}
        assert [e.kind for e in reg.history("iris")] == ["push", "alias"]
