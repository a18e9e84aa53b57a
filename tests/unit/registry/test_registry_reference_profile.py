"""Reference profiles stored with versions: round trips on SQLite and PostgreSQL, migration."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.errors import InvalidInput
from modelport.monitoring.drift import DriftMonitor, ReferenceProfile
from modelport.monitoring.reference_profile import build_profile
from modelport.registry import database, location
from modelport.registry.database import HEAD_REVISION
from modelport.registry.store import Registry

from .conftest import IRIS_SIGNATURE, Pusher


def _profile() -> dict[str, Any]:
    data = np.random.default_rng(0).normal(size=(500, 4))
    columns = {f"f{j}": data[:, j] for j in range(4)}
    return build_profile(columns, IRIS_SIGNATURE.inputs)


def _round_trip(registry: Registry, push_version: Pusher) -> None:
    profile = _profile()
    plain = push_version(registry)
    profiled = push_version(registry, reference_profile=profile)
    assert plain.reference_profile is None
    assert profiled.reference_profile == profile
    assert registry.get("iris", 2).reference_profile == profile
    assert registry.get("iris").reference_profile == profile
    assert [mv.reference_profile for mv in registry.versions("iris")] == [None, profile]
    assert [mv.reference_profile for mv in registry.latest()] == [profile]
    assert registry.resolve("iris", "2").to_dict()["reference_profile"] == profile
    # What the server builds from it.
    stored = registry.get("iris", 2).reference_profile
    assert stored is not None
    monitor = DriftMonitor(ReferenceProfile.from_dict(stored))
    assert [f["name"] for f in monitor.report()["features"]] == ["f0", "f1", "f2", "f3"]


def test_a_reference_profile_round_trips_on_sqlite(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    _round_trip(fresh_registry, push_version)


def test_a_reference_profile_round_trips_on_postgresql(
    database_url: str, tmp_path: Path, push_version: Pusher
) -> None:
    url = f"{database_url}?artifacts={quote(str(tmp_path / 'artifacts'), safe='/')}"
    with Registry.open(url) as registry:
        _round_trip(registry, push_version)


def test_a_profile_that_is_not_json_is_refused(
    fresh_registry: Registry, push_version: Pusher
) -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        push_version(fresh_registry, reference_profile={"rows": float("nan")})
    with pytest.raises(InvalidInput, match="not JSON"):
        push_version(fresh_registry, reference_profile={"features": {1, 2}})
    assert fresh_registry.models() == []


def _registry_at_0004(root: Path) -> None:
    """A registry as modelport wrote it before reference profiles: schema 0004, one version."""
    from alembic import command
    from alembic.config import Config

    root.mkdir(parents=True)
    engine = sa.create_engine(f"sqlite:///{root / database.DATABASE_FILE}")
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(database.__file__).with_name("migrations"))
            )
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
    finally:
        engine.dispose()
    (root / location.BLOBS_DIR / "sha256" / "ab").mkdir(parents=True)
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(sep=" ")
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        conn.execute("INSERT INTO models VALUES ('old', ?)", (created,))
        conn.execute(
            "INSERT INTO versions (name, version, digest, size, format, signature, created_at, "
            "created_by, source, pickle, trusted_pickle, metadata, created_host) "
            "VALUES ('old', 1, ?, 3, 'onnx', ?, ?, 'bob', 'old.onnx', 0, 0, '{}', 'box')",
            ("ab" * 32, '{"inputs": [], "outputs": [{"name": "y", "datatype": "FP32", '
             '"shape": [-1]}]}', created),
        )  # fmt: skip


def test_a_0004_registry_is_migrated_and_keeps_its_versions(
    tmp_path: Path, push_version: Pusher
) -> None:
    root = tmp_path / "old-registry"
    _registry_at_0004(root)
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(versions)")]
    assert "reference_profile" not in columns

    with Registry.open(root) as registry:
        old = registry.get("old", 1)
        assert (old.created_by, old.created_host, old.reference_profile) == ("bob", "box", None)
        new = push_version(registry, name="old", reference_profile=_profile())
        assert new.version == 2
        assert registry.versions("old") == [old, new]
        assert registry.get("old", 2).reference_profile == _profile()

    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]
