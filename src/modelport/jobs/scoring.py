"""Scoring one partition into its part file: the unit of work of a batch job.

`score_partition` is a pure function of a picklable `PartitionTask`: it needs nothing from
the driver's memory (the model is loaded from the registry, or reused from this process's
cache), so a scheduler may run it in any process. It writes the part file and, when some rows
failed, the partition's error file, both atomically, and returns their digests and counts; the
driver commits the part by recording that result in the manifest.

A batch that validation or the model refuses is split in halves until the failing rows are
alone: each goes to the error file with its key, stage and message; the other rows are scored
and written in input order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import orjson
import pyarrow as pa

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.model_cache import ModelRef, cached_model
from modelport.jobs.output_dir import OutputDir, Written
from modelport.jobs.part_writer import EXTENSIONS, OutputFormat, PartWriter
from modelport.jobs.reading import BadRow, Piece, read_pieces
from modelport.jobs.sources import Partition
from modelport.protocol.types import InferRequest, Tensor
from modelport.serving.arrow_buffers import from_numpy, repeated
from modelport.serving.catalog import LoadedModel
from modelport.serving.table_mapping import OutputsAs, TableMapping, arrow_type

Stage = Literal["read", "validate", "predict"]
Passthrough = tuple[str, ...] | Literal["all"]
PROVENANCE: Final = ("_model", "_version", "_sha256", "_job_id")
"""Columns every output row ends with: model name, version, artifact sha256, job id."""
ROW_KEY: Final = ("_file", "_row")
"""The key columns without --id-column: the input path as given and the row number in it."""
ERRORS_DIR: Final = "_errors"
"""Where error files go: a leading `_` keeps dataset readers (pyarrow, Spark, Dask) that read
the output directory as one table from reading them as parts."""
_MAX_MESSAGE: Final = 500


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What every partition of a job shares: the model, the mapping options, the output."""

    job_id: str
    model: ModelRef
    output: str
    """The output directory (a path or an fsspec URL)."""
    output_format: OutputFormat = "parquet"
    features: tuple[str, ...] | None = None
    id_column: str | None = None
    passthrough: Passthrough = ()
    outputs_as: OutputsAs = "columns"
    batch_size: int = 65536


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """One partition to score, the job it belongs to, and how many errors it may see."""

    spec: JobSpec
    index: int
    """The part's number: part-{index:05d}."""
    partition: Partition
    error_budget: int | None = None
    """Stop once the partition has more error rows than this (None: never): no part file is
    written, only the error file so far (which the driver does not commit)."""


@dataclass(frozen=True, slots=True)
class PartResult:
    """What scoring one partition did; `part` is None when it stopped over its error budget."""

    index: int
    rows_in: int
    rows_out: int
    error_rows: int
    part: Written | None
    errors: Written | None
    seconds: float
    compiled: bool = False
    """True when the model ran from its compiled artifact."""

    @property
    def over_budget(self) -> bool:
        """True when the partition crossed its error budget (nothing was written)."""
        return self.part is None


def part_name(index: int, fmt: OutputFormat) -> str:
    """The part file's name in the output directory."""
    return f"part-{index:05d}.{EXTENSIONS[fmt]}"


def errors_name(index: int) -> str:
    """The part's error file, in the output directory's `_errors/`."""
    return f"{ERRORS_DIR}/part-{index:05d}.jsonl"


class _OverBudget(Exception):
    """Internal: the partition saw more error rows than its budget."""


