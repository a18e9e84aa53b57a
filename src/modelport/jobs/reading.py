"""Streaming a partition's rows in record batches, so that memory stays flat whatever the size.

Parquet is read with `iter_batches` (only the columns asked for), CSV with pyarrow's streaming
reader (every cell as text: the table mapping converts it to the input's datatype, so a bad
cell is that row's error, not the file's), JSON lines in chunks of lines, each chunk parsed
on its own (pyarrow has no streaming JSON reader). A JSON line that does not parse is a
`BadRow` at the `read` stage, found by splitting its chunk; the rows around it still score.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import pyarrow as pa

from modelport.errors import InvalidInput
from modelport.jobs.sources import Partition, is_remote, open_binary

CSV_BLOCK_BYTES: Final = 4 * 1024 * 1024
"""Bytes of CSV parsed at a time (batches are then cut to the job's batch size)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Consecutive rows of a partition: `batch` holds rows `first_row`.. of the file."""

    first_row: int
    batch: pa.RecordBatch


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read: its row number in the file and why."""

    row: int
    message: str


def read_pieces(
    partition: Partition, columns: Sequence[str] | None, batch_size: int
) -> Iterator[Piece | BadRow]:
    """The partition's rows in order, as pieces of at most `batch_size` rows and bad rows.

    `columns` selects the columns to read (None: all). InvalidInput when the file cannot be
    read at all.
    """
    try:
        if partition.format == "parquet":
            yield from _parquet(partition, columns, batch_size)
        elif partition.format == "csv":
            yield from _csv(partition, columns, batch_size)
        else:
            yield from _jsonl(partition, columns, batch_size)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"cannot read input {partition.path!r}: {exc}") from None


def _parquet(
    partition: Partition, columns: Sequence[str] | None, batch_size: int
) -> Iterator[Piece]:
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(columns)
    groups = None if partition.row_group is None else [partition.row_group]
    row = partition.first_row
    if is_remote(partition.path):
        with open_binary(partition.path) as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size, row_groups=groups, columns=wanted):
                yield Piece(row, batch)
                row += batch.num_rows
        return
    parquet = pq.ParquetFile(partition.path.removeprefix("file://"))
    try:
        for batch in parquet.iter_batches(batch_size, row_groups=groups, columns=wanted):
            yield Piece(row, batch)
            row += batch.num_rows
    finally:
        parquet.close()


def _csv(partition: Partition, columns: Sequence[str] | None, batch_size: int) -> Iterator[Piece]:
    import pyarrow.csv as pcsv

    convert = pcsv.ConvertOptions(
        column_types={c: pa.string() for c in partition.columns},
        include_columns=None if columns is None else list(columns),
        # Every cell is text: an empty one stays "" and the mapping refuses it for that row.
        strings_can_be_null=False,
    )
    read = pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
    row = partition.first_row
    with open_binary(partition.path) as handle:
        reader = pcsv.open_csv(handle, read_options=read, convert_options=convert)
        for batch in reader:
            for start in range(0, batch.num_rows, batch_size):
                piece = batch.slice(start, batch_size)
                yield Piece(row, piece)
                row += piece.num_rows


def _jsonl(
    partition: Partition, columns: Sequence[str] | None, batch_size: int
) -> Iterator[Piece | BadRow]:
    row = partition.first_row
    schema: pa.Schema | None = None
    with open_binary(partition.path) as handle:
        for lines in _chunks(handle, batch_size):
            for item in _parse(lines, row, columns, schema):
                if isinstance(item, Piece) and schema is None:
                    # The first rows fix the types, so that every batch of the part agrees
                    # (a column that is all null so far stays open).
                    schema = pa.schema([f for f in item.batch.schema if f.type != pa.null()])
                yield item
            row += len(lines)


def _chunks(handle: IO[bytes], size: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in handle:
        if line.strip():
            chunk.append(line.rstrip(b"\r\n"))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _parse(
    lines: list[bytes], first_row: int, columns: Sequence[str] | None, schema: pa.Schema | None
) -> Iterator[Piece | BadRow]:
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    try:
        table = pj.read_json(io.BytesIO(b"\n".join(lines)), parse_options=options)
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            yield BadRow(first_row, f"not a JSON object this file's rows agree with: {exc}")
            return
        half = len(lines) // 2
        yield from _parse(lines[:half], first_row, columns, schema)
        yield from _parse(lines[half:], first_row + half, columns, schema)
        return
    if columns is not None:
        table = _select(table, columns)
    for batch in table.combine_chunks().to_batches():
        yield Piece(first_row, batch)
        first_row += batch.num_rows


def _select(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """`columns` of `table`; one no line of this chunk holds is all nulls (that row's error)."""
    arrays: list[Any] = []
    for name in columns:
        if name in table.column_names:
            arrays.append(table.column(name))
        else:
            arrays.append(pa.nulls(table.num_rows))
    return pa.table(dict(zip(columns, arrays, strict=True)))
