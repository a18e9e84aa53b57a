"""Registry: versions, provenance, trust, migrations and concurrent pushers on real SQLite files."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelport.errors import Conflict, InvalidInput, NotFound, Unsupported, UntrustedArtifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry import database, store
from modelport.registry.database import HEAD_REVISION
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry

from .conftest import check_concurrent_pushes, push_concurrently, push_file

SIGNATURE = Signature(
    inputs=(TensorSpec("input-0", "FP32", (-1, 4)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)), TensorSpec("predict_proba", "FP32", (-1, 3))),
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def registry(root: Path) -> Iterator[Registry]:
    with Registry.open(root) as opened:
        yield opened


def _artifact(tmp_path: Path, data: bytes, name: str = "model.skops") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _push(registry: Registry, artifact: Path, name: str = "iris", **overrides: Any) -> ModelVersion:
    return push_file(registry, artifact, name=name, signature=SIGNATURE, **overrides)


def _sqlite(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "registry.db") as conn:
        return conn.execute(sql).fetchall()


def test_push_then_read_back_everything(registry: Registry, tmp_path: Path) -> None:
    data = b"skops bytes"
    before = datetime.now(UTC)
    pushed = _push(
        registry,
        _artifact(tmp_path, data),
        metadata={"accuracy": 0.97, "tags": ("a", "b"), "owner": {"team": "ml"}, "n": None},
        source="/home/alice/models/iris.skops",
    )

    assert pushed.name == "iris"
    assert pushed.version == 1
    assert pushed.digest == hashlib.sha256(data).hexdigest()
    assert pushed.size == len(data)
    assert pushed.format == "sklearn"
    assert pushed.signature == SIGNATURE
    assert pushed.created_by == "alice"
    assert pushed.source == "iris.skops"
    assert (pushed.pickle, pushed.trusted_pickle) == (False, False)
    assert pushed.metadata == {
        "accuracy": 0.97,
        "tags": ["a", "b"],
        "owner": {"team": "ml"},
        "n": None,
    }
    assert pushed.created_at.tzinfo is not None
    assert before <= pushed.created_at <= datetime.now(UTC)

    assert registry.get("iris") == pushed
    assert registry.get("iris", 1) == pushed
    assert registry.versions("iris") == [pushed]
    assert registry.latest() == [pushed]
    assert registry.models() == ["iris"]
    assert registry.artifact_path(pushed).read_bytes() == data
    registry.verify(pushed)


def test_reopened_registry_reads_the_same_versions(root: Path, tmp_path: Path) -> None:
    with Registry.open(root) as first:
        pushed = _push(first, _artifact(tmp_path, b"v1"), metadata={"k": [1, 2]})
    with Registry.open(root) as second:
        assert second.get("iris", 1) == pushed


def test_versions_are_numbered_and_immutable(registry: Registry, tmp_path: Path) -> None:
    first = _push(registry, _artifact(tmp_path, b"one", "a.skops"))
    second = _push(registry, _artifact(tmp_path, b"two", "b.skops"))
    third = _push(registry, _artifact(tmp_path, b"three", "c.skops"))

    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert registry.versions("iris") == [first, second, third]
    assert registry.get("iris") == third
    assert registry.get("iris", 1) == first
    assert registry.artifact_path(first).read_bytes() == b"one"


def test_latest_and_models_span_models(registry: Registry, tmp_path: Path) -> None:
    _push(registry, _artifact(tmp_path, b"w1", "a"), name="wine")
    wine2 = _push(registry, _artifact(tmp_path, b"w2", "b"), name="wine")
    iris1 = _push(registry, _artifact(tmp_path, b"i1", "c"), name="iris")
    big = _push(registry, _artifact(tmp_path, b"b1", "d"), name="Boston")

    assert registry.models() == ["Boston", "iris", "wine"]
    assert registry.latest() == [big, iris1, wine2]


def test_empty_registry(registry: Registry) -> None:
    assert registry.models() == []
    assert registry.latest() == []


def test_duplicate_artifact_is_a_conflict_naming_the_version(
    registry: Registry, tmp_path: Path
) -> None:
    _push(registry, _artifact(tmp_path, b"one", "a"))
    _push(registry, _artifact(tmp_path, b"two", "b"))
    with pytest.raises(Conflict, match="already has this artifact as version 2"):
        _push(registry, _artifact(tmp_path, b"two", "copy-of-b"))
    assert [mv.version for mv in registry.versions("iris")] == [1, 2]
    # Other models may hold the same bytes; the blob is shared.
    other = _push(registry, _artifact(tmp_path, b"two", "c"), name="iris-copy")
    assert other.version == 1
    assert registry.artifact_path(other) == registry.artifact_path(registry.get("iris", 2))


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "", ".hidden", "a..b", "x" * 129, "modèle", "名前", "a b", "a\\b"]
)
def test_invalid_names_are_refused(registry: Registry, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model name"):
        _push(registry, _artifact(tmp_path, b"data"), name=name)
    with pytest.raises(InvalidInput, match="invalid model name"):
        registry.get(name)
    assert registry.models() == []


def test_longest_valid_name(registry: Registry, tmp_path: Path) -> None:
    name = "m" * 128
    assert _push(registry, _artifact(tmp_path, b"data"), name=name).name == name


@pytest.mark.parametrize("fmt", ["", "a/b", "x" * 65, "../onnx", "pkg mod:Class"])
def test_invalid_format_is_refused(registry: Registry, tmp_path: Path, fmt: str) -> None:
    with pytest.raises(InvalidInput, match="invalid model format"):
        _push(registry, _artifact(tmp_path, b"data"), format=fmt)


@pytest.mark.parametrize("value", [object(), float("nan"), {1, 2}, b"bytes"])
def test_metadata_must_be_json(registry: Registry, tmp_path: Path, value: object) -> None:
    with pytest.raises(InvalidInput, match="metadata 'bad' is not JSON"):
        _push(registry, _artifact(tmp_path, b"data"), metadata={"ok": 1, "bad": value})
    assert registry.models() == []


def test_pickle_without_trust_is_refused_and_nothing_is_stored(
    registry: Registry, root: Path, tmp_path: Path
) -> None:
    plain = _artifact(tmp_path, b"opaque bytes", "model.bin")
    with pytest.raises(UntrustedArtifact, match="push with --trust-pickle"):
        _push(registry, plain, pickle=True)
    # A pickle is recognised even when the caller does not say so.
    sneaky = _artifact(tmp_path, pickle.dumps({"w": 1}, protocol=4), "weights.bin")
    with pytest.raises(UntrustedArtifact, match="can run code when loaded"):
        _push(registry, sneaky, pickle=False)
    assert registry.models() == []
    assert not [p for p in (root / "blobs").rglob("*") if p.is_file()]


def test_trusted_pickle_is_recorded(registry: Registry, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, pickle.dumps({"w": 1}, protocol=5), "model.joblib")
    pushed = _push(registry, artifact, pickle=True, trusted_pickle=True)
    assert (pushed.pickle, pushed.trusted_pickle) == (True, True)
    assert registry.get("iris") == pushed
    # Trust means nothing for an artifact that cannot run code, so none is recorded.
    safe = _push(registry, _artifact(tmp_path, b"zip", "m.skops"), name="safe", trusted_pickle=True)
    assert (safe.pickle, safe.trusted_pickle) == (False, False)


def test_missing_artifact_file(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"'gone\.skops' is not a readable file") as caught:
        _push(registry, tmp_path / "gone.skops")
    assert str(tmp_path) not in caught.value.message


@pytest.mark.parametrize(
    ("source", "recorded"),
    [("iris.skops", "iris.skops"), ("/a/b/iris.onnx", "iris.onnx"), ("C:\\m\\x.onnx", "x.onnx")],
)
def test_source_keeps_only_the_base_name(
    registry: Registry, tmp_path: Path, source: str, recorded: str
) -> None:
    assert _push(registry, _artifact(tmp_path, b"data"), source=source).source == recorded


def test_not_found_messages_say_what_exists(registry: Registry, tmp_path: Path) -> None:
    for i, data in enumerate([b"1", b"2", b"3"]):
        _push(registry, _artifact(tmp_path, data, f"{i}.skops"))

    with pytest.raises(NotFound, match="model 'iris' has no version 7; its versions are 1-3"):
        registry.get("iris", 7)
    with pytest.raises(NotFound, match="model 'wine' is unknown; run `modelport models list`"):
        registry.get("wine")
    with pytest.raises(NotFound, match="model 'wine' is unknown"):
        registry.get("wine", 1)
    with pytest.raises(NotFound, match="model 'wine' is unknown"):
        registry.versions("wine")
    with pytest.raises(InvalidInput, match="numbered from 1"):
        registry.get("iris", 0)


def test_tampered_artifact_fails_verification(registry: Registry, tmp_path: Path) -> None:
    pushed = _push(registry, _artifact(tmp_path, b"original"))
    path = registry.artifact_path(pushed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    path.write_bytes(b"tampered")

    with pytest.raises(UntrustedArtifact) as caught:
        registry.verify(pushed)
    message = caught.value.message
    assert pushed.digest in message
    assert hashlib.sha256(b"tampered").hexdigest() in message
    assert str(tmp_path) not in message


def test_layout_on_disk(registry: Registry, root: Path, tmp_path: Path) -> None:
    pushed = _push(registry, _artifact(tmp_path, b"data"))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert (root / "registry.db").is_file()
    assert registry.artifact_path(pushed) == (
        root / "blobs" / "sha256" / pushed.digest[:2] / pushed.digest
    )
    assert _sqlite(root, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(
    "location", ["s3://key:s3cret@bucket/registry", "postgresql+psycopg2://u:s3cret@db/models"]
)
def test_other_urls_are_not_supported(location: str) -> None:
    with pytest.raises(Unsupported, match=r"not supported; .*postgresql://") as caught:
        Registry.open(location)
    assert "s3cret" not in caught.value.message


def test_location_that_is_a_file(tmp_path: Path) -> None:
    path = _artifact(tmp_path, b"", "not-a-dir")
    with pytest.raises(InvalidInput, match="not a directory") as caught:
        Registry.open(path)
    assert str(tmp_path) not in caught.value.message


def test_head_revision_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    migrations = Path(store.__file__).with_name("migrations")
    assert ScriptDirectory(str(migrations)).get_heads() == [HEAD_REVISION]


def test_migrations_build_the_tables_the_queries_use(registry: Registry, root: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(f"sqlite:///{root / 'registry.db'}")
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), database.schema) == []
    finally:
        engine.dispose()
    assert _sqlite(root, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def _opens_with_alembic(root: Path) -> bool:
    """Open the registry in a fresh interpreter; True if Alembic had to be imported."""
    script = (
        "import sys\n"
        "from modelport.registry.store import Registry\n"
        f"Registry.open({str(root)!r}).close()\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip() == "True"


def test_opening_an_up_to_date_registry_runs_no_migration(root: Path) -> None:
    assert _opens_with_alembic(root)  # a new registry is migrated
    assert _sqlite(root, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert not _opens_with_alembic(root)  # an up-to-date one is not even inspected by Alembic
    assert _sqlite(root, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def test_a_registry_from_a_newer_modelport_is_refused(root: Path) -> None:
    Registry.open(root).close()
    with sqlite3.connect(root / "registry.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(Unsupported, match="newer modelport"):
        Registry.open(root)


def test_a_forked_child_uses_its_own_connections(registry: Registry, tmp_path: Path) -> None:
    _push(registry, _artifact(tmp_path, b"parent-1", "p1"))
    child_artifact = _artifact(tmp_path, b"child", "c1")

    def child() -> None:
        assert registry.models() == ["iris"]
        _push(registry, child_artifact)

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 0
    _push(registry, _artifact(tmp_path, b"parent-2", "p2"))
    assert [mv.source for mv in registry.versions("iris")] == ["p1", "c1", "p2"]


def test_concurrent_pushers_in_several_processes(root: Path, tmp_path: Path) -> None:
    workers, pushes = 4, 10
    push_concurrently(str(root), tmp_path, workers, pushes)
    assert _sqlite(root, "PRAGMA integrity_check") == [("ok",)]
    with Registry.open(root) as registry:
        check_concurrent_pushes(registry, workers, pushes)
