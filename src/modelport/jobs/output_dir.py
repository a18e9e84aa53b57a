"""A batch job's output directory: files written atomically, hashed as they are written.

Locally a file is written to a temporary name in its own directory, fsynced, renamed into
place and the directory fsynced, so that a crash leaves either the whole file or a temporary
one (`.tmp-*`, removed on resume), never a torn one. On an object store (an fsspec URL) a
file becomes visible only when its upload completes, which is atomic already.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from modelport.errors import InvalidInput
from modelport.jobs.sources import is_remote

TEMP_PREFIX: Final = ".tmp-"
_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Written:
    """A file as it was committed: its name in the output directory, size and sha256."""

    name: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"file", "size", "sha256"}."""
        return {"file": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Written:
        """Build from the JSON form (KeyError/TypeError when malformed)."""
        return cls(str(raw["file"]), int(raw["size"]), str(raw["sha256"]))


class HashingFile(io.RawIOBase):
    """A writable file that counts and hashes what passes through it to `target`."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._target.write(view)
        self._hash.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        # Writers (pyarrow's among them) close their sink; the real file closes after fsync.
        if not self.closed:
            self.flush()
        super().close()

    @property
    def sha256(self) -> str:
        """Hex digest of everything written so far."""
        return self._hash.hexdigest()


class OutputDir:
    """Where a job writes: a local directory or an fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or "/"
        self._remote = is_remote(url)
        self._fs: Any = None
        self._root = self.url.removeprefix("file://")
        if self._remote:
            import fsspec

            self._fs, self._root = fsspec.core.url_to_fs(self.url)

    def path(self, name: str) -> str:
        """Where `name` (relative, `/`-separated) lives."""
        return f"{self._root}/{name}"

    def exists(self) -> bool:
        """True when the directory exists; InvalidInput when the path is a file."""
        if self._remote:
            if self._fs.isfile(self._root):
                raise InvalidInput(f"output {self.url!r} is a file; give a directory")
            return bool(self._fs.isdir(self._root))
        if os.path.isfile(self._root):
            raise InvalidInput(f"output {self.url!r} is a file; give a directory")
        return os.path.isdir(self._root)

    def names(self) -> list[str]:
        """Every file under the directory, relative and `/`-separated, sorted."""
        if not self.exists():
            return []
        if self._remote:
            prefix = self._root.rstrip("/") + "/"
            return sorted(p[len(prefix) :] for p in self._fs.find(self._root))
        found = []
        for root, _dirs, files in os.walk(self._root):
            rel = os.path.relpath(root, self._root)
            for name in files:
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        return sorted(found)

    def make(self, *subdirs: str) -> None:
        """Create the directory and `subdirs`; InvalidInput when it cannot be."""
        try:
            for sub in ("", *subdirs):
                target = self.path(sub) if sub else self._root
                if self._remote:
                    self._fs.makedirs(target, exist_ok=True)
                else:
                    os.makedirs(target, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"cannot create output {self.url!r}: {exc.strerror or exc}"
            ) from None

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when there is no such file."""
        try:
            if self._remote:
                with self._fs.open(self.path(name), "rb") as handle:
                    return bytes(handle.read()).decode()
            with open(self.path(name), encoding="utf-8") as text:
                return text.read()
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> None:
        """Delete a file if it is there."""
        try:
            if self._remote:
                self._fs.rm_file(self.path(name))
            else:
                os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def digest(self, name: str) -> Written | None:
        """The file's size and sha256 as it is now; None when it is missing."""
        hashed = hashlib.sha256()
        size = 0
        try:
            opened = self._open_read(name)
        except FileNotFoundError:
            return None
        with opened as handle:
            while chunk := handle.read(_CHUNK):
                hashed.update(chunk)
                size += len(chunk)
        return Written(name, size, hashed.hexdigest())

    def _open_read(self, name: str) -> Any:
        if self._remote:
            return self._fs.open(self.path(name), "rb")
        return open(self.path(name), "rb")

    def write_bytes(self, name: str, data: bytes) -> Written:
        """Write a whole small file atomically (the manifest, the summary)."""
        with self.atomic(name) as sink:
            sink.write(data)
        return Written(name, sink.size, sink.sha256)

    @contextmanager
    def atomic(self, name: str) -> Iterator[HashingFile]:
        """A sink for `name` that appears whole, under its name, when the block ends without error.

        After the block, the sink's `size` and `sha256` describe the committed file. On an
        error the temporary file is removed and nothing appears.
        """
        if self._remote:
            with self._fs.open(self.path(name), "wb") as handle:
                yield HashingFile(handle)
            return
        head, _, base = name.rpartition("/")
        temp = f"{head}/" if head else ""
        temp += f"{TEMP_PREFIX}{base}-{secrets.token_hex(4)}"
        final, staged = self.path(name), self.path(temp)
        with open(staged, "wb") as handle:
            try:
                sink = HashingFile(handle)
                yield sink
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:
                handle.close()
                os.unlink(staged)
                raise
        os.replace(staged, final)
        _fsync_dir(os.path.dirname(final))

    def remove_temporary(self) -> list[str]:
        """Delete what an interrupted run left half-written (`.tmp-*`); the names removed."""
        stale = [n for n in self.names() if n.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)]
        for name in stale:
            self.remove(name)
        return stale


def _fsync_dir(path: str) -> None:
    # The rename is durable only once the directory entry is on disk too.
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
