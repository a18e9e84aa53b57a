"""Input files of a batch job: paths, directories and globs resolved, checked, and partitioned.

Every check happens here, before any row is scored: a path that does not exist or cannot be
read, a file that is not Parquet, CSV or JSON lines (by extension, then by content) is an
InvalidInput naming it. Local paths are read natively; any other URL (`s3://...`) through
fsspec.
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Final, Literal

from modelport.errors import InvalidInput

Format = Literal["parquet", "csv", "jsonl"]
SUFFIXES: Final[dict[str, Format]] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
"""File name endings and the format each is read as (`.json` files hold JSON lines)."""
_GLOB_CHARS: Final = frozenset("*?[")
_SNIFF_BYTES: Final = 64 * 1024
_SNIFF_LINES: Final = 1000


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file, checked: its format, size and columns."""

    path: str
    """The path or URL as the user gave it (or as a directory or glob expanded it)."""
    format: Format
    size: int
    columns: tuple[str, ...]
    row_groups: tuple[int, ...] = ()
    """Parquet: rows in each row group; empty for CSV and JSON lines."""


@dataclass(frozen=True, slots=True)
class Partition:
    """A piece of input scored as one part file: a whole file, or one Parquet row group.

    Small and picklable, so that a scheduler can ship it to another process.
    """

    path: str
    format: Format
    columns: tuple[str, ...]
    """Every column of the file (CSV needs them all to read each as text)."""
    row_group: int | None = None
    """Parquet row group, or None for the whole file."""
    first_row: int = 0
    """Row number, in the file, of the partition's first row."""
    rows: int | None = None
    """Rows in the partition when the file says (Parquet), else None."""


def is_remote(path: str) -> bool:
    """True for a URL with a scheme other than file://, which fsspec opens."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme != "file" and scheme.replace("+", "").isalnum()


@contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """Open an input for reading bytes, locally or through fsspec; InvalidInput when it can't."""
    try:
        if is_remote(path):
            import fsspec

            handle: IO[bytes] = fsspec.open(path, "rb").open()
        else:
            handle = open(_local(path), "rb")  # noqa: SIM115  (closed below)
    except (OSError, ValueError, ImportError) as exc:
        raise InvalidInput(f"cannot read input {path!r}: {_reason(exc)}") from None
    try:
        yield handle
    finally:
        handle.close()


def resolve_inputs(inputs: Sequence[str]) -> list[InputFile]:
    """The files `inputs` name, in order given (directories and globs sorted), each once.

    Directories are read recursively; their files whose names start with `_` or `.` (such as
    `_SUCCESS`) are skipped. Every file is checked (see the module docstring).
    """
    if not inputs:
        raise InvalidInput("give at least one input file, directory or glob")
    seen: dict[str, None] = {}
    for given in inputs:
        for path in _expand(given):
            seen.setdefault(path, None)
    return [check_file(path) for path in seen]


def partitions(files: Sequence[InputFile]) -> list[Partition]:
    """One partition per file, or per row group of a Parquet file that has several."""
    out: list[Partition] = []
    for f in files:
        if len(f.row_groups) > 1:
            first = 0
            for group, rows in enumerate(f.row_groups):
                out.append(Partition(f.path, f.format, f.columns, group, first, rows))
                first += rows
        else:
            total = sum(f.row_groups) if f.format == "parquet" else None
            out.append(Partition(f.path, f.format, f.columns, None, 0, total))
    return out


def check_file(path: str) -> InputFile:
    """Check one file's format by extension and content; InvalidInput says what is wrong."""
    fmt = format_of(path)
    with open_binary(path) as handle:
        try:
            size = handle.seek(0, io.SEEK_END)
            handle.seek(0)
            if fmt == "parquet":
                return _parquet(path, handle, size)
            head = handle.read(_SNIFF_BYTES)
        except OSError as exc:
            raise InvalidInput(f"cannot read input {path!r}: {_reason(exc)}") from None
    text = _text(path, head, fmt)
    columns = _csv_columns(path, text) if fmt == "csv" else _json_columns(path, text)
    return InputFile(path, fmt, size, columns)


