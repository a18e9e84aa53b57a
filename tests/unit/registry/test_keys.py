"""API keys in the registry database: created once, stored hashed, listed, revoked, verified.

Every test runs on an embedded SQLite registry and, when MODELPORT_TEST_POSTGRES is set, on a
shared registry in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from modelport.errors import Conflict, InvalidInput, NotFound, NotReady
from modelport.registry import database
from modelport.registry.database import HEAD_REVISION, api_keys_table
from modelport.registry.keys import SCOPES, KeyStore, looks_like_key
from modelport.registry.store import Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new registry: a directory, or a PostgreSQL database with an artifact root."""
    if request.param == "sqlite":
        path = str(tmp_path / "registry")
    else:
        url = request.getfixturevalue("database_url")
        path = f"{url}?artifacts={quote(str(tmp_path / 'artifacts'), safe='/')}"
    Registry.open(path).close()
    return path


@pytest.fixture
def store(location: str) -> Iterator[KeyStore]:
    with KeyStore.open(location) as opened:
        yield opened


def _rows(location: str) -> list[dict[str, object]]:
    """Every stored column of every key, read straight from the database."""
    if location.startswith("postgresql"):
        engine = database.postgres_engine(database.postgres_url(location)[0])
    else:
        engine = database.sqlite_engine(Path(location) / database.DATABASE_FILE)
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(sa.select(api_keys_table)).mappings()]
    finally:
        engine.dispose()


