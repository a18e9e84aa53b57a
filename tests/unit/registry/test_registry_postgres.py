"""A shared registry on a real PostgreSQL server: each test gets a database of its own.

The server comes from MODELPORT_TEST_POSTGRES, a URL whose role may create databases
(.ci/run sets it); without it these tests are skipped.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from modelport.cli import main
from modelport.demo import build_greeting_language
from modelport.errors import InvalidInput, ModelportError, NotFound, NotReady, Unsupported
from modelport.registry import database
from modelport.registry.database import HEAD_REVISION
from modelport.registry.store import PRODUCTION, Registry

from ...conftest import POSTGRES_SERVER, POSTGRES_SKIP_REASON
from .conftest import (
    IRIS_SIGNATURE,
    Pusher,
    check_concurrent_pushes,
    push_concurrently,
    run_at_once,
)

pytestmark = pytest.mark.skipif(not POSTGRES_SERVER, reason=POSTGRES_SKIP_REASON)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def url(database_url: str, artifacts: Path) -> str:
    """The registry URL that creates the registry: the database plus its artifact root."""
    return _with_artifacts(database_url, artifacts)


def _with_artifacts(location: str, root: Path | str) -> str:
    return f"{location}?artifacts={quote(str(root), safe='/')}"


def _query(location: str, sql: str) -> list[tuple[object, ...]]:
    engine = database.postgres_engine(database.postgres_url(location)[0])
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def _has_schema(location: str) -> bool:
    found = _query(location, "SELECT to_regclass('alembic_version') IS NOT NULL")
    return found == [(True,)]


def test_push_get_versions_latest(
    url: str, database_url: str, artifacts: Path, push_version: Pusher
) -> None:
    with Registry.open(url) as registry:
        first = push_version(registry, metadata={"git": "3f2c1a", "scores": [0.9, 0.8]})
        second = push_version(registry)
        wine = push_version(registry, name="wine")
        assert [first.version, second.version, wine.version] == [1, 2, 1]
        assert first.metadata == {"git": "3f2c1a", "scores": [0.9, 0.8]}
        assert registry.get("iris") == second
        assert registry.get("iris", 1) == first
        assert registry.versions("iris") == [first, second]
        assert registry.latest() == [second, wine]
        assert registry.models() == ["iris", "wine"]
        path = registry.artifact_path(first)
        assert path == artifacts / "sha256" / first.digest[:2] / first.digest
        registry.verify(first)
        with pytest.raises(NotFound, match="its versions are 1-2"):
            registry.get("iris", 3)
    # Opened again, as another replica would: the artifact root comes from the database.
    with Registry.open(database_url, create=False) as again:
        assert again.versions("iris") == [first, second]
        assert again.artifact_path(second).is_relative_to(artifacts)
        again.verify(second)
    assert _query(database_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_a_database_without_a_registry_is_not_found(database_url: str, artifacts: Path) -> None:
    for location in (database_url, _with_artifacts(database_url, artifacts)):
        with pytest.raises(NotFound, match=r"no registry at .*`modelport models push`"):
            Registry.open(location, create=False)
    assert not _has_schema(database_url)  # reading created nothing


def test_creating_needs_the_artifacts_parameter(database_url: str) -> None:
    with pytest.raises(InvalidInput, match=r"add \?artifacts=/PATH to the URL"):
        Registry.open(database_url)
    assert not _has_schema(database_url)  # refused before any table was made


def test_the_artifact_root_is_remembered_and_can_be_overridden(
    url: str, database_url: str, artifacts: Path, tmp_path: Path, push_version: Pusher
) -> None:
    with Registry.open(url) as registry:
        pushed = push_version(registry, data=b"shared bytes")
    # The same files seen at another mount point, as on another machine.
    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(artifacts)
    with Registry.open(_with_artifacts(database_url, elsewhere), create=False) as registry:
        assert registry.artifact_path(pushed).is_relative_to(elsewhere)
        registry.verify(pushed)
    # Overriding is for the one process: the recorded root stays the creator's.
    with Registry.open(database_url, create=False) as registry:
        assert registry.artifact_path(pushed).is_relative_to(artifacts)
    assert _query(database_url, "SELECT key, value FROM settings") == [
        ("artifacts", str(artifacts))
    ]


@pytest.mark.parametrize(
    ("artifacts_value", "error", "words"),
    [
        ("s3://bucket/models", Unsupported, "object store (s3://) are not supported yet"),
        ("relative/dir", InvalidInput, "must be an absolute path"),
    ],
)
def test_artifact_roots_that_cannot_be_used(
    database_url: str, artifacts_value: str, error: type[ModelportError], words: str
) -> None:
    with pytest.raises(error) as caught:
        Registry.open(f"{database_url}?artifacts={artifacts_value}")
    assert words in caught.value.message
    assert not _has_schema(database_url)


def test_no_message_repeats_the_password(database_url: str) -> None:
    url = sa.make_url(database_url)
    # With trust authentication the server ignores a password; a real one must still work.
    secret = url.password or "s3cret"
    with_password = url.set(password=secret).render_as_string(hide_password=False)
    missing = f"{url.database}_missing"
    in_query = sa.URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=missing,
        query={"password": secret},
    )
    cases: list[tuple[str, bool, type[ModelportError], str]] = [
        (with_password, False, NotFound, "no registry at"),
        (with_password, True, InvalidInput, "?artifacts=/PATH"),
        (
            url.set(password=secret, database=missing).render_as_string(hide_password=False),
            True,
            NotReady,
            f'database "{missing}" does not exist',
        ),
        (in_query.render_as_string(), True, NotReady, f'database "{missing}" does not exist'),
        (f"postgresql://u:{secret}@{url.host}:notaport/db", True, InvalidInput, "does not parse"),
        (f"postgresql+asyncpg://u:{secret}@{url.host}/db", True, Unsupported, "psycopg 3"),
        (
            _with_artifacts(database_url, f"s3://key:{secret}@bucket/models"),
            True,
            Unsupported,
            "object store (s3://)",
        ),
    ]
    for location, create, error, words in cases:
        with pytest.raises(error) as caught:
            Registry.open(location, create=create)
        message = caught.value.message
        assert words in message
        assert secret not in message, message


def test_concurrent_pushers_in_several_processes(url: str, tmp_path: Path) -> None:
    workers, pushes = 4, 5
    push_concurrently(url, tmp_path, workers, pushes)
    with Registry.open(url) as registry:
        check_concurrent_pushes(registry, workers, pushes)
        # Every push is in the history, and the change counter counted each of them.
        assert registry.change_counter() == workers * pushes * 2


_OPENER = """
from modelport.registry.store import Registry

