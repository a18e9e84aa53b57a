"""Prometheus metrics, counted in every server process and added up when scraped.

Each process counts in plain dictionaries (about a microsecond per request: no lock, no
shared-memory write) and writes a snapshot to its own file in a directory every fraction of a
second; a scrape, whichever worker answers it, adds up every process's latest snapshot. A
worker that died keeps its counts in the totals; its live gauges are left out.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
STREAM_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
_LIVE = ".json"
_DEAD = ".dead.json"

Labels = tuple[str, ...]
_BY_VERSION: Labels = ("model", "version")
_BY_FEATURE: Labels = (*_BY_VERSION, "feature")


@dataclass(eq=False)
class Family:
    """One metric family and this process's values for it, by label values."""

    name: str
    kind: str
    """"counter", "gauge" or "histogram"."""
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    mode: str = "livesum"
    """How gauges of several processes combine: "livesum", "max" or "recent"."""
    values: dict[Labels, Any] = field(default_factory=dict)
    """counter: float; gauge: [value, unix time]; histogram: [bucket counts..., sum]."""

    def labels(self, *values: str) -> _Child:
        """The series with these label values (as prometheus_client spells it)."""
        return _Child(self, tuple(values))

    def inc(self, amount: float = 1.0) -> None:
        """Add to the counter without labels."""
        self.values[()] = self.values.get((), 0.0) + amount

    def set(self, value: float) -> None:
        """Set the gauge without labels."""
        self.values[()] = [value, time.time()]

    def observe(self, key: Labels, value: float, count: int = 1) -> None:
        """Count `count` observations of `value` in the histogram series `key`."""
        entry = self.values.get(key)
        if entry is None:
            entry = self.values[key] = [0] * (len(self.buckets) + 1) + [0.0]
        entry[bisect.bisect_left(self.buckets, value)] += count
        entry[-1] += value * count


class _Child:
    __slots__ = ("family", "key")

    def __init__(self, family: Family, key: Labels) -> None:
        self.family = family
        self.key = key

    def inc(self, amount: float = 1.0) -> None:
        values = self.family.values
        values[self.key] = values.get(self.key, 0.0) + amount

    def set(self, value: float) -> None:
        self.family.values[self.key] = [value, time.time()]


