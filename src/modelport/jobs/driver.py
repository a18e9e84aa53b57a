"""Running a planned batch job: the output directory, commits, the error limit, the summary.

The driver owns the manifest: it prepares the output directory (refusing a non-empty one
unless resuming, and then refusing other arguments), hands the partitions still to score to a
`PartitionMapper` (in-process: one after the other; a scale-out scheduler maps the same
tasks over its workers), commits each part as its result arrives, stops once the error limit
is crossed, and writes `_summary.json`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.job_manifest import SUMMARY, CommittedPart, JobManifest, differences
from modelport.jobs.output_dir import OutputDir
from modelport.jobs.progress import NoProgress, Progress
from modelport.jobs.scoring import ERRORS_DIR, JobSpec, PartitionTask, PartResult, score_partition
from modelport.jobs.sources import InputFile, Partition

_LIMIT = re.compile(r"(\d+(?:\.\d*)?)(%?)")


@dataclass(frozen=True, slots=True)
class MaxErrors:
    """The error limit: a count of error rows, or a percentage of the rows read."""

    count: int | None = 0
    percent: float | None = None

    @classmethod
    def parse(cls, text: str | int) -> MaxErrors:
        """`N` (error rows) or `P%` (of the rows read); InvalidInput otherwise."""
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        match = _LIMIT.fullmatch(str(text).strip())
        if match is None:
            raise InvalidInput(f"--max-errors takes a count N or a percentage P%, not {text!r}")
        number, percent = match.groups()
        if percent:
            value = float(number)
            if value > 100:
                raise InvalidInput(f"--max-errors {text}: a percentage is at most 100%")
            return cls(None, value)
        if "." in number:
            raise InvalidInput(f"--max-errors {text}: a count is a whole number")
        return cls(int(number), None)

    def crossed(self, errors: int, rows: int) -> bool:
        """True when `errors` error rows among `rows` rows read cross the limit."""
        if self.count is not None:
            return errors > self.count
        assert self.percent is not None
        return errors * 100 > self.percent * rows

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


class PartitionMapper(Protocol):
    """Scores tasks and yields their results as they finish, in any order.

    `on_batch(rows, errors)` may be called for progress while a task runs (in-process), or
    never (a remote worker). The driver may stop iterating early (the error limit); a mapper
    should then cancel what it has not started.
    """

    def __call__(
        self, tasks: Sequence[PartitionTask], on_batch: Callable[[int, int], None]
    ) -> Iterable[PartResult]: ...


def in_process(
    tasks: Sequence[PartitionTask], on_batch: Callable[[int, int], None]
) -> Iterator[PartResult]:
    """The default mapper: each task in this process, in order."""
    for task in tasks:
        yield score_partition(task, on_batch)


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything a job needs, checked before any work: see `modelport.batch.run`."""

    spec: JobSpec
    """The job's spec; its job_id is replaced by the manifest's when resuming."""
    inputs: tuple[str, ...]
    """The inputs as given."""
    files: tuple[InputFile, ...]
    partitions: tuple[Partition, ...]
    model: dict[str, Any]
    """Provenance of the model: name, version, digest, compiled, compiled_digest."""
    max_errors: MaxErrors = MaxErrors()
    resume: bool = False

    def arguments(self) -> dict[str, Any]:
        """What decides the output, as the manifest records it (error limit aside)."""
        spec = self.spec
        return {
            "model": {k: self.model[k] for k in ("name", "version", "digest", "compiled")},
            "inputs": [{"path": f.path, "size": f.size} for f in self.files],
            "partitions": len(self.partitions),
            "options": {
                "features": None if spec.features is None else list(spec.features),
                "id_column": spec.id_column,
                "passthrough": spec.passthrough
                if spec.passthrough == "all"
                else list(spec.passthrough),
                "outputs_as": spec.outputs_as,
                "output_format": spec.output_format,
                "batch_size": spec.batch_size,
            },
        }


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The outcome of a job, as `_summary.json` holds it; `ok` is False past the error limit
    or when an error stopped it (`error`)."""

    data: dict[str, Any]
    error: ModelportError | None = field(default=None, compare=False)
    """What stopped the job before its end (an unreadable part of a file, a worker lost), if
    anything: the caller records the job, then raises it."""

    @property
    def ok(self) -> bool:
        """True when every partition is committed."""
        return bool(self.data["status"] == "succeeded")

    @property
    def job_id(self) -> str:
        """The job's id (the first run's, when resumed)."""
        return str(self.data["job_id"])


def prepare(plan: JobPlan, out: OutputDir) -> JobManifest:
    """The manifest to continue from (new or resumed); InvalidInput when the directory won't do."""
    arguments = plan.arguments()
    existing = JobManifest.load(out)
    present = out.names()
    if not plan.resume:
        if present:
            raise InvalidInput(
                f"output {out.url!r} is not empty; pass --resume to continue the job it holds, "
                "or choose another output directory"
            )
    elif existing is None and present:
        raise InvalidInput(
            f"output {out.url!r} holds files but no batch job manifest, so there is nothing to "
            "resume; choose another output directory"
        )
    if existing is None:
        manifest = JobManifest(uuid.uuid4().hex, arguments, len(plan.partitions))
    else:
        changed = differences(existing.arguments, arguments)
        if changed:
            raise InvalidInput(
                f"output {out.url!r} holds another job's output; --resume needs the same "
                "arguments as the first run. What differs: " + "; ".join(changed)
            )
        manifest = existing
        _check_committed(manifest, out)
    out.make(ERRORS_DIR)
    out.remove_temporary()
    keep = {"_manifest.json"} | {n for p in manifest.parts.values() for n in _files(p)}
    for name in out.names():
        if name not in keep:  # scored by a run that died before committing it
            out.remove(name)
    manifest.save(out)
    return manifest