barrier.wait(timeout=60)  # open a database without a registry at the same moment as the others
Registry.open(location).close()
"""


def test_concurrent_openers_of_a_new_database_migrate_it_once(url: str, database_url: str) -> None:
    run_at_once(_OPENER, [{"location": url}] * 3)
    assert _query(database_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert _query(database_url, "SELECT count(*) FROM settings") == [(1,)]
    with Registry.open(database_url, create=False) as registry:
        assert registry.models() == []


def test_migrations_build_the_tables_the_queries_use(url: str, database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    Registry.open(url).close()
    engine = database.postgres_engine(database.postgres_url(database_url)[0])
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), database.schema) == []
    finally:
        engine.dispose()


def test_a_registry_at_revision_0003_is_migrated_in_place(
    url: str, database_url: str, artifacts: Path
) -> None:
    from alembic import command
    from alembic.config import Config

    engine = database.postgres_engine(database.postgres_url(database_url)[0])
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(database.__file__).with_name("migrations"))
            )
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
            created = sa.func.now()
            conn.execute(database.models_table.insert().values(name="old", created_at=created))
            conn.execute(
                database.versions_table.insert().values(
                    name="old",
                    version=1,
                    digest="ab" * 32,
                    size=3,
                    format="onnx",
                    signature=IRIS_SIGNATURE.to_dict(),
                    created_at=created,
                    created_by="bob",
                    source="old.onnx",
                    pickle=False,
                    trusted_pickle=False,
                    metadata={"git": "3f2c1a"},
                )
            )
    finally:
        engine.dispose()
    assert not _query(database_url, "SELECT to_regclass('settings') IS NOT NULL")[0][0]
    with Registry.open(url) as registry:
        old = registry.get("old", 1)
        assert (old.created_by, old.metadata) == ("bob", {"git": "3f2c1a"})
    assert _query(database_url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert _query(database_url, "SELECT value FROM settings") == [(str(artifacts),)]


def test_an_alias_move_is_seen_by_every_replica(url: str, push_version: Pusher) -> None:
    with Registry.open(url) as first, Registry.open(url) as second:
        push_version(first)
        push_version(first)
        before = second.change_counter()
        first.set_alias("iris", PRODUCTION, 1, actor="bob")
        assert second.change_counter() > before
        assert second.resolve("iris").version == 1
        second.set_alias("iris", PRODUCTION, 2, actor="carol", reason="v2 is better")
        assert first.resolve("iris").version == 2
        assert [e.kind for e in first.history("iris")] == ["push", "push", "alias", "alias"]


def test_a_forked_child_uses_its_own_connections(url: str, push_version: Pusher) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    with Registry.open(url) as registry:
        push_version(registry)

        def child() -> None:
            assert registry.models() == ["iris"]
            push_version(registry, data=b"child")

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(timeout=60)
        assert process.exitcode == 0
        push_version(registry)
        versions = registry.versions("iris")
        assert [mv.version for mv in versions] == [1, 2, 3]
        assert registry.artifact_path(versions[1]).read_bytes() == b"child"


def _cli(*args: str, registry: str = "") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, list(args), env={"COLUMNS": "250", "MODELPORT_REGISTRY": registry}
    )
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_pushes_lists_and_shows_on_postgresql(
    url: str, database_url: str, tmp_path: Path
) -> None:
    model, _, _ = build_greeting_language(tmp_path)
    code, out, err = _cli("models", "push", str(model), "--name", "greeting", "--registry", url)
    assert (code, out.strip()) == (0, "1"), err

    # MODELPORT_REGISTRY works like --registry, and the artifact root is not needed again.
    code, out, err = _cli("models", "list", "--json", registry=database_url)
    assert code == 0, err
    listed = json.loads(out)
    assert [(m["name"], m["version"], m["versions"]) for m in listed] == [("greeting", 1, 1)]

    code, out, err = _cli("models", "show", "greeting:1", "--json", "--registry", database_url)
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["digest"], shown["format"]) == (listed[0]["digest"], "onnx")

    missing = sa.make_url(database_url).set(password="s3cret", database="modelport_missing")
    code, out, err = _cli(
        "models", "list", "--registry", missing.render_as_string(hide_password=False)
    )
    assert code == 1
    assert err.startswith("error: cannot use the registry database"), err
    assert "s3cret" not in err
