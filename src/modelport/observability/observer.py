"""The server's telemetry: metrics, access log, inference log, drift and feedback in one place.

The composition root builds one `Observer` from the settings and hands it to the serving core
and the transports, which only know its two contracts: the `Telemetry` hooks they call as they
work, and the `Reports` (metrics page, drift, feedback) the dataplane asks on a client's behalf.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from modelport.config import ServeSettings, TracingSettings
from modelport.errors import NotFound, Overloaded, Unsupported
from modelport.inference_log.location import inference_log_targets, open_store
from modelport.inference_log.record import LogBatch, LogRecord, Tensors
from modelport.inference_log.store import LogStore
from modelport.inference_log.writer import InferenceLog
from modelport.model_policy import ModelPolicy
from modelport.monitoring.drift import DriftMonitor, ReferenceProfile
from modelport.monitoring.feedback import parse_feedback, score
from modelport.observability.access_log import AccessLog, wants_json
from modelport.observability.metrics import Metrics
from modelport.observability.tracing import Tracing
from modelport.registry.manifest import ModelVersion
from modelport.serving.endpoint import Endpoint
from modelport.serving.executor import Executor
from modelport.serving.telemetry import Answered, Call

log = logging.getLogger("modelport.observer")

TICK_SECONDS = 0.2
"""How often buffered access records are written and the backlog gauge refreshed."""
DRIFT_EVERY_TICKS = 25
"""Drift gauges are recomputed every DRIFT_EVERY_TICKS ticks (5 s)."""
FEEDBACK_FLUSH_SECONDS = 2.0


class _Logged:
    """How one model version's inferences are logged: sampling and redaction."""

    __slots__ = ("rate", "redact")

    def __init__(self, rate: float, redact: frozenset[str]) -> None:
        self.rate = rate
        self.redact = redact


