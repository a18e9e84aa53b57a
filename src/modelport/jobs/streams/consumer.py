"""The stream consumer: receive, answer through the dataplane, produce, then acknowledge.

Two tasks share a window of at most `max_in_flight` messages. The reader receives messages
while the window has room (so a slow sink pauses consumption) and starts answering each
receive's messages at once, as one stacked inference (`answers`) that meets the model's
adaptive batcher like any request, so concurrent receives batch together too. The writer
takes the answered messages from the head of the window in the order they were received,
produces their outputs (and dead letters), and acknowledges them at the source only once the
sink has acknowledged what they produced: delivery is at least once, in order.

A message that cannot be answered (undecodable, refused by validation or the model, delivered
too often) becomes a dead letter and is acknowledged; it never blocks the messages behind it.
What a retry may cure (a broker away, the model not ready) is retried with backoff, without
acknowledging anything meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TypeVar

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.answers import Answerer, Outcome, Retry
from modelport.jobs.streams.broker import (
    BrokerUnavailable,
    Message,
    Record,
    Sink,
    Source,
)
from modelport.jobs.streams.formats import MessageFormat
from modelport.jobs.streams.stream_telemetry import NoStreamTelemetry, StreamTelemetry
from modelport.serving.dataplane import DataPlane

log = logging.getLogger("modelport.stream")

T = TypeVar("T")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_LAG_WAIT = 2.0
"""Seconds the lag may take to ask for before the gauge skips a beat."""
_WARN_EVERY = 30.0
"""Seconds between two warnings about the same outage."""


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What a consumer answers with, and how much it holds at once."""

    model: str
    version: str | None = None
    """A version number or alias; None: the model's `production` alias, else its newest."""
    max_in_flight: int = 256
    """Messages received and not yet acknowledged; the reader waits past it."""
    chunk: int = 100
    """Most messages per receive, per produce and per acknowledgement."""
    max_attempts: int = 5
    """Deliveries after which a message no consumer acknowledged is dead-lettered unread
    (it may be what killed them)."""
    receive_wait: float = 0.5
    """Seconds one receive waits for a first message (also how soon a stop is noticed)."""
    drain_seconds: float = 30.0
    """After a stop, how long the messages in flight may take to be answered and
    acknowledged before the consumer leaves them to be delivered again."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.chunk < 1:
            raise InvalidInput("--max-in-flight and the chunk size must be at least 1")
        if self.max_attempts < 1:
            raise InvalidInput("--max-attempts must be at least 1")


@dataclass(slots=True)
class StreamStats:
    """What a consumer did, for its progress lines and its exit summary."""

    received: int = 0
    answered: int = 0
    dead_lettered: int = 0
    acknowledged: int = 0
    redelivered: int = 0
    """Messages received with an attempt count above 1 (delivered before, not acknowledged)."""
    retries: int = 0
    """Broker calls and inferences retried after a transient failure."""
    unacknowledged: int = 0
    """Messages left in flight when the consumer stopped; they will be delivered again."""
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float | int]:
        """The counts, the seconds since start, and messages acknowledged per second."""
        data: dict[str, float | int] = asdict(self)
        seconds = time.monotonic() - data.pop("started")
        data["seconds"] = round(seconds, 3)
        data["messages_per_s"] = round(self.acknowledged / seconds, 1) if seconds > 0 else 0.0
        return data


@dataclass(slots=True)
class _InFlight:
    """The messages of one receive, and the task answering them."""

    messages: Sequence[Message]
    answers: asyncio.Task[list[Outcome]]


class StreamConsumer:
    """Answers a source's messages into a sink until stopped; see the module docstring.

    `dead_letters` receives what cannot be answered; without it, such a message is logged
    (with its origin and the error) and acknowledged. `telemetry` counts, logs and records
    each answered message as the server does a request (protocol "stream").
    """

    def __init__(
        self,
        dataplane: DataPlane,
        source: Source,
        sink: Sink,
        message_format: MessageFormat,
        options: StreamOptions,
        *,
        dead_letters: Sink | None = None,
        telemetry: StreamTelemetry | None = None,
        on_progress: Callable[[StreamStats], None] | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._source = source
        self._sink = sink
        self._dead = dead_letters
        self._format = message_format
        self._options = options
        self._telemetry: StreamTelemetry = (
            telemetry if telemetry is not None else NoStreamTelemetry()
        )
        self._on_progress = on_progress
        self.stats = StreamStats()
        self._answerer = Answerer(
            dataplane,
            message_format,
            self._telemetry,
            options.model,
            options.version,
            options.max_attempts,
        )
        self._window: deque[_InFlight] = deque()
        self._held = 0
        """Messages in the window."""
        self._source_name = ""
        """The topic, stream or subject read (as messages name it), for the metrics."""
        self._changed = asyncio.Event()
        """Set when the window gains a message or loses some; each side clears it to wait."""
        self._abort = asyncio.Event()
        """Set when waiting is over: the drain took too long, or a second stop came."""
        self._warned: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> StreamStats:
        """Consume until `stop` is set, then drain: answer, produce and acknowledge what was
        received, within `drain_seconds`. Returns what was done.

        InvalidInput when a broker refuses what no retry will change (a bad address or
        credentials); a broker that is away is waited for.
        """
        sides: list[Source | Sink] = [self._source, self._sink]
        sides += [self._dead] if self._dead is not None else []
        opened: list[Source | Sink] = []
        try:
            for side in sides:
                await self._retrying(side.open, "connect")
                opened.append(side)
            reader = asyncio.ensure_future(self._read(stop))
            watchdog = asyncio.ensure_future(self._watch(stop, reader))
            try:
                await self._write(reader)
                await reader  # re-raises what stopped the reader
            except (BrokerUnavailable, Retry):
                if not self._abort.is_set():
                    raise
            finally:
                watchdog.cancel()
                reader.cancel()
                for held in self._window:
                    held.answers.cancel()
        finally:
            for side in reversed(opened):
                with contextlib.suppress(ModelportError, OSError):
                    await side.close()
        self.stats.unacknowledged = self._held
        return self.stats

    def abort(self) -> None:
        """Stop waiting at once (a second stop): what is not acknowledged is delivered again."""
        self._abort.set()
        self._changed.set()

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, stop: asyncio.Event) -> None:
        options = self._options
        while not stop.is_set() and not self._abort.is_set():
            room = options.max_in_flight - self._held
            if room <= 0:
                self._changed.clear()
                await self._changed.wait()
                continue
            receive = partial(self._source.receive, min(room, options.chunk), options.receive_wait)
            messages = await self._retrying(receive, "receive")
            if messages:
                self._source_name = messages[0].origin.source
                self._telemetry.consumed(self._source_name, len(messages))
                self.stats.received += len(messages)
                self.stats.redelivered += sum(1 for m in messages if m.attempt > 1)
                task = asyncio.ensure_future(self._answer(messages))
                self._window.append(_InFlight(messages, task))
                self._held += len(messages)
                self._changed.set()
        self._changed.set()

    async def _watch(self, stop: asyncio.Event, reader: asyncio.Future[None]) -> None:
        """Once stopped, give the drain `drain_seconds`; report progress meanwhile."""
        every = 5.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            await self._report()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), self._options.drain_seconds)
            return
        if self._window:
            log.warning(
                "stream: %d message(s) were not acknowledged within %.0f s of the stop; "
                "they will be delivered again",
                self._held,
                self._options.drain_seconds,
            )
        self.abort()

    async def _report(self) -> None:
        """The progress line, and the lag and in-flight gauges."""
        if self._on_progress is not None:
            self._on_progress(self.stats)
        if self._source_name:
            with contextlib.suppress(ModelportError, TimeoutError):
                lag = await asyncio.wait_for(self._source.lag(), _LAG_WAIT)
                self._telemetry.state(self._source_name, lag, self._held)

    # -- answering -------------------------------------------------------------------------

    async def _answer(self, messages: Sequence[Message]) -> list[Outcome]:
        delay = _FIRST_BACKOFF
        while True:
            try:
                return await self._answerer.answer(messages)
            except Retry as retry:
                if self._abort.is_set():
                    raise
                self.stats.retries += 1
                self._warn("model", f"stream: cannot answer yet ({retry}); retrying")
                delay = await self._pause(delay)

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, reader: asyncio.Future[None]) -> None:
        while not self._abort.is_set():
            if not self._window:
                if reader.done():
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            head = self._window[0].answers
            aborted = asyncio.ensure_future(self._abort.wait())
            try:
                await asyncio.wait({head, aborted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                aborted.cancel()
            if not head.done():
                return
            done = [self._window[0]]
            count = len(done[0].messages)
            for held in list(self._window)[1:]:
                if count >= self._options.chunk or not held.answers.done():
                    break
                done.append(held)
                count += len(held.messages)
            await self._commit(done)
            for _ in done:
                self._window.popleft()
            self._held -= count
            self._changed.set()

    async def _commit(self, done: list[_InFlight]) -> None:
        outcomes = [o for held in done for o in held.answers.result()]
        outputs = [o.output for o in outcomes if o.output is not None]
        dead = [o.dead_letter for o in outcomes if o.dead_letter is not None]
        if outputs:
            await self._retrying(partial(self._sink.send, outputs), "produce")
        if dead:
            if self._dead is not None:
                await self._retrying(partial(self._dead.send, dead), "dead-letter")
            else:
                for record in dead:
                    log.warning("stream: refused message %s", _describe(record))
        messages = [m for held in done for m in held.messages]
        await self._retrying(partial(self._source.ack, messages), "acknowledge")
        now = time.time()
        ages = [now - m.timestamp for m in messages if m.timestamp is not None]
        stages: dict[str, int] = {}
        for record in dead:
            stage = _text(record.headers.get("modelport.stage"))
            stages[stage] = stages.get(stage, 0) + 1
        self._telemetry.committed(messages[0].origin.source, len(outputs), stages, ages)
        self.stats.answered += len(outputs)
        self.stats.dead_lettered += len(dead)
        self.stats.acknowledged += len(messages)

    # -- retrying --------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """`call()`, again with backoff while the broker is unavailable, until aborted."""
        delay = _FIRST_BACKOFF
        while True:
            try:
                return await call()
            except BrokerUnavailable as exc:
                if self._abort.is_set():
                    raise
                self.stats.retries += 1
                self._warn(what, f"stream: cannot {what} ({exc.message}); retrying")
                delay = await self._pause(delay)

    async def _pause(self, delay: float) -> float:
        """Wait `delay` seconds (less when aborted); the next delay, doubled up to a cap."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), delay)
        return min(delay * 2, _MAX_BACKOFF)

    def _warn(self, what: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[what] = now
            log.warning(text)


def _describe(record: Record) -> str:
    headers = record.headers
    fields = ("modelport.origin.source", "modelport.origin.position", "modelport.stage")
    where = " ".join(f"{name.rsplit('.', 1)[-1]}={_text(headers.get(name))}" for name in fields)
    return f"{where}: {_text(headers.get('modelport.error'))}"


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
