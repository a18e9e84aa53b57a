"""Content-addressed artifact files: stored once by sha256, read-only, verifiable."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from modelport.errors import InvalidInput, NotFound, UntrustedArtifact
from modelport.registry.trust import CHUNK_SIZE, sha256_file

_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_DIR_MODE: Final = 0o700
_BLOB_MODE: Final = 0o444


class BlobStore:
    """Artifacts under `root/sha256/<2 hex>/<64 hex>`, named by the sha256 of their bytes.

    A blob never changes once stored: files are written to a staging file, flushed to disk
    and renamed into place, so a reader sees either no file or the whole file.
    """

    __slots__ = ("_root",)

    def __init__(self, root: Path) -> None:
        self._root = root

    def put(self, path: Path) -> tuple[str, int]:
        """Copy the file at `path` into the store; return its (sha256 hex digest, size).

        Storing the same bytes twice leaves one blob with the same content (the second copy
        replaces the first atomically, which also repairs a blob that was tampered with).
        """
        staging = self._root / "tmp"
        _make_dirs(staging)
        digest = hashlib.sha256()
        size = 0
        # Hash while copying so the digest describes exactly the bytes that were stored.
        fd, tmp_name = tempfile.mkstemp(prefix="incoming-", dir=staging)
        tmp = Path(tmp_name)
        try:
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            with path.open("rb", buffering=0) as src, os.fdopen(fd, "wb", buffering=0) as dst:
                while n := src.readinto(buffer):
                    digest.update(view[:n])
                    dst.write(view[:n])
                    size += n
                os.fsync(dst.fileno())
            os.chmod(tmp, _BLOB_MODE)
            hexdigest = digest.hexdigest()
            target = self.path(hexdigest)
            _make_dirs(target.parent)
            # Staging and target share a file system, so the rename is atomic.
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)
        return hexdigest, size

    def path(self, digest: str) -> Path:
        """Where the blob for `digest` lives (it may not exist); InvalidInput for a bad digest."""
        if not _DIGEST.fullmatch(digest):
            raise InvalidInput("an artifact digest is 64 lowercase hexadecimal characters (sha256)")
        return self._root / "sha256" / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        """True when a blob for `digest` is stored."""
        return self.path(digest).is_file()

    def verify(self, digest: str) -> None:
        """Re-hash the blob; UntrustedArtifact if its bytes changed, NotFound if it is gone."""
        target = self.path(digest)
        try:
            found = sha256_file(target)
        except FileNotFoundError:
            raise NotFound(
                f"artifact sha256:{digest} is missing from the registry's artifact store; "
                "push the model file again"
            ) from None
        if found != digest:
            raise UntrustedArtifact(
                f"artifact sha256 mismatch: expected {digest}, found {found}; "
                "the file was changed after it was pushed"
            )


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each private to the owner."""
    if path.is_dir():
        return
    # mkdir(parents=True) would give the parents default permissions.
    _make_dirs(path.parent)
    path.mkdir(mode=_DIR_MODE, exist_ok=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
