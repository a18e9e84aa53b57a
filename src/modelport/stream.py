"""Stream prediction from a message broker: `modelport.stream.run`, which `modelport stream`
calls.

    from modelport import stream
    stats = stream.run(
        "iris:production",
        source="kafka://127.0.0.1:9092/features",
        sink="kafka://127.0.0.1:9092/scores",
        dead_letter="kafka://127.0.0.1:9092/scores-refused",
    )

The consumer loads the model as the server does (compiled form, validation, batching), follows
the registry (an alias move switches the model within about a second), records every answer
in the inference log, and runs until SIGTERM or SIGINT, then drains. See docs/streaming.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modelport.config import ModelsSettings, ServeSettings
from modelport.errors import InvalidInput
from modelport.jobs.streams.addresses import ConsumerIdentity, shown_url, sink_for, source_for
from modelport.jobs.streams.consumer import StreamConsumer, StreamOptions, StreamStats
from modelport.jobs.streams.formats import message_format
from modelport.metrics_listener import MetricsListener
from modelport.observability.observer import Observer
from modelport.registry.store import Registry
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle
from modelport.transports.rest import RestApp
from modelport.worker import uvicorn_config

__all__ = ["StreamSpec", "StreamStats", "run"]

log = logging.getLogger("modelport.stream")

DEFAULT_RECLAIM_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What to consume, where to produce, and how messages read and answer."""

    source: str
    sink: str
    dead_letter: str | None = None
    group: str | None = None
    """The consumer group; default `modelport-MODEL`."""
    consumer: str | None = None
    """This process's name in the group; default HOST-PID."""
    format: str = "oip"
    schema: Path | None = None
    schema_dir: Path | None = None
    output_format: str | None = None
    output_schema_id: int | None = None
    features: Sequence[str] | None = None
    reclaim_after: float = DEFAULT_RECLAIM_SECONDS
    """Seconds a message may stay unacknowledged before another consumer takes it over
    (Redis XAUTOCLAIM idle time, NATS ack wait)."""


def run(
    model: str,
    spec: StreamSpec,
    *,
    settings: ServeSettings | None = None,
    options: StreamOptions | None = None,
    metrics_socket: socket.socket | None = None,
    announce: Callable[[str], None] = print,
    progress: Callable[[StreamStats], None] | None = None,
) -> StreamStats:
    """Consume `spec.source` with `model` (NAME[:VERSION|ALIAS]) until SIGTERM or SIGINT.

    `settings` carries the registry, the model settings (batching, compiled), logging and
    the inference log as for `serve`; `metrics_socket`, when given, serves /metrics and the
    health checks. Returns what was done; InvalidInput for a bad address, format or model
    before anything is consumed.
    """
    settings = settings if settings is not None else ServeSettings()
    name, _, version = model.partition(":")
    options = options if options is not None else StreamOptions(name, version or None)
    fmt = message_format(
        spec.format,
        schema=spec.schema,
        schema_dir=spec.schema_dir,
        output=spec.output_format,
        output_schema_id=spec.output_schema_id,
        features=spec.features,
    )
    identity = ConsumerIdentity(
        spec.group or f"modelport-{name}",
        spec.consumer or f"{socket.gethostname()}-{os.getpid()}",
        spec.reclaim_after,
    )
    source = source_for(spec.source, identity)
    sink = sink_for(spec.sink)
    dead = None if spec.dead_letter is None else sink_for(spec.dead_letter, "--dead-letter")
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(Registry.open(settings.registry, create=False))
        registry.resolve(name, version or None)  # an unknown model or alias: NotFound now
        metrics_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelport-")))
        observer = Observer.from_settings(settings, Executor(), metrics_dir, sys.stderr)
        models = _only(settings.models, name, version)
        lifecycle = Lifecycle(registry, Catalog(), Executor(), models, observer)
        dataplane = DataPlane(lifecycle, settings.limits, reports=observer)
        lifecycle.preload(models.selection)
        loaded = lifecycle.catalog.get(name, version or None)
        if loaded is None:
            raise InvalidInput(
                f"model {model!r} could not be loaded (see the log above); nothing was consumed"
            )
        fmt.prepare(loaded)  # wrong features or a schema that does not feed it: refused now
        # What is loaded now lives as long as the consumer: keep the collector from scanning
        # it over and over (a quarter of the consumer's CPU on Kafka, whose client makes many
        # short-lived objects a message), as the server does.
        gc.freeze()
        consumer = StreamConsumer(
            dataplane,
            source,
            sink,
            fmt,
            options,
            dead_letters=dead,
            telemetry=observer,
            on_progress=progress,
        )
        mv = loaded.version
        metrics = ""
        if metrics_socket is not None:
            host, port = metrics_socket.getsockname()[:2]
            metrics = f"; metrics at http://{host}:{port}/metrics"
        announce(
            f"modelport streaming {mv.name} version {mv.version} from {shown_url(spec.source)} "
            f"to {shown_url(spec.sink)} (group {identity.group}, consumer {identity.consumer}"
            f"{metrics})"
        )
        health = None if metrics_socket is None else _health(dataplane, observer, metrics_socket)
        return asyncio.run(_consume(consumer, dataplane, observer, health))


async def _consume(
    consumer: StreamConsumer,
    dataplane: DataPlane,
    observer: Observer,
    health: MetricsListener | None,
) -> StreamStats:
    lifecycle = dataplane.lifecycle
    stop = asyncio.Event()
    observer.start()
    background = [
        asyncio.ensure_future(lifecycle.follow()),
        asyncio.ensure_future(observer.run()),
    ]
    if health is not None:
        await health.start()
    try:
        with _signals(stop, consumer):
            return await consumer.run(stop)
    finally:
        for task in background:
            task.cancel()
        if health is not None:
            await health.stop()
        await lifecycle.close()
        observer.close()


def _health(dataplane: DataPlane, observer: Observer, sock: socket.socket) -> MetricsListener:
    """/metrics and the health checks on `sock`: the REST app answers only those on its
    metrics port."""
    app = RestApp(
        dataplane, max_body_bytes=1024, telemetry=observer, metrics_port=sock.getsockname()[1]
    )
    return MetricsListener(uvicorn_config(app, None, lifespan="off"), sock)


@contextlib.contextmanager
def _signals(stop: asyncio.Event, consumer: StreamConsumer) -> Iterator[None]:
    """SIGTERM and SIGINT stop consuming and drain; a second one stops waiting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        if stop.is_set():
            consumer.abort()
        else:
            log.info("stream: stopping; answering and acknowledging what is in flight")
            stop.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping)
    try:
        yield
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)


def _only(models: ModelsSettings, name: str, version: str) -> ModelsSettings:
    """`models` narrowed to the one model consumed (a version number pins it)."""
    return replace(models, selection=(f"{name}:{version}" if version.isdigit() else name,))
