"""Writing one part file's rows, batch by batch, as Parquet, CSV or JSON lines."""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson
import pyarrow as pa

from modelport.errors import InvalidInput

OutputFormat = Literal["parquet", "csv", "jsonl"]
OUTPUT_FORMATS: Final[tuple[OutputFormat, ...]] = ("parquet", "csv", "jsonl")
EXTENSIONS: Final[dict[OutputFormat, str]] = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


class PartWriter:
    """Appends record batches to `sink` in one format; `close` finishes the file.

    The first batch fixes the columns; a later batch of other types is cast to them, and
    InvalidInput when it cannot be. A part with no rows still gets a valid (empty) file with
    the columns of `empty_schema`, when given.
    """

    def __init__(self, sink: Any, fmt: OutputFormat) -> None:
        self._sink = sink
        self._format = fmt
        self._schema: pa.Schema | None = None
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        """Append the rows of `table`."""
        if self._schema is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise InvalidInput(
                    f"rows of this input changed type midway ({exc}); give each column one type"
                ) from None
        if self._format == "jsonl":
            lines = [orjson.dumps(row, default=str) for row in table.to_pylist()]
            self._sink.write(b"\n".join(lines) + b"\n" if lines else b"")
        else:
            self._writer.write_table(table)

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        """Finish the file (an empty one with `empty_schema` when no row was written)."""
        if self._schema is None:
            if empty_schema is None:
                return
            self._open(empty_schema)
        if self._writer is not None:
            self._writer.close()

    def _open(self, schema: pa.Schema) -> None:
        self._schema = schema
        if self._format == "parquet":
            import pyarrow.parquet as pq

            # Dictionary pages only where values repeat (text: keys, provenance, labels): for
            # numbers, such as row numbers and probabilities, building a dictionary costs
            # more than it saves.
            text = [
                f.name
                for f in schema
                if pa.types.is_dictionary(f.type)
                or pa.types.is_string(f.type)
                or pa.types.is_large_string(f.type)
            ]
            self._writer = pq.ParquetWriter(self._sink, schema, use_dictionary=text)
        elif self._format == "csv":
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(self._sink, schema)
