"""Batch prediction over files: `modelport.batch.run`, which `modelport batch` calls.

    from modelport import batch
    summary = batch.run("iris", ["data/*.parquet"], "scores/")
    assert summary.ok, summary.data["reason"]

Everything is checked before any row is scored (the model, every input file, the column
mapping of each, the output directory); the job then scores one partition (a file, or a
Parquet row group) at a time into `DIR/part-NNNNN.parquet`, commits each in
`DIR/_manifest.json`, and writes `DIR/_summary.json`. See docs/batch.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from modelport.config import current_user, registry_location
from modelport.errors import InvalidInput
from modelport.jobs.dask_runner import dask_mapper
from modelport.jobs.driver import (
    JobPlan,
    JobSummary,
    MaxErrors,
    PartitionMapper,
    in_process,
    run_job,
)
from modelport.jobs.model_cache import ModelRef, cached_model
from modelport.jobs.part_writer import OUTPUT_FORMATS, OutputFormat
from modelport.jobs.progress import ProgressMode, make_progress
from modelport.jobs.scoring import PROVENANCE, ROW_KEY, JobSpec, mapping_for, passthrough_columns
from modelport.jobs.sources import is_remote, partitions, resolve_inputs
from modelport.registry.manifest import ModelVersion
from modelport.registry.store import Registry
from modelport.serving.table_mapping import OutputsAs, TableMapping

__all__ = ["JobSummary", "MaxErrors", "run"]

DEFAULT_BATCH_SIZE = 65536
"""Rows scored per model call (and read per record batch)."""
_MAX_RECORDED_INPUTS = 20


def run(
    model: str,
    inputs: Sequence[str],
    output: str,
    *,
    registry: str | None = None,
    features: Sequence[str] | None = None,
    id_column: str | None = None,
    passthrough: Sequence[str] | Literal["all"] = (),
    max_errors: str | int | MaxErrors = 0,
    resume: bool = False,
    compiled: bool = True,
    output_format: OutputFormat = "parquet",
    outputs_as: OutputsAs = "columns",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressMode = "none",
    mapper: PartitionMapper = in_process,
    dask: str | None = None,
    actor: str | None = None,
) -> JobSummary:
    """Score `inputs` (files, directories, globs; paths or fsspec URLs) with `model` into `output`.

    `model` is NAME (its `production` alias, else its newest version), NAME:VERSION or
    NAME:ALIAS; its compiled form runs when it has one, unless `compiled=False`. InvalidInput
    (or NotFound, for the model) before any work when something does not fit. Past
    `max_errors` (N error rows, or "P%" of the rows read; default 0) the job stops and the
    summary's `ok` is False; what was committed stays committed, and `resume=True` with the
    same arguments (the error limit may change) continues it. An error that stops the job
    midway (a file unreadable past its start, a lost worker) is raised once the summary is
    written and the job recorded. The job is recorded in the model's history (`models
    history`) as a `batch` event by `actor` (default: this user).
    `dask` ("local:N" or "tcp://HOST:PORT") scores the partitions on a Dask cluster instead
    of in this process (same output; needs `modelport[dask]`).
    """
    if dask is not None:
        mapper = dask_mapper(dask)
    if batch_size < 1:
        raise InvalidInput("--batch-size must be at least 1")
    if output_format not in OUTPUT_FORMATS:
        raise InvalidInput(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}")
    if output_format == "csv" and outputs_as == "lists":
        raise InvalidInput("CSV has no list columns; use --output-format parquet or jsonl")
    limit = max_errors if isinstance(max_errors, MaxErrors) else MaxErrors.parse(max_errors)
    location = registry_location(registry)
    name, _, ref = model.partition(":")
    with Registry.open(location, create=False) as store:
        mv = store.resolve(name, ref or None)
    ref_ = ModelRef(location, mv.name, mv.version, mv.digest, compiled)
    loaded = cached_model(ref_)
    files = resolve_inputs(list(inputs))
    shown = passthrough if passthrough == "all" else tuple(passthrough)
    spec = JobSpec(
        job_id="",
        model=ref_,
        output=output,
        output_format=output_format,
        features=None if features is None else tuple(features),
        id_column=id_column,
        passthrough=shown,
        outputs_as=outputs_as,
        batch_size=batch_size,
    )
    for f in files:
        try:
            mapping = mapping_for(spec, loaded, f.columns)
        except InvalidInput as exc:
            raise InvalidInput(f"input {f.path!r}: {exc.message}") from None
        _check_names(spec, mapping, f.columns, f.path)
    parts = partitions(files)
    provenance = _provenance(mv, loaded.compiled is not None)
    plan = JobPlan(spec, tuple(inputs), tuple(files), tuple(parts), provenance, limit, resume)
    total = None if any(p.rows is None for p in parts) else sum(p.rows or 0 for p in parts)
    summary = run_job(plan, mapper, make_progress(progress, total, len(parts)))
    _record(location, mv, summary, actor or current_user())
    if summary.error is not None:
        # Recorded, with `_summary.json` written: now the caller hears what stopped it.
        raise summary.error
    return summary


def _provenance(mv: ModelVersion, compiled: bool) -> dict[str, Any]:
    return {
        "name": mv.name,
        "version": mv.version,
        "digest": mv.digest,
        "compiled": compiled,
        "compiled_digest": mv.compiled.digest if compiled and mv.compiled else None,
    }


def _check_names(spec: JobSpec, mapping: TableMapping, columns: Sequence[str], path: str) -> None:
    """Refuse an output with a column twice (a passthrough column named like an output)."""
    names = list(ROW_KEY) if spec.id_column is None else [spec.id_column]
    names += passthrough_columns(spec, columns)
    names += mapping.output_names() or [s.name for s in mapping.outputs]
    names += PROVENANCE
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(
            f"input {path!r}: the output would hold column(s) {', '.join(map(repr, twice))} "
            "twice (an input column named like a key, output or provenance column); leave it "
            "out of --passthrough"
        )


def _where(path: str) -> str:
    """A path as the history records it: absolute when local (the history outlives the cwd)."""
    return path if is_remote(path) else os.path.abspath(path.removeprefix("file://"))


def _record(location: str, mv: ModelVersion, summary: JobSummary, actor: str) -> None:
    data = summary.data
    inputs = [_where(p) for p in data["inputs"]]
    detail = {
        "job_id": data["job_id"],
        "status": data["status"],
        "inputs": inputs[:_MAX_RECORDED_INPUTS],
        "input_count": len(inputs),
        "output": _where(data["output"]),
        "rows_in": data["rows_in"],
        "rows_out": data["rows_out"],
        "error_rows": data["error_rows"],
        "digest": mv.digest,
        "compiled": data["model"]["compiled"],
    }
    reason = None if summary.ok else str(data["reason"])
    with Registry.open(location, create=False) as store:
        store.record_event(
            mv.name, "batch", actor=actor, version=mv.version, reason=reason, detail=detail
        )
