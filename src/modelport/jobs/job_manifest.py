"""`_manifest.json`: a batch job's identity, arguments and committed parts.

A part is committed when the manifest, rewritten atomically after its part file exists, lists
it; anything else in the output directory is not part of the output. The manifest keeps the
job id of the first run and the arguments that decide the output (model version and digest,
input files, mapping and output options), so that `--resume` continues the same job and
refuses another one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from modelport.errors import InvalidInput
from modelport.jobs.output_dir import OutputDir, Written
from modelport.jobs.scoring import PartResult

MANIFEST: Final = "_manifest.json"
SUMMARY: Final = "_summary.json"
MANIFEST_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class CommittedPart:
    """One committed part: its counts, its part file and its error file (if rows failed)."""

    index: int
    rows_in: int
    rows_out: int
    error_rows: int
    part: Written
    errors: Written | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "index": self.index,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "error_rows": self.error_rows,
            "part": self.part.to_dict(),
            "errors": None if self.errors is None else self.errors.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CommittedPart:
        """Build from the JSON form (KeyError/TypeError/ValueError when malformed)."""
        errors = raw["errors"]
        return cls(
            int(raw["index"]),
            int(raw["rows_in"]),
            int(raw["rows_out"]),
            int(raw["error_rows"]),
            Written.from_dict(raw["part"]),
            None if errors is None else Written.from_dict(errors),
        )

    @classmethod
    def of(cls, result: PartResult) -> CommittedPart:
        """The committed form of a scored partition (which must have its part file)."""
        assert result.part is not None
        return cls(
            result.index,
            result.rows_in,
            result.rows_out,
            result.error_rows,
            result.part,
            result.errors,
        )


@dataclass(slots=True)
class JobManifest:
    """The manifest of one job's output directory."""

    job_id: str
    arguments: dict[str, Any]
    """What decides the output; a resumed run must give the same."""
    partitions: int
    parts: dict[int, CommittedPart] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, parts in order."""
        return {
            "format": MANIFEST_FORMAT,
            "job_id": self.job_id,
            "arguments": self.arguments,
            "partitions": self.partitions,
            "parts": [self.parts[i].to_dict() for i in sorted(self.parts)],
        }

    def save(self, out: OutputDir) -> None:
        """Rewrite the manifest atomically."""
        out.write_bytes(MANIFEST, json.dumps(self.to_dict(), indent=1).encode() + b"\n")

    @classmethod
    def load(cls, out: OutputDir) -> JobManifest | None:
        """The directory's manifest, None without one; InvalidInput when it is unreadable."""
        text = out.read_text(MANIFEST)
        if text is None:
            return None
        try:
            raw = json.loads(text)
            if raw.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            parts = [CommittedPart.from_dict(p) for p in raw["parts"]]
            return cls(
                str(raw["job_id"]),
                dict(raw["arguments"]),
                int(raw["partitions"]),
                {p.index: p for p in parts},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"output {out.url!r} has an unreadable {MANIFEST} ({exc}); choose another "
                "output directory"
            ) from None


def differences(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """What differs between two argument records, one line per key ("KEY: A, now B")."""
    lines = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {_short(a)} in the first run, now {_short(b)}")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