def test_a_new_key_verifies_and_only_its_hash_is_stored(store: KeyStore, location: str) -> None:
    secret, key = store.create("infer", name="ci-pipeline", created_by="alice")
    assert looks_like_key(secret)
    assert secret.startswith("mp_")
    assert len(secret) == 46
    assert key.id == secret[:11]
    assert (key.name, key.scope, key.created_by, key.revoked_at) == (
        "ci-pipeline",
        "infer",
        "alice",
        None,
    )
    assert store.verify(secret) == key
    [row] = _rows(location)
    assert row["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(value) for value in row.values())


def test_every_key_gets_its_own_secret_and_id(store: KeyStore) -> None:
    created = [store.create("read", created_by="alice") for _ in range(20)]
    assert len({secret for secret, _ in created}) == 20
    assert len({key.id for _, key in created}) == 20
    for secret, key in created:
        assert store.verify(secret) == key


def test_list_shows_every_key_oldest_first_without_secrets(store: KeyStore) -> None:
    first_secret, first = store.create("infer", name="first", created_by="alice")
    second_secret, second = store.create("admin", created_by="bob")
    listed = store.list()
    assert listed == [first, second]
    assert second.name == ""
    assert second.label == second.id
    for key in listed:
        shown = str(key.to_dict())
        assert first_secret not in shown
        assert second_secret not in shown
        assert "sha256" not in shown
    assert set(first.to_dict()) == {
        "id",
        "name",
        "scope",
        "created_at",
        "created_by",
        "revoked_at",
        "revoked_by",
    }


def test_keys_survive_reopening(location: str) -> None:
    with KeyStore.open(location) as store:
        secret, key = store.create("read", name="dashboards", created_by="alice")
    with KeyStore.open(location) as store:
        assert store.verify(secret) == key
        assert store.list() == [key]


@pytest.mark.parametrize("how", ["id", "name", "secret"])
def test_revoke_by_id_name_or_secret(store: KeyStore, how: str) -> None:
    secret, key = store.create("admin", name="ops", created_by="alice")
    other_secret, other = store.create("admin", name="other", created_by="alice")
    ref = {"id": key.id, "name": "ops", "secret": secret}[how]
    revoked, now = store.revoke(ref, revoked_by="bob")
    assert now
    assert (revoked.id, revoked.revoked_by) == (key.id, "bob")
    assert revoked.revoked_at is not None
    assert revoked.revoked_at >= key.created_at
    assert store.verify(secret) is None
    assert store.verify(other_secret) == other
    assert store.list() == [revoked, other]


def test_revoking_twice_changes_nothing_and_says_so(store: KeyStore) -> None:
    store.create("infer", name="old", created_by="alice")
    first, now = store.revoke("old", revoked_by="bob")
    again, again_now = store.revoke(first.id, revoked_by="carol")
    assert now
    assert not again_now
    assert again == first  # still revoked by bob, at the first time
    by_name, by_name_now = store.revoke("old", revoked_by="carol")
    assert (by_name, by_name_now) == (first, False)


def test_unknown_keys_are_not_found(store: KeyStore) -> None:
    store.create("infer", name="known", created_by="alice")
    with pytest.raises(NotFound, match="keys list"):
        store.revoke("unknown", revoked_by="bob")
    with pytest.raises(NotFound, match="mp_AAAAAAAA"):
        store.revoke("mp_AAAAAAAA", revoked_by="bob")
    unknown_secret = "mp_" + "A" * 43
    with pytest.raises(NotFound) as caught:
        store.get(unknown_secret)
    assert unknown_secret not in caught.value.message


def test_a_name_is_unique_among_unrevoked_keys_and_free_again_after_revoke(
    store: KeyStore,
) -> None:
    first_secret, first = store.create("infer", name="app", created_by="alice")
    with pytest.raises(Conflict, match="revoke it first"):
        store.create("admin", name="app", created_by="alice")
    store.revoke("app", revoked_by="alice")
    second_secret, second = store.create("read", name="app", created_by="alice")
    assert store.get("app") == second
    assert store.verify(second_secret) == second
    assert store.verify(first_secret) is None
    # Revoking by name reaches the unrevoked key; once both are revoked, the later one.
    revoked, now = store.revoke("app", revoked_by="alice")
    assert (revoked.id, now) == (second.id, True)
    assert store.get("app").id == second.id
    assert store.get(first.id).revoked_at is not None


def test_unknown_scopes_and_bad_names_are_refused(store: KeyStore) -> None:
    # One registry for all cases: each PostgreSQL database costs a setup.
    for scope in ("", "write", "ADMIN", "infer read"):
        with pytest.raises(InvalidInput, match="infer, read, admin"):
            store.create(scope, created_by="alice")
    for name in ("-x", "mp_lookalike", "with space", "a" * 65, "é", "a/b"):
        with pytest.raises(InvalidInput, match="invalid key name"):
            store.create("infer", name=name, created_by="alice")
    assert store.list() == []


def test_strings_not_shaped_like_a_key_never_verify(store: KeyStore) -> None:
    secret, _ = store.create("infer", created_by="alice")
    for candidate in (
        "",
        "mp_",
        secret[:-1],
        secret + "A",
        "xx_" + secret[3:],
        "mp_" + "!" * 43,
        f" {secret}",
    ):
        assert store.verify(candidate) is None, candidate
    assert store.verify(secret) is not None


def test_a_well_formed_but_unknown_key_does_not_verify(store: KeyStore) -> None:
    secret, _ = store.create("infer", created_by="alice")
    changed = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert store.verify(changed) is None


def test_scopes() -> None:
    assert SCOPES == ("infer", "read", "admin")


def test_a_missing_registry_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no registry"):
        KeyStore.open(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()


def test_an_unreachable_database_is_not_ready(tmp_path: Path) -> None:
    # A database file in a directory that does not exist cannot be opened.
    engine = database.sqlite_engine(tmp_path / "missing" / database.DATABASE_FILE)
    with KeyStore(engine, owns_engine=True) as store, pytest.raises(NotReady) as caught:
        store.verify("mp_" + "A" * 43)
    assert "missing" not in caught.value.message


def test_a_registry_at_revision_0005_gains_the_keys_table(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    root = tmp_path / "registry"
    root.mkdir()
    engine = database.sqlite_engine(root / database.DATABASE_FILE)
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(database.__file__).with_name("migrations"))
            )
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
    finally:
        engine.dispose()
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "api_keys" not in tables
    with KeyStore.open(root) as store:
        secret, key = store.create("infer", created_by="alice")
        assert store.verify(secret) == key
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]