@dataclass(slots=True)
class _Scorer:
    """The state of scoring one partition: the model, the mapping, what to write, counts."""

    task: PartitionTask
    model: LoadedModel
    mapping: TableMapping
    errors: Any
    on_batch: Callable[[int, int], None] | None
    rows_in: int = 0
    rows_out: int = 0
    error_rows: int = 0
    seen: pa.Schema | None = None
    """The schema of the rows read so far, for the columns of a part with no rows."""
    _datatypes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._datatypes = {s.name: s.datatype for s in self.model.version.signature.inputs}

    def score(self, piece: Piece | BadRow) -> pa.Table | None:
        """The output rows of one piece (None for a bad row), errors written on the side."""
        if isinstance(piece, BadRow):
            self.rows_in += 1
            self._error({"_row": piece.row}, "read", piece.message, keyed_by_row=True)
            self._progress(1, 1)
            return None
        before = self.error_rows
        self.seen = piece.batch.schema
        n = piece.batch.num_rows
        self.rows_in += n
        segments = list(self._bisect(piece.batch, piece.first_row))
        tables = [self._rows(batch, first, outputs) for batch, first, outputs in segments]
        self._progress(n, self.error_rows - before)
        if not tables:
            return None
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _bisect(
        self, batch: pa.RecordBatch, first: int
    ) -> Iterator[tuple[pa.RecordBatch, int, dict[str, Any]]]:
        try:
            outputs = self._predict(batch)
        except _Refused as refused:
            if batch.num_rows == 1:
                self._error(self._key(batch, first), refused.stage, refused.message)
                return
            half = batch.num_rows // 2
            yield from self._bisect(batch.slice(0, half), first)
            yield from self._bisect(batch.slice(half), first + half)
            return
        yield batch, first, outputs

    def empty_schema(self) -> pa.Schema:
        """The columns of a part none of whose rows scored (types unknown to it are text)."""
        spec, seen = self.task.spec, self.seen

        def typed(name: str) -> pa.Field:
            found = None if seen is None else seen.field(name) if name in seen.names else None
            return found if found is not None else pa.field(name, pa.string())

        text = pa.dictionary(pa.int32(), pa.string())
        fields = (
            [pa.field("_file", text), pa.field("_row", pa.int64())]
            if spec.id_column is None
            else [typed(spec.id_column)]
        )
        fields += [typed(c) for c in passthrough_columns(spec, [] if seen is None else seen.names)]
        for out in self.mapping.outputs:
            kind = arrow_type(out.datatype)
            width = out.shape[1] if len(out.shape) == 2 else None
            if width is None:
                fields.append(pa.field(out.name, kind))
            elif width >= 0 and spec.outputs_as == "lists":
                fields.append(pa.field(out.name, pa.list_(kind, width)))
            elif width >= 0:
                fields += [pa.field(f"{out.name}_{k}", kind) for k in range(width)]
        fields += [pa.field(n, pa.int64() if n == "_version" else text) for n in PROVENANCE]
        return pa.schema(fields)

    def _predict(self, batch: pa.RecordBatch) -> dict[str, Any]:
        try:
            arrays = self.mapping.inputs(batch)
            tensors = [Tensor(n, self._datatypes[n], a.shape, a) for n, a in arrays.items()]
            checked = self.model.validator.inputs(InferRequest(tensors))
        except ModelportError as exc:
            raise _Refused("validate", exc.message) from None
        try:
            return self.model.predict(checked, self.model.output_names)
        except Exception as exc:  # any refusal of these rows; the bisection finds which
            message = exc.message if isinstance(exc, ModelportError) else f"{exc}"
            raise _Refused("predict", message or type(exc).__name__) from None

    def _rows(self, batch: pa.RecordBatch, first: int, outputs: dict[str, Any]) -> pa.Table:
        spec, n = self.task.spec, batch.num_rows
        columns: dict[str, Any] = {}
        if spec.id_column is None:
            columns["_file"] = repeated(self.task.partition.path, n)
            columns["_row"] = from_numpy(np.arange(first, first + n, dtype=np.int64))
        else:
            columns[spec.id_column] = batch.column(spec.id_column)
        for name in passthrough_columns(spec, batch.schema.names):
            columns[name] = batch.column(name)
        for name, values in self.mapping.output_columns(outputs):
            columns[name] = values
        mv = self.model.version
        columns["_model"] = repeated(mv.name, n)
        columns["_version"] = repeated(mv.version, n)
        columns["_sha256"] = repeated(mv.digest, n)
        columns["_job_id"] = repeated(spec.job_id, n)
        self.rows_out += n
        return pa.table(columns)

    def _key(self, batch: pa.RecordBatch, row: int) -> dict[str, Any]:
        id_column = self.task.spec.id_column
        if id_column is None:
            return {"_row": row}
        return {id_column: batch.column(id_column)[0].as_py(), "_row": row}

    def _error(
        self, key: dict[str, Any], stage: Stage, message: str, *, keyed_by_row: bool = False
    ) -> None:
        self.error_rows += 1
        record = {"_file": self.task.partition.path, **key, "stage": stage}
        record["error"] = message[:_MAX_MESSAGE]
        self.errors.write(orjson.dumps(record, default=str) + b"\n")
        budget = self.task.error_budget
        if budget is not None and self.error_rows > budget:
            raise _OverBudget

    def _progress(self, rows: int, errors: int) -> None:
        if self.on_batch is not None:
            self.on_batch(rows, errors)


