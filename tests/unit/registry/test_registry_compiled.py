"""Registry: compiled artifacts and reports stored with the version; migrating 0001 to 0002."""

from __future__ import annotations

import hashlib
import pickle
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelport.errors import Conflict, InvalidInput, NotFound, UntrustedArtifact
from modelport.protocol.signature import Signature, TensorSpec
from modelport.registry import database, location, store
from modelport.registry.database import HEAD_REVISION
from modelport.registry.manifest import CompiledArtifact
from modelport.registry.store import Registry

from .conftest import push_file

SIGNATURE = Signature(
    inputs=(TensorSpec("input-0", "FP32", (-1, 4)),),
    outputs=(TensorSpec("predict", "INT64", (-1,)),),
)
REPORT = {
    "target": "onnx",
    "kept": True,
    "headline": "outputs match on 512 generated rows: predict equal",
    "outputs": {"predict": {"mismatches": 0, "max_abs_diff": 0.0, "passed": True}},
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def registry(root: Path) -> Iterator[Registry]:
    with Registry.open(root) as opened:
        yield opened


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_compiled_artifact_and_report_are_stored_with_the_version(
    registry: Registry, tmp_path: Path
) -> None:
    onnx = b"onnx graph bytes"
    pushed = push_file(
        registry,
        _file(tmp_path, "iris.skops", b"original"),
        compiled=_file(tmp_path, "compiled.onnx", onnx),
        compile_report=REPORT,
    )
    assert pushed.compiled == CompiledArtifact("onnx", hashlib.sha256(onnx).hexdigest(), len(onnx))
    assert pushed.digest == hashlib.sha256(b"original").hexdigest()
    assert pushed.compile_report == REPORT
    assert registry.get("iris", 1) == pushed
    assert registry.versions("iris") == [pushed]
    assert registry.latest() == [pushed]

    assert registry.compiled_path(pushed).read_bytes() == onnx
    assert registry.artifact_path(pushed).read_bytes() == b"original"
    registry.verify_compiled(pushed)
    as_json = pushed.to_dict()
    assert as_json["compiled"] == {"format": "onnx", "digest": pushed.compiled.digest, "size": 16}
    assert as_json["compile_report"] == REPORT


def test_a_report_without_a_compiled_artifact(registry: Registry, tmp_path: Path) -> None:
    report = {"target": "onnx", "kept": False, "reason": "no ONNX converter for 'python' models"}
    pushed = push_file(registry, _file(tmp_path, "m.bin", b"original"), compile_report=report)
    assert pushed.compiled is None
    assert pushed.compile_report == report
    assert registry.get("iris") == pushed
    with pytest.raises(NotFound, match="has no compiled artifact; push it with --compile"):
        registry.compiled_path(pushed)
    with pytest.raises(NotFound, match="has no compiled artifact"):
        registry.verify_compiled(pushed)


def test_versions_without_compilation_have_neither(registry: Registry, tmp_path: Path) -> None:
    pushed = push_file(registry, _file(tmp_path, "m.bin", b"original"))
    assert (pushed.compiled, pushed.compile_report) == (None, None)
    assert registry.get("iris") == pushed
    assert pushed.to_dict()["compiled"] is None
    assert pushed.to_dict()["compile_report"] is None


def test_a_changed_compiled_blob_fails_verification(registry: Registry, tmp_path: Path) -> None:
    pushed = push_file(
        registry,
        _file(tmp_path, "m.bin", b"original"),
        compiled=_file(tmp_path, "c.onnx", b"compiled"),
        compile_report=REPORT,
    )
    assert pushed.compiled is not None
    blob = registry.compiled_path(pushed)
    blob.chmod(0o644)
    blob.write_bytes(b"swapped")
    with pytest.raises(UntrustedArtifact, match=f"expected {pushed.compiled.digest}"):
        registry.verify_compiled(pushed)
    registry.verify(pushed)  # the original is untouched
    blob.unlink()
    with pytest.raises(NotFound, match="missing"):
        registry.verify_compiled(pushed)


def test_a_pickled_compiled_artifact_is_refused(registry: Registry, tmp_path: Path) -> None:
    compiled = _file(tmp_path, "c.onnx", pickle.dumps({"not": "onnx"}))
    with pytest.raises(UntrustedArtifact, match="compiled artifact must not be pickle-family"):
        push_file(registry, _file(tmp_path, "m.bin", b"original"), compiled=compiled)
    assert registry.models() == []


def test_bad_compiled_inputs_are_refused(registry: Registry, tmp_path: Path) -> None:
    original = _file(tmp_path, "m.bin", b"original")
    with pytest.raises(InvalidInput, match="invalid compiled format"):
        push_file(registry, original, compiled=original, compiled_format="../onnx")
    with pytest.raises(InvalidInput, match=r"'gone\.onnx' is not a readable file"):
        push_file(registry, original, compiled=tmp_path / "gone.onnx")
    with pytest.raises(InvalidInput, match="not JSON"):
        push_file(registry, original, compile_report={"max_abs_diff": float("nan")})
    assert registry.models() == []


def test_same_original_with_a_compiled_form_is_still_a_duplicate(
    registry: Registry, tmp_path: Path
) -> None:
    original = _file(tmp_path, "m.bin", b"original")
    push_file(registry, original)
    with pytest.raises(Conflict, match="as version 1"):
        push_file(
            registry, original, compiled=_file(tmp_path, "c.onnx", b"c"), compile_report=REPORT
        )
    assert len(registry.versions("iris")) == 1


def _registry_at_0001(root: Path) -> None:
    """A registry as modelport wrote it before compiled artifacts: schema 0001, one version."""
    from alembic import command
    from alembic.config import Config

    root.mkdir(parents=True)
    engine = sa.create_engine(f"sqlite:///{root / database.DATABASE_FILE}")
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option(
                "script_location", str(Path(store.__file__).with_name("migrations"))
            )
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
    finally:
        engine.dispose()
    (root / location.BLOBS_DIR / "sha256" / "ab").mkdir(parents=True)
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(sep=" ")
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        conn.execute("INSERT INTO models VALUES ('old', ?)", (created,))
        conn.execute(
            "INSERT INTO versions VALUES ('old', 1, ?, 3, 'sklearn', ?, ?, 'bob', 'old.skops', "
            "0, 0, ?)",
            (
                "ab" * 32,
                '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], '
                '"outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}]}',
                created,
                '{"git": "3f2c1a"}',
            ),
        )


def test_migrating_a_0001_registry_keeps_its_versions(root: Path, tmp_path: Path) -> None:
    _registry_at_0001(root)
    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(versions)")]
    assert "compiled_digest" not in columns

    with Registry.open(root) as registry:
        old = registry.get("old", 1)
        assert old.digest == "ab" * 32
        assert old.created_by == "bob"
        assert old.metadata == {"git": "3f2c1a"}
        assert old.signature.inputs == (TensorSpec("x", "FP32", (-1, 2)),)
        assert (old.compiled, old.compile_report) == (None, None)
        # The migrated registry takes compiled versions like a new one.
        new = push_file(
            registry,
            _file(tmp_path, "m.bin", b"new"),
            name="old",
            compiled=_file(tmp_path, "c.onnx", b"c"),
            compile_report=REPORT,
        )
        assert new.version == 2
        assert registry.versions("old") == [old, new]

    with sqlite3.connect(root / database.DATABASE_FILE) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (HEAD_REVISION,)
        ]
