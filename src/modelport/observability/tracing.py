"""OpenTelemetry spans for each request: request, then queue, batch and predict inside it.

Spans are made after the answer, from the times the request collected on its way (`Call`
and `Timing`), so the request path itself only reads the clock. Needs the `otel` extra.
"""

from __future__ import annotations

import time
from typing import Any

from modelport import __version__
from modelport.errors import InvalidInput
from modelport.serving.telemetry import Call


class Tracing:
    """Turns answered calls into spans and hands them to an exporter (console or OTLP/HTTP)."""

    def __init__(self, exporter: str, endpoint: str = "") -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SimpleSpanProcessor,
                SpanExporter,
            )
        except ImportError:
            raise InvalidInput(
                "tracing needs OpenTelemetry: pip install 'modelport[otel]'"
            ) from None
        span_exporter: SpanExporter
        if exporter == "console":
            span_exporter = ConsoleSpanExporter()
            processor: Any = SimpleSpanProcessor(span_exporter)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=endpoint)
            processor = BatchSpanProcessor(span_exporter)
        resource = Resource.create({"service.name": "modelport", "service.version": __version__})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("modelport")
        # perf_counter seconds -> Unix nanoseconds, as spans want them.
        self._offset = time.time_ns() - int(time.perf_counter() * 1e9)

    def _ns(self, seconds: float) -> int:
        return self._offset + int(seconds * 1e9)

    def record(self, call: Call, code: str, ended: float) -> None:
        """Spans for one answered call; `ended` is when it was answered (perf_counter)."""
        from opentelemetry import trace

        attributes: dict[str, Any] = {
            "modelport.request_id": call.request_id,
            "modelport.protocol": call.protocol,
            "modelport.endpoint": call.endpoint,
            "modelport.status": code,
        }
        if call.model:
            attributes["modelport.model"] = call.model
        if call.version is not None:
            attributes["modelport.version"] = call.version
        root = self._tracer.start_span(
            call.endpoint or "request",
            kind=trace.SpanKind.SERVER,
            start_time=self._ns(call.started),
            attributes=attributes,
        )
        if call.kind != "ok":
            root.set_status(trace.Status(trace.StatusCode.ERROR, call.error[:200]))
        timing = call.timing
        if timing is not None and timing.predict_ended:
            context = trace.set_span_in_context(root)
            for name, start, end in (
                ("queue", timing.queued, timing.batch_started),
                ("batch", timing.batch_started, timing.predict_ended),
                ("predict", timing.predict_started, timing.predict_ended),
            ):
                if start and end >= start:
                    span = self._tracer.start_span(
                        name,
                        context=context,
                        start_time=self._ns(start),
                        attributes={"modelport.batch_rows": timing.rows},
                    )
                    span.end(end_time=self._ns(end))
        root.end(end_time=self._ns(ended))

    def close(self) -> None:
        """Send what is buffered and stop the exporter."""
        self._provider.shutdown()