class Metrics:
    """The server's metric families, written under `directory` (one file per process)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # In the order of the exposition: a scrape lists the families as they are added here.
        self._add_request_families()
        self._add_model_families()
        self._add_inference_log_families()
        self._add_monitoring_families()
        self._add_stream_families()
        self.families = [v for v in vars(self).values() if isinstance(v, Family)]

    def _add_request_families(self) -> None:
        """What the transports count: requests answered and how long they took."""
        self.requests = Family(
            "modelport_requests",
            "counter",
            "Requests answered, by model, version, protocol, endpoint and status code.",
            ("model", "version", "protocol", "endpoint", "code"),
        )
        self.duration = Family(
            "modelport_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer, in seconds.",
            ("model", "version", "protocol", "endpoint"),
            LATENCY_BUCKETS,
        )

    def _add_model_families(self) -> None:
        """What the models do: batch sizes, queues waiting for a call, load times."""
        self.batch_size = Family(
            "modelport_batch_size",
            "histogram",
            "Rows per model call (adaptive batching combines concurrent requests).",
            _BY_VERSION,
            BATCH_BUCKETS,
        )
        self.queue_depth = Family(
            "modelport_queue_depth",
            "gauge",
            "Requests waiting for a model call, summed over server processes.",
            _BY_VERSION,
            mode="livesum",
        )
        self.requests_in_flight = Family(
            "modelport_requests_in_flight",
            "gauge",
            "Inference requests received and not yet answered, in the whole server (all "
            "workers), at the scrape: the per-pod load an autoscaler scales on.",
            _BY_VERSION,
            mode="recent",
        )
        self.load_seconds = Family(
            "modelport_model_load_seconds",
            "gauge",
            "Seconds the version took to load (and warm up).",
            _BY_VERSION,
            mode="max",
        )

    def _add_inference_log_families(self) -> None:
        """How the inference log keeps up: its backlog and what it had to drop."""
        self.log_backlog = Family(
            "modelport_inference_log_backlog",
            "gauge",
            "Inference-log records accepted and not yet in the store (memory and journal).",
            mode="livesum",
        )
        self.log_dropped = Family(
            "modelport_inference_log_dropped",
            "counter",
            "Inference-log records dropped because the backlog was full (overflow = drop).",
        )

    def _add_monitoring_families(self) -> None:
        """How the models behave: drift against reference profiles, accuracy on feedback."""
        self.drift_psi = _recent_gauge(
            "modelport_drift_psi",
            "Population stability index of live inputs against the reference profile.",
            _BY_FEATURE,
        )
        self.drift_ks = _recent_gauge(
            "modelport_drift_ks",
            "Kolmogorov-Smirnov statistic of live inputs against the reference profile.",
            _BY_FEATURE,
        )
        self.feedback_rows = _recent_gauge(
            "modelport_feedback_rows",
            "Logged prediction rows that have a feedback label (what live accuracy is over).",
        )
        self.live_accuracy = _recent_gauge(
            "modelport_live_accuracy",
            "Share of logged predictions equal to the label given as feedback (classifiers).",
        )
        self.live_mae = _recent_gauge(
            "modelport_live_mae",
            "Mean absolute error of logged predictions against feedback labels (regressors).",
        )

    def _add_stream_families(self) -> None:
        """What a stream consumer (`modelport stream`) does with its source's messages."""
        self.stream_messages = Family(
            "modelport_stream_messages",
            "counter",
            "Messages of a stream source: consumed, answered (an answer produced) and "
            "dead_lettered, by source and outcome.",
            ("source", "outcome"),
        )
        self.stream_dead_letters = Family(
            "modelport_stream_dead_letters",
            "counter",
            "Messages dead-lettered, by source and stage (decode, validate, predict, encode, "
            "deliver).",
            ("source", "stage"),
        )
        self.stream_lag = Family(
            "modelport_stream_lag",
            "gauge",
            "Messages of the source not yet delivered to the consumer group, as the broker "
            "counts them.",
            ("source",),
            mode="recent",
        )
        self.stream_in_flight = Family(
            "modelport_stream_in_flight",
            "gauge",
            "Messages received and not yet acknowledged.",
            ("source",),
            mode="livesum",
        )
        self.stream_latency = Family(
            "modelport_stream_latency_seconds",
            "histogram",
            "Seconds from the broker storing a message to its answer's acknowledgement "
            "(end to end).",
            ("source",),
            STREAM_LATENCY_BUCKETS,
        )

    # -- the hot path ----------------------------------------------------------------------

    def request(
        self,
        model: str,
        version: str,
        protocol: str,
        endpoint: str,
        code: str,
        seconds: float,
        count: int = 1,
    ) -> None:
        """Count `count` requests answered together, each in `seconds`."""
        key = (model, version, protocol, endpoint)
        counts = self.requests.values
        full = (*key, code)
        counts[full] = counts.get(full, 0.0) + count
        self.duration.observe(key, seconds, count)

    def batch(self, model: str, version: int, rows: int, queued: int) -> None:
        """One model call of `rows` rows, with `queued` requests still waiting."""
        key = (model, str(version))
        self.batch_size.observe(key, rows)
        self.queue_depth.values[key] = [queued, 0.0]

    # -- files -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write this process's values to its file (atomically: a scrape never sees half)."""
        pid = os.getpid()
        snapshot = {
            f.name: [[list(key), value] for key, value in f.values.items()] for f in self.families
        }
        path = self.directory / f"{pid}{_LIVE}"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(snapshot))
        os.replace(temporary, path)

    def process_gone(self, pid: int) -> None:
        """A process exited: keep its counts in the totals, drop its live gauges."""
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.directory / f"{pid}{_LIVE}", self.directory / f"{pid}{_DEAD}")

    def render(self) -> bytes:
        """The text exposition of every process's latest values, added up."""
        self.flush()
        snapshots: list[tuple[bool, dict[str, Any]]] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                snapshots.append((not path.name.endswith(_DEAD), orjson.loads(path.read_bytes())))
            except (OSError, orjson.JSONDecodeError):
                continue  # replaced or removed while listed; its next snapshot counts
        lines: list[str] = []
        for family in self.families:
            merged = _merge(family, [(live, s.get(family.name, [])) for live, s in snapshots])
            lines.extend(_exposition(family, merged))
        return ("\n".join(lines) + "\n").encode()


def _recent_gauge(name: str, help: str, labelnames: Labels = _BY_VERSION) -> Family:
    """A monitoring gauge of one version: the most recently computed value, from any process."""
    return Family(name, "gauge", help, labelnames, mode="recent")


def _merge(family: Family, parts: Sequence[tuple[bool, list[list[Any]]]]) -> dict[Labels, Any]:
    merged: dict[Labels, Any] = {}
    for live, entries in parts:
        for raw_key, value in entries:
            key = tuple(raw_key)
            if family.kind == "counter":
                merged[key] = merged.get(key, 0.0) + value
            elif family.kind == "histogram":
                old = merged.get(key)
                merged[key] = (
                    value if old is None else [a + b for a, b in zip(old, value, strict=True)]
                )
            elif family.mode == "livesum":
                if live:
                    merged[key] = [merged.get(key, [0.0, 0.0])[0] + value[0], 0.0]
            elif family.mode == "max":
                if key not in merged or value[0] > merged[key][0]:
                    merged[key] = value
            elif key not in merged or value[1] > merged[key][1]:  # most recent
                merged[key] = value
    return merged


def _exposition(family: Family, values: dict[Labels, Any]) -> Iterable[str]:
    name = family.name
    yield f"# HELP {name}{'_total' if family.kind == 'counter' else ''} {family.help}"
    yield f"# TYPE {name}{'_total' if family.kind == 'counter' else ''} {family.kind}"
    for key, value in sorted(values.items()):
        labels = list(zip(family.labelnames, key, strict=True))
        if family.kind == "counter":
            yield f"{name}_total{_labels(labels)} {_number(value)}"
        elif family.kind == "gauge":
            yield f"{name}{_labels(labels)} {_number(value[0])}"
        else:
            cumulative = 0
            for bound, count in zip((*family.buckets, math.inf), value[:-1], strict=True):
                cumulative += count
                le = "+Inf" if bound == math.inf else _number(bound)
                yield f"{name}_bucket{_labels([*labels, ('le', le)])} {cumulative}"
            yield f"{name}_sum{_labels(labels)} {_number(value[-1])}"
            yield f"{name}_count{_labels(labels)} {cumulative}"


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