def format_of(path: str) -> Format:
    """The format a file name's extension says; InvalidInput for any other extension."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix, fmt in SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise InvalidInput(
        f"input {path!r} is not a Parquet, CSV or JSON-lines file; name it with one of "
        f"{', '.join(SUFFIXES)}"
    )


def _expand(given: str) -> list[str]:
    if is_remote(given):
        return _expand_remote(given)
    local = _local(given)
    if any(c in _GLOB_CHARS for c in local):
        found = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
        if not found:
            raise InvalidInput(f"no file matches input {given!r}")
        return found
    if os.path.isdir(local):
        found = []
        for root, dirs, names in os.walk(local):
            dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
            found.extend(os.path.join(root, n) for n in names if not n.startswith(("_", ".")))
        if not found:
            raise InvalidInput(f"input directory {given!r} holds no files")
        return sorted(found)
    if not os.path.exists(local):
        raise InvalidInput(f"input {given!r} does not exist; give a file, directory or glob")
    return [given]


def _expand_remote(given: str) -> list[str]:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(given)
        if any(c in _GLOB_CHARS for c in path):
            found = [p for p, info in fs.glob(path, detail=True).items() if info["type"] == "file"]
        elif fs.isdir(path):
            found = [
                p
                for p in fs.find(path)
                if not p.rsplit("/", 1)[-1].startswith(("_", "."))
                and not any(part.startswith(("_", ".")) for part in p[len(path) :].split("/")[:-1])
            ]
        elif fs.isfile(path):
            return [given]
        else:
            raise InvalidInput(f"input {given!r} does not exist; give a file, directory or glob")
    except (OSError, ValueError, ImportError) as exc:
        raise InvalidInput(f"cannot read input {given!r}: {_reason(exc)}") from None
    if not found:
        raise InvalidInput(f"no file matches input {given!r}")
    return sorted(fs.unstrip_protocol(p) for p in found)


def _local(path: str) -> str:
    return path.removeprefix("file://")


def _parquet(path: str, handle: IO[bytes], size: int) -> InputFile:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(handle).metadata
        schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"input {path!r} is not a readable Parquet file ({exc})") from None
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return InputFile(path, "parquet", size, tuple(schema.names), groups)


def _text(path: str, head: bytes, fmt: Format) -> str:
    what = "CSV" if fmt == "csv" else "JSON-lines"
    if b"\0" in head:
        raise InvalidInput(f"input {path!r} is not a {what} file: it holds binary data")
    if len(head) == _SNIFF_BYTES:
        # A cut in the middle of a character is not an error: drop the partial last line.
        head = head[: head.rfind(b"\n") + 1] or head
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"input {path!r} is not a UTF-8 {what} file") from None


def _csv_columns(path: str, text: str) -> tuple[str, ...]:
    import csv

    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:
        raise InvalidInput(f"input {path!r} is not a readable CSV file ({exc})") from None
    if not header or any(not name for name in header):
        raise InvalidInput(f"input {path!r}: a CSV file names every column on its first line")
    if len(set(header)) != len(header):
        twice = sorted({n for n in header if header.count(n) > 1})
        raise InvalidInput(f"input {path!r} names column(s) {twice} twice")
    return tuple(header)


def _json_columns(path: str, text: str) -> tuple[str, ...]:
    columns: dict[str, None] = {}
    lines = [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]
    if not lines:
        raise InvalidInput(f"input {path!r} holds no JSON lines")
    for number, line in enumerate(lines):
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == 0:
                raise InvalidInput(
                    f"input {path!r} is not a JSON-lines file (one JSON object per line): {exc}"
                ) from None
            continue  # a bad row further down is that row's error, not the file's
        if not isinstance(record, dict):
            if number == 0:
                raise InvalidInput(
                    f"input {path!r} is not a JSON-lines file: each line must be a JSON object"
                )
            continue
        columns.update(dict.fromkeys(record))
    return tuple(columns)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