class Observer:
    """Implements the serving core's `Telemetry` and `Reports` with the parts the settings
    turn on."""

    def __init__(
        self,
        executor: Executor,
        *,
        tracing: TracingSettings | None = None,
        shed: bool = True,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
        inference_log: InferenceLog | None = None,
        store_target: str = "",
    ) -> None:
        self._trace = tracing if tracing is not None else TracingSettings()
        self._executor = executor
        self._metrics = metrics
        self._access = access_log
        self._log = inference_log
        self._store_target = store_target
        self._store: LogStore | None = None
        """Read side of the inference log (feedback), opened in each process by `start`."""
        self._shed = shed
        """Past the inference log's capacity, inferences are shed (else records dropped)."""
        self._logged: dict[tuple[str, int], _Logged] = {}
        self._drift: dict[tuple[str, int], DriftMonitor] = {}
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self._ticks = 0
        self._dropped = 0
        """The inference log's dropped count already added to the metric."""
        self._tracing: Tracing | None = None
        """Made by `start`, in each process (exporters run threads, which a fork loses)."""

    @classmethod
    def from_settings(
        cls, settings: ServeSettings, executor: Executor, metrics_dir: Path, stream: IO[str]
    ) -> Observer:
        """The observer the settings ask for; metrics live in `metrics_dir` (empty, owned)."""
        recorded = settings.inference_log
        target, journal = inference_log_targets(settings.registry, recorded)
        if target:
            open_store(target, lazy=True).close()  # a target that cannot work fails the start
        return cls(
            executor,
            tracing=settings.tracing,
            shed=recorded.overflow == "shed",
            metrics=Metrics(metrics_dir) if settings.metrics.enabled else None,
            access_log=(
                AccessLog(stream, json=wants_json(settings.logging.format, stream))
                if settings.logging.access_log
                else None
            ),
            inference_log=(
                InferenceLog(target, journal, capacity=recorded.capacity) if target else None
            ),
            store_target=target,
        )

    @property
    def traces(self) -> bool:
        """Whether inferences carry timings for trace spans."""
        return self._trace.exporter != "none"

    @property
    def metrics(self) -> Metrics | None:
        """The metrics, when on."""
        return self._metrics

    # -- Telemetry -------------------------------------------------------------------------

    def admit(self, model: str) -> None:
        """Shed the inference when the inference log cannot take its record."""
        if self._shed and self._log is not None and self._log.full:
            raise Overloaded(
                "the inference log is backlogged (its store is unreachable) and this server "
                "records every inference; retry later"
            )

    def finished(self, call: Call, code: str) -> None:
        """Count, log, trace and record one answered request."""
        if self._finish(call, code) and call.inputs is not None and call.kind == "ok":
            monitor = self._drift.get((call.model, call.version or 0))
            if monitor is not None:
                monitor.observe(call.inputs)

    def _finish(self, call: Call, code: str) -> bool:
        """Count, log, trace and record `call`; True when it was an inference (for drift)."""
        ended = time.perf_counter()
        seconds = ended - call.started
        version = "" if call.version is None else str(call.version)
        if self._metrics is not None:
            self._metrics.request(call.model, version, call.protocol, call.endpoint, code, seconds)
        if self._access is not None:
            self._access.record(call, code, seconds)
        if self._tracing is not None:
            self._tracing.record(call, code, ended)
        if call.endpoint != Endpoint.INFER or not call.model:
            return False
        if self._log is not None:
            self._record(call, code, seconds, self._logged.get((call.model, call.version or 0)))
        return True

    # -- StreamTelemetry -------------------------------------------------------------------

    def answered(self, answered: Answered) -> None:
        """Requests answered by one stacked inference (a stream's messages): counted, logged
        and recorded each as a request; their inputs watched for drift in one observation."""
        ended = time.perf_counter()
        seconds = ended - answered.started
        key = (answered.model, answered.version)
        if self._metrics is not None:
            self._metrics.request(
                answered.model,
                str(answered.version),
                answered.protocol,
                Endpoint.INFER,
                "ok",
                seconds,
                len(answered.request_ids),
            )
        if self._access is not None or self._tracing is not None:
            for call in answered.calls():
                if self._access is not None:
                    self._access.record(call, "ok", seconds)
                if self._tracing is not None:
                    self._tracing.record(call, "ok", ended)
        if self._log is not None:
            self._record_answered(answered, seconds, self._logged.get(key))
        monitor = self._drift.get(key)
        if monitor is not None:
            monitor.observe(answered.inputs)

    def refused(self, call: Call, code: str) -> None:
        """A message refused by validation or the model, as a failed request."""
        self._finish(call, code)

    def consumed(self, source: str, count: int) -> None:
        """Count messages received from `source`."""
        if self._metrics is not None:
            self._metrics.stream_messages.labels(source, "consumed").inc(count)

    def committed(
        self, source: str, answered: int, dead_letters: Mapping[str, int], ages: Sequence[float]
    ) -> None:
        """Count acknowledged messages by outcome; observe their end-to-end latencies."""
        metrics = self._metrics
        if metrics is None:
            return
        if answered:
            metrics.stream_messages.labels(source, "answered").inc(answered)
        for stage, count in dead_letters.items():
            metrics.stream_messages.labels(source, "dead_lettered").inc(count)
            metrics.stream_dead_letters.labels(source, stage).inc(count)
        for age in ages:
            metrics.stream_latency.observe((source,), age)

    def state(self, source: str, lag: int | None, in_flight: int) -> None:
        """Export the group's lag and the messages in flight."""
        if self._metrics is not None:
            if lag is not None:
                self._metrics.stream_lag.labels(source).set(lag)
            self._metrics.stream_in_flight.values[(source,)] = [in_flight, 0.0]

    def _record(self, call: Call, code: str, seconds: float, logged: _Logged | None) -> None:
        if logged is not None:
            if logged.rate < 1.0 and random.random() >= logged.rate:  # noqa: S311 (sampling, not secrecy)
                return
            inputs = _redacted(call.inputs, logged.redact)
            outputs = _redacted(call.outputs, logged.redact)
        else:
            inputs, outputs = call.inputs, call.outputs
        record = LogRecord(
            request_id=call.request_id,
            at=call.at,
            model=call.model,
            version=call.version,
            digest=call.digest,
            protocol=call.protocol,
            caller=call.caller,
            inputs=inputs,
            outputs=outputs,
            latency_ms=seconds * 1000,
            status=code,
            error=call.error,
        )
        assert self._log is not None
        self._log.submit(record)

    def _record_answered(self, answered: Answered, seconds: float, logged: _Logged | None) -> None:
        if logged is not None and logged.rate < 1.0:
            count = len(answered.request_ids)
            kept = [i for i in range(count) if random.random() < logged.rate]  # noqa: S311 (sampling, not secrecy)
            if not kept:
                return
            answered = answered.subset(kept)
        redact = logged.redact if logged is not None else frozenset()
        assert self._log is not None
        self._log.submit(
            LogBatch(
                at=answered.at,
                model=answered.model,
                version=answered.version,
                digest=answered.digest,
                protocol=answered.protocol,
                latency_ms=seconds * 1000,
                status="ok",
                request_ids=answered.request_ids,
                callers=answered.callers,
                inputs=_redacted(answered.inputs, redact),
                outputs=_redacted(answered.outputs, redact),
                spans=answered.spans(),
            )
        )

    def batch(self, model: str, version: int, rows: int, queued: int) -> None:
        """Observe a model call's size and the queue behind it."""
        if self._metrics is not None:
            self._metrics.batch(model, version, rows, queued)

    def loaded(self, version: ModelVersion, seconds: float, policy: ModelPolicy) -> None:
        """Remember how the version is logged and watched; export its load time."""
        key = (version.name, version.version)
        self._versions[key] = version
        if policy.log_sample_rate < 1.0 or policy.log_redact:
            self._logged[key] = _Logged(policy.log_sample_rate, policy.log_redact)
        profile = version.reference_profile
        if profile:
            self._drift[key] = DriftMonitor(ReferenceProfile.from_dict(profile))
        if self._metrics is not None:
            self._metrics.load_seconds.labels(version.name, str(version.version)).set(seconds)

    # -- Reports ---------------------------------------------------------------------------

    def metrics_page(self, in_flight: Mapping[tuple[str, int], int] | None = None) -> bytes | None:
        """Every process's metrics, this process's gauges refreshed first; `in_flight` is
        (model, version) -> requests in flight in the whole server now."""
        if self._metrics is None:
            return None
        self._refresh(drift=True, flush=False)
        if in_flight is not None:
            series = self._metrics.requests_in_flight
            series.values.clear()
            for (name, number), count in in_flight.items():
                series.labels(name, str(number)).set(count)
        return self._metrics.render()

    def drift(self, version: ModelVersion) -> dict[str, Any]:
        """The server's drift report for a loaded version (its window is every worker's)."""
        monitor = self._drift.get((version.name, version.version))
        if monitor is None:
            raise NotFound(
                f"model {version.name!r} version {version.version} has no reference profile; "
                "push it with `modelport models push --reference-data FILE`"
            )
        report = monitor.report()
        return {"model": version.name, "version": str(version.version), **report}

    async def feedback(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store the labels, then score every labelled prediction of the model."""
        request_ids, labels = parse_feedback(body)
        store = self._store
        if store is None:
            raise Unsupported("feedback needs the inference log, which is off on this server")
        if self._log is not None:
            # What this process answered a moment ago may still be on its way to the store.
            await self._executor.run(self._log.flush, FEEDBACK_FLUSH_SECONDS)
        items = list(zip(request_ids, labels, strict=True))
        await self._executor.run(store.add_feedback, model, items)
        pairs = await self._executor.run(store.feedback_pairs, model)
        known = {number: mv for (name, number), mv in self._versions.items() if name == model}
        scores = score(((v, o, label) for _, v, o, label in pairs), known)
        wanted = set(request_ids)
        matched = len({rid for rid, _, _, _ in pairs if rid in wanted})
        if self._metrics is not None:
            for number, entry in scores.items():
                keys = (model, str(number))
                self._metrics.feedback_rows.labels(*keys).set(entry.rows)
                gauge = (
                    self._metrics.live_accuracy
                    if entry.kind == "classification"
                    else self._metrics.live_mae
                )
                gauge.labels(*keys).set(entry.value())
        return {
            "model": model,
            "received": len(items),
            "matched": matched,
            "versions": {str(n): s.to_dict() for n, s in sorted(scores.items())},
        }

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the parts that run in this process (after a fork: each worker its own)."""
        if self._log is not None:
            self._log.start()
        if self._store_target:
            # Lazy: a store that is down at start is the journal's job, not a failed start.
            self._store = open_store(self._store_target, lazy=True)
        if self.traces:
            self._tracing = Tracing(self._trace.exporter, self._trace.endpoint)

    async def run(self) -> None:
        """Until cancelled: write access records, refresh the backlog and drift gauges."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self._ticks += 1
            try:
                self._refresh(drift=self._ticks % DRIFT_EVERY_TICKS == 0)
            except Exception:
                log.warning("could not refresh the telemetry", exc_info=True)

    def close(self) -> None:
        """Write everything buffered; what the store cannot take stays in the journal."""
        if self._log is not None:
            self._log.close()
        self._refresh(drift=False)
        if self._store is not None:
            self._store.close()
        if self._tracing is not None:
            self._tracing.close()

    def _refresh(self, *, drift: bool, flush: bool = True) -> None:
        if self._access is not None:
            self._access.flush()
        metrics = self._metrics
        if metrics is None:
            return
        if self._log is not None:
            metrics.log_backlog.set(self._log.backlog)
            dropped = self._log.dropped
            if dropped != self._dropped:
                metrics.log_dropped.inc(dropped - self._dropped)
                self._dropped = dropped
        if drift:
            # The window is shared: every worker computes the same values, and the gauges'
            # "recent" mode shows the newest of them, never their sum.
            for (name, number), monitor in self._drift.items():
                try:
                    report = monitor.report()
                except Overloaded:
                    continue  # the window is busy: the gauges keep their last values
                for feature in report["features"]:
                    keys = (name, str(number), feature["name"])
                    if feature["psi"] is not None:
                        metrics.drift_psi.labels(*keys).set(feature["psi"])
                    if feature["ks"] is not None:
                        metrics.drift_ks.labels(*keys).set(feature["ks"])
        if flush:
            metrics.flush()


def _redacted(arrays: Tensors | None, redact: frozenset[str]) -> Tensors | None:
    if arrays is None or not redact:
        return arrays
    return {name: (None if name in redact else a) for name, a in arrays.items()}
