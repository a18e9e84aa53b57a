"""Streaming a partition's rows in record batches, so that memory stays flat whatever the size.

Parquet is read with `iter_batches` (only the columns asked for), CSV with pyarrow's streaming
reader (every cell as text: the table mapping converts it to the input's datatype, so a bad
cell is that row's error, not the file's), JSON lines in chunks of lines, each chunk parsed
on its own (pyarrow has no streaming JSON reader). A JSON line that does not parse, or a CSV
row with the wrong number of fields, is a `BadRow` at the `read` stage; the rows around it
still score. (A CSV row's number is taken from its line number, which is exact unless a
quoted value before it spans several lines.)
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


def _csv(
    partition: Partition, columns: Sequence[str] | None, batch_size: int
) -> Iterator[Piece | BadRow]:
    import pyarrow.csv as pcsv

    bad: list[BadRow] = []

    def invalid(row: Any) -> str:
        # Line numbers count from 1 with the header first; rows count from 0 after it.
        number = (row.number or 0) - 2 + partition.first_row
        bad.append(
            BadRow(
                number, f"has {row.actual_columns} fields; the header names {row.expected_columns}"
            )
        )
        return "skip"

    convert = pcsv.ConvertOptions(
        column_types={c: pa.string() for c in partition.columns},
        include_columns=None if columns is None else list(columns),
        # Every cell is text: an empty one stays "" and the mapping refuses it for that row.
        strings_can_be_null=False,
    )
    # One thread, so that a malformed row's line number is known (its row key).
    read = pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False)
    parse = pcsv.ParseOptions(invalid_row_handler=invalid)
    row, skipped = partition.first_row, 0
    with open_binary(partition.path) as handle:
        reader = pcsv.open_csv(
            handle, read_options=read, parse_options=parse, convert_options=convert
        )
        for batch in reader:
            offset = 0
            while offset < batch.num_rows:
                # The rows skipped as malformed fall between the rows of the batches.
                while skipped < len(bad) and bad[skipped].row <= row:
                    # Behind `row` only when multi-line values threw the line count off:
                    # reported as numbered, never looping.
                    if bad[skipped].row == row:
                        row += 1
                    yield bad[skipped]
                    skipped += 1
                until = bad[skipped].row if skipped < len(bad) else row + batch.num_rows
                size = min(batch.num_rows - offset, until - row, batch_size)
                yield Piece(row, batch.slice(offset, size))
                offset, row = offset + size, row + size
    yield from bad[skipped:]


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
