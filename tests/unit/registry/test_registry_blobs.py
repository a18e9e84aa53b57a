"""BlobStore: content-addressed, read-only, verifiable artifact files on a real file system."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from modelport.errors import InvalidInput, NotFound, UntrustedArtifact
from modelport.registry.blobs import BlobStore


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _stored_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "blobs").rglob("*") if p.is_file())


def test_put_stores_a_read_only_copy_under_its_digest(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)  # spans several copy chunks
    digest, size = store.put(_file(tmp_path, "model.bin", data))

    assert digest == hashlib.sha256(data).hexdigest()
    assert size == len(data)
    path = store.path(digest)
    assert path == tmp_path / "blobs" / "sha256" / digest[:2] / digest
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.exists(digest)
    store.verify(digest)


def test_same_bytes_twice_is_one_blob_and_no_leftovers(store: BlobStore, tmp_path: Path) -> None:
    first = store.put(_file(tmp_path, "a.bin", b"same bytes"))
    second = store.put(_file(tmp_path, "b.bin", b"same bytes"))
    assert first == second
    assert _stored_files(tmp_path) == [store.path(first[0])]


def test_empty_file(store: BlobStore, tmp_path: Path) -> None:
    digest, size = store.put(_file(tmp_path, "empty", b""))
    assert (digest, size) == (hashlib.sha256(b"").hexdigest(), 0)
    store.verify(digest)


def test_failed_put_leaves_no_staging_file(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put(tmp_path / "missing.bin")
    assert _stored_files(tmp_path) == []


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "../" + "a" * 61,
        "a" * 63,
        "a" * 65,
        "A" * 64,
        "g" * 64,
        "aa/" + "b" * 61,
        "a" * 64 + "\n",
    ],
)
def test_path_refuses_anything_but_a_sha256_hex_digest(store: BlobStore, digest: str) -> None:
    with pytest.raises(InvalidInput, match="64 lowercase hexadecimal"):
        store.path(digest)


def test_verify_reports_a_tampered_blob_with_both_digests(store: BlobStore, tmp_path: Path) -> None:
    digest, _ = store.put(_file(tmp_path, "model.bin", b"original weights"))
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"evil weights")
    found = hashlib.sha256(b"evil weights").hexdigest()

    with pytest.raises(UntrustedArtifact) as caught:
        store.verify(digest)
    message = caught.value.message
    assert f"expected {digest}, found {found}" in message
    assert "changed after it was pushed" in message
    assert str(tmp_path) not in message


def test_putting_the_original_again_repairs_a_tampered_blob(
    store: BlobStore, tmp_path: Path
) -> None:
    original = _file(tmp_path, "model.bin", b"original weights")
    digest, _ = store.put(original)
    store.path(digest).chmod(0o644)
    store.path(digest).write_bytes(b"evil weights")

    assert store.put(original)[0] == digest
    store.verify(digest)


def test_verify_missing_blob_is_not_found(store: BlobStore, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    with pytest.raises(NotFound, match="push the model file again") as caught:
        store.verify(digest)
    assert str(tmp_path) not in caught.value.message