def _check_committed(manifest: JobManifest, out: OutputDir) -> None:
    """Forget committed parts whose files are gone or changed: they are scored again."""
    for index, part in list(manifest.parts.items()):
        if any(out.digest(w.name) != w for w in (part.part, part.errors) if w is not None):
            del manifest.parts[index]


def _files(part: CommittedPart) -> list[str]:
    return [w.name for w in (part.part, part.errors) if w is not None]


def run_job(
    plan: JobPlan,
    mapper: PartitionMapper = in_process,
    progress: Progress | None = None,
) -> JobSummary:
    """Run `plan` to the end, to its error limit or to an error that stops it; the summary
    (also in `_summary.json`), which carries that error for the caller to raise."""
    started_at, started = datetime.now(UTC), time.perf_counter()
    out = OutputDir(plan.spec.output)
    manifest = prepare(plan, out)
    spec = replace(plan.spec, job_id=manifest.job_id)
    report = progress if progress is not None else NoProgress()
    committed = list(manifest.parts.values())
    rows_in = sum(p.rows_in for p in committed)
    errors = sum(p.error_rows for p in committed)
    this_run = {"rows_in": 0, "rows_out": 0, "error_rows": 0, "parts": 0}
    limit = plan.max_errors
    budget = None if limit.count is None else max(limit.count - errors, 0)
    tasks = [
        PartitionTask(spec, i, p, budget)
        for i, p in enumerate(plan.partitions)
        if i not in manifest.parts
    ]
    failure = None
    stopped: ModelportError | None = None
    compiled = plan.model["compiled"]
    results = iter(mapper(tasks, report.advance))
    try:
        for result in results:
            this_run["rows_in"] += result.rows_in
            this_run["error_rows"] += result.error_rows
            rows_in += result.rows_in
            errors += result.error_rows
            if result.over_budget or limit.crossed(errors, rows_in):
                _discard(out, result)
                failure = (
                    f"stopped: {errors} error row(s) in {rows_in} row(s) read crosses "
                    f"--max-errors {limit}; see {ERRORS_DIR}/ for the rows and why"
                )
                break
            manifest.parts[result.index] = CommittedPart.of(result)
            manifest.save(out)
            this_run["rows_out"] += result.rows_out
            this_run["parts"] += 1
            compiled = result.compiled
            report.part_done()
    except ModelportError as exc:
        stopped = exc
        failure = (
            f"stopped by an error: {exc.message}; the parts committed before it stay "
            "committed: fix the cause and run the same command with --resume"
        )
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        report.close()
    seconds = time.perf_counter() - started
    parts = list(manifest.parts.values())
    data = {
        "job_id": manifest.job_id,
        "status": "succeeded" if failure is None else "failed",
        "reason": failure,
        "model": dict(plan.model, compiled=compiled),
        "inputs": list(plan.inputs),
        "files": len(plan.files),
        "output": out.url,
        "partitions": len(plan.partitions),
        "committed_parts": len(parts),
        "rows_in": sum(p.rows_in for p in parts),
        "rows_out": sum(p.rows_out for p in parts),
        "error_rows": sum(p.error_rows for p in parts),
        "max_errors": str(limit),
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "duration_s": round(seconds, 3),
        "rows_per_s": round(this_run["rows_in"] / seconds, 1) if seconds > 0 else None,
        "resumed": plan.resume and len(committed) > 0,
        "this_run": this_run,
    }
    out.write_bytes(SUMMARY, json.dumps(data, indent=1).encode() + b"\n")
    return JobSummary(data, stopped)


def _discard(out: OutputDir, result: PartResult) -> None:
    """Remove the part file of a result that is not committed (its error file stays, to be
    read; a resumed run removes it and scores the partition again)."""
    if result.part is not None:
        out.remove(result.part.name)