class _Refused(Exception):
    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage: Stage = stage
        self.message = message


def passthrough_columns(spec: JobSpec, names: Sequence[str]) -> list[str]:
    """The input columns copied to the output, in order (never the key column twice)."""
    wanted = names if spec.passthrough == "all" else spec.passthrough
    return [c for c in wanted if c != spec.id_column]


def read_columns(spec: JobSpec, mapping: TableMapping, partition: Partition) -> list[str] | None:
    """The columns a partition's reader needs (None: all of them)."""
    if spec.passthrough == "all":
        return None
    extra = [spec.id_column] if spec.id_column else []
    return list(dict.fromkeys([*mapping.columns, *extra, *spec.passthrough]))


def mapping_for(spec: JobSpec, model: LoadedModel, columns: Sequence[str]) -> TableMapping:
    """The table mapping of one input's columns; InvalidInput when it has not the ones needed."""
    mapping = TableMapping.for_model(
        model.version, columns, spec.features, outputs_as=spec.outputs_as
    )
    needed = [spec.id_column] if spec.id_column else []
    if spec.passthrough != "all":
        needed += spec.passthrough
    missing = [c for c in needed if c not in columns]
    if missing:
        raise InvalidInput(
            f"missing column(s) {', '.join(map(repr, missing))} (from --id-column or "
            f"--passthrough); the input has: {', '.join(map(repr, columns[:20]))}"
        )
    return mapping


def score_partition(
    task: PartitionTask, on_batch: Callable[[int, int], None] | None = None
) -> PartResult:
    """Score one partition into its part file and error file; the counts and digests.

    `on_batch(rows, errors)` is told each batch's rows read and error rows, for progress.
    Over its error budget the partition stops: no part file (`part` is None), and the error
    file of the rows refused so far, for the user to look at (it is not committed).
    InvalidInput when the input cannot be read or mapped at all.
    """
    started = time.perf_counter()
    spec, partition = task.spec, task.partition
    model = cached_model(spec.model)
    mapping = mapping_for(spec, model, partition.columns)
    out = OutputDir(spec.output)
    columns = read_columns(spec, mapping, partition)
    errors_file = errors_name(task.index)
    name = part_name(task.index, spec.output_format)
    part: Written | None = None
    with out.atomic(errors_file) as errors:
        scorer = _Scorer(task, model, mapping, errors, on_batch)
        try:
            with out.atomic(name) as sink:
                writer = PartWriter(sink, spec.output_format)
                for piece in read_pieces(partition, columns, spec.batch_size):
                    table = scorer.score(piece)
                    if table is not None and table.num_rows:
                        writer.write(table)
                writer.close(scorer.empty_schema())
            part = Written(name, sink.size, sink.sha256)
        except _OverBudget:
            # No part file; the error file stays, for the user to see which rows failed.
            pass
    error_record: Written | None = Written(errors_file, errors.size, errors.sha256)
    if part is None:
        scorer.rows_out = 0
    elif not scorer.error_rows:
        out.remove(errors_file)
        error_record = None
    return PartResult(
        task.index,
        scorer.rows_in,
        scorer.rows_out,
        scorer.error_rows,
        part,
        error_record,
        time.perf_counter() - started,
        model.compiled is not None,
    )
