"""Reference data at push: CSV or Parquet files read into columns, and their profile stored."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from modelport.errors import InvalidInput
from modelport.monitoring.reference_profile import build_profile
from modelport.protocol.signature import Signature

MAX_ROWS: Final = 100_000
"""Rows a reference profile is built from; larger files are sampled down to this many."""
_SEED: Final = 0  # a fixed seed: the same file always gives the same profile
_PARQUET_SUFFIXES: Final = (".parquet", ".pq")

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """Columns of reference data by name, in file order, all of one length."""

    columns: dict[str, Array]
    """CSV cells as text (blank for missing); Parquet values as numpy converts them."""
    source_rows: int
    """Rows in the file (more than the columns hold when it was sampled)."""


def profile_of(data: ReferenceData, signature: Signature) -> dict[str, Any]:
    """The reference profile of `data` for a model with `signature` (columns mapped to inputs)."""
    return build_profile(data.columns, signature.inputs, source_rows=data.source_rows)


def read_reference_data(
    path: Path, *, label: str | None = None, max_rows: int = MAX_ROWS
) -> ReferenceData:
    """The columns of a .csv (first line names the columns) or .parquet file, minus `label`.

    At most `max_rows` rows, chosen uniformly at random but the same for the same file, and
    the same rows for a CSV and a Parquet file that hold the same table. InvalidInput says
    what is wrong with the file, naming it by its base name only.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        columns, total = _read_csv(path, max_rows)
    elif suffix in _PARQUET_SUFFIXES:
        columns, total = _read_parquet(path, max_rows)
    else:
        raise InvalidInput(
            f"reference data {path.name!r}: give a .csv file (first line naming the columns) "
            "or a .parquet file"
        )
    if label is not None:
        if label not in columns:
            raise InvalidInput(
                f"reference data {path.name!r} has no column {label!r} to drop as the label; "
                f"its columns: {', '.join(columns)}"
            )
        del columns[label]
    if not columns:
        raise InvalidInput(f"reference data {path.name!r} has no feature columns")
    return ReferenceData(columns, total)


def _sample(total: int, max_rows: int) -> Array | None:
    """Sorted indices of the rows to keep, or None to keep all `total` of them."""
    if total <= max_rows:
        return None
    chosen = np.random.default_rng(_SEED).choice(total, size=max_rows, replace=False)
    return np.sort(chosen)


def _header(names: list[str], path: Path) -> list[str]:
    if not names or any(not n for n in names):
        raise InvalidInput(
            f"reference data {path.name!r}: every column needs a name (a CSV names them on "
            "its first line)"
        )
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"reference data {path.name!r} names column(s) {twice} twice")
    return names


def _read_csv(path: Path, max_rows: int) -> tuple[dict[str, Array], int]:
    try:
        rows, total, names = _csv_rows(path, max_rows, None)
        wanted = _sample(total, max_rows)
        if wanted is not None:
            # A second pass keeps the sampled rows: the row count was unknown until now.
            rows, _, _ = _csv_rows(path, max_rows, wanted)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(
            f"reference data {path.name!r} is not a readable UTF-8 CSV file ({exc})"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read reference data {path.name!r} ({exc.strerror})") from None
    if not rows:
        raise InvalidInput(f"reference data {path.name!r} has a header but no rows")
    cells = np.array(rows, dtype=np.object_).reshape(len(rows), len(names))
    return {name: cells[:, j].copy() for j, name in enumerate(names)}, total


def _csv_rows(
    path: Path, max_rows: int, wanted: Array | None
) -> tuple[list[list[str]], int, list[str]]:
    """(the kept rows, how many rows the file has, the column names)."""
    kept: list[list[str]] = []
    total = 0
    chosen = iter(() if wanted is None else wanted.tolist())
    target = next(chosen, None)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InvalidInput(
                f"reference data {path.name!r} is empty; its first line must name the columns"
            )
        names = _header([h.strip() for h in header], path)
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(names):
                raise InvalidInput(
                    f"reference data {path.name!r}: line {reader.line_num} has {len(row)} "
                    f"fields, the header names {len(names)}"
                )
            if wanted is None:
                if total < max_rows:
                    kept.append(row)
            elif total == target:
                kept.append(row)
                target = next(chosen, None)
            total += 1
    return kept, total, names


def _read_parquet(path: Path, max_rows: int) -> tuple[dict[str, Array], int]:
    # pyarrow ships no type hints; the ignores stay harmless once the project configures it.
    import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        parquet = pq.ParquetFile(path)
        total = parquet.metadata.num_rows
        names = _header(list(parquet.schema_arrow.names), path)
        wanted = _sample(total, max_rows)
        batches = []
        offset = 0
        # Batch by batch, so a large file is never held whole in memory.
        for batch in parquet.iter_batches(batch_size=65_536):
            if wanted is None:
                batches.append(batch)
            else:
                lo, hi = np.searchsorted(wanted, [offset, offset + batch.num_rows])
                if hi > lo:
                    batches.append(batch.take(pa.array(wanted[lo:hi] - offset)))
            offset += batch.num_rows
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InvalidInput(
            f"reference data {path.name!r} is not a readable Parquet file "
            f"({first.replace(str(path), path.name)})"
        ) from None
    if table.num_rows == 0:
        raise InvalidInput(f"reference data {path.name!r} has no rows")
    columns: dict[str, Array] = {}
    for name in names:
        column = table.column(name)
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if pa.types.is_nested(kind):
            raise InvalidInput(
                f"reference data {path.name!r}: column {name!r} holds {kind} values; give one "
                "number or string per cell"
            )
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.fill_null(column, "")  # missing text reads as a blank CSV cell does
        columns[name] = column.to_numpy(zero_copy_only=False)
    return columns, total
