"""The stream consumer: receive, answer through the dataplane, produce, then acknowledge.

Two tasks share a window of at most `max_in_flight` messages. The reader receives messages
while the window has room (so a slow sink pauses consumption) and starts answering each at
once: every message is its own inference, so consecutive messages meet in the model's
adaptive batcher as concurrent requests do on the server. The writer takes the answered
messages from the head of the window in the order they were received, produces their outputs
(and dead letters), and acknowledges them at the source only once the sink has acknowledged
what they produced: delivery is at least once, in order.

A message that cannot be answered (undecodable, refused by validation or the model, delivered
too often) becomes a dead letter and is acknowledged; it never blocks the messages behind it.
What a retry may cure (a broker away, the model not ready) is retried with backoff, without
acknowledging anything meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TypeVar

from modelport.errors import InvalidInput, ModelportError, NotFound
from modelport.jobs.streams.broker import (
    BrokerUnavailable,
    Message,
    Record,
    Sink,
    Source,
    is_transient,
)
from modelport.jobs.streams.formats import MessageFormat
from modelport.protocol.types import InferResponse
from modelport.serving.catalog import LoadedModel
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.telemetry import Call, NoTelemetry, Telemetry

log = logging.getLogger("modelport.stream")

T = TypeVar("T")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_WARN_EVERY = 30.0
"""Seconds between two warnings about the same outage."""
_MAX_ERROR = 1000
"""Characters of an error message kept in a dead letter's header."""

REQUEST_ID = "x-request-id"
"""The header an input may carry its request id in, and every output carries (else the id
is derived from the message's origin: the same for every delivery of one message)."""


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


@dataclass(frozen=True, slots=True)
class _Outcome:
    output: Record | None = None
    dead_letter: Record | None = None


class _Retry(Exception):
    """The message could not be answered now, for a reason that is not its own."""


@dataclass(slots=True)
class _InFlight:
    message: Message
    answer: asyncio.Task[_Outcome]


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
        telemetry: Telemetry | None = None,
        on_progress: Callable[[StreamStats], None] | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._source = source
        self._sink = sink
        self._dead = dead_letters
        self._format = message_format
        self._options = options
        self._telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self._on_progress = on_progress
        self.stats = StreamStats()
        self._window: deque[_InFlight] = deque()
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
            except (BrokerUnavailable, _Retry):
                if not self._abort.is_set():
                    raise
            finally:
                watchdog.cancel()
                reader.cancel()
                for held in self._window:
                    held.answer.cancel()
        finally:
            for side in reversed(opened):
                with contextlib.suppress(ModelportError, OSError):
                    await side.close()
        self.stats.unacknowledged = len(self._window)
        return self.stats

    def abort(self) -> None:
        """Stop waiting at once (a second stop): what is not acknowledged is delivered again."""
        self._abort.set()
        self._changed.set()

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, stop: asyncio.Event) -> None:
        options = self._options
        while not stop.is_set() and not self._abort.is_set():
            room = options.max_in_flight - len(self._window)
            if room <= 0:
                self._changed.clear()
                await self._changed.wait()
                continue
            receive = partial(self._source.receive, min(room, options.chunk), options.receive_wait)
            messages = await self._retrying(receive, "receive")
            for message in messages:
                self.stats.received += 1
                if message.attempt > 1:
                    self.stats.redelivered += 1
                task = asyncio.ensure_future(self._answer(message))
                self._window.append(_InFlight(message, task))
            if messages:
                self._changed.set()
        self._changed.set()

    async def _watch(self, stop: asyncio.Event, reader: asyncio.Future[None]) -> None:
        """Once stopped, give the drain `drain_seconds`; report progress meanwhile."""
        every = 5.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if self._on_progress is not None:
                self._on_progress(self.stats)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._abort.wait(), self._options.drain_seconds)
            return
        if self._window:
            log.warning(
                "stream: %d message(s) were not acknowledged within %.0f s of the stop; "
                "they will be delivered again",
                len(self._window),
                self._options.drain_seconds,
            )
        self.abort()

    # -- answering -------------------------------------------------------------------------

    async def _answer(self, message: Message) -> _Outcome:
        options = self._options
        if message.attempt > options.max_attempts:
            return self._dead_letter(
                message,
                "deliver",
                f"delivered {message.attempt} times without being acknowledged (more than "
                f"--max-attempts {options.max_attempts}); a consumer may have died on it",
            )
        request_id = _text(message.headers.get(REQUEST_ID)) or origin_id(message)
        delay = _FIRST_BACKOFF
        while True:
            try:
                return await self._infer(message, request_id)
            except _Retry as retry:
                if self._abort.is_set():
                    raise
                self.stats.retries += 1
                self._warn("model", f"stream: cannot answer yet ({retry}); retrying")
                delay = await self._pause(delay)

    async def _infer(self, message: Message, request_id: str) -> _Outcome:
        options = self._options
        try:
            model = await self._dataplane.resolve(options.model, options.version)
        except ModelportError as exc:
            # Not the message's fault (a version retired, a model still loading): wait.
            raise _Retry(exc.message) from None
        try:
            request = self._format.decode(message.value, model)
        except ModelportError as exc:
            return self._dead_letter(message, "decode", exc.message, model)
        except Exception as exc:  # a fault of modelport's decoder: log it, keep going
            log.exception("stream: decoding %s failed", _where(message))
            return self._dead_letter(message, "decode", f"internal error ({type(exc).__name__})")
        call = Call("stream", request_id, caller=_where(message), endpoint=Endpoint.INFER)
        try:
            response = await self._dataplane.infer(
                model.name, str(model.number), request, request_id, call
            )
        except ModelportError as exc:
            call.error, call.kind = exc.message, exc.kind.value
            self._telemetry.finished(call, exc.kind.value)
            if is_transient(exc) or isinstance(exc, NotFound):
                raise _Retry(exc.message) from None
            stage = "validate" if isinstance(exc, InvalidInput) else "predict"
            return self._dead_letter(message, stage, exc.message, model)
        except Exception as exc:  # a fault of the model's code or of modelport: log it
            log.exception("stream: predicting %s failed (request %s)", _where(message), request_id)
            call.error, call.kind = type(exc).__name__, "internal"
            self._telemetry.finished(call, "internal")
            return self._dead_letter(message, "predict", f"internal error ({type(exc).__name__})")
        try:
            value = self._format.encode(response, model)
        except ModelportError as exc:
            return self._dead_letter(message, "encode", exc.message, model)
        except Exception as exc:
            log.exception("stream: encoding the answer to %s failed", _where(message))
            return self._dead_letter(message, "encode", f"internal error ({type(exc).__name__})")
        self._telemetry.finished(call, "ok")
        headers = _output_headers(response, request_id)
        headers["content-type"] = self._format.content_type.encode()
        return _Outcome(output=Record(value, message.key, headers))

    def _dead_letter(
        self, message: Message, stage: str, error: str, model: LoadedModel | None = None
    ) -> _Outcome:
        origin = message.origin
        headers = dict(message.headers)
        headers.update(
            {
                "modelport.error": error[:_MAX_ERROR].encode(),
                "modelport.stage": stage.encode(),
                "modelport.origin.source": origin.source.encode(),
                "modelport.origin.position": origin.position.encode(),
                "modelport.attempt": str(message.attempt).encode(),
            }
        )
        if origin.partition is not None:
            headers["modelport.origin.partition"] = str(origin.partition).encode()
        if model is not None:
            headers["x-model-name"] = model.name.encode()
            headers["x-model-version"] = str(model.number).encode()
        return _Outcome(dead_letter=Record(message.value, message.key, headers))

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, reader: asyncio.Future[None]) -> None:
        chunk = self._options.chunk
        while not self._abort.is_set():
            if not self._window:
                if reader.done():
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            head = self._window[0].answer
            aborted = asyncio.ensure_future(self._abort.wait())
            try:
                await asyncio.wait({head, aborted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                aborted.cancel()
            if not head.done():
                return
            done: list[_InFlight] = []
            for held in self._window:
                if len(done) == chunk or not held.answer.done():
                    break
                done.append(held)
            await self._commit(done)
            for _ in done:
                self._window.popleft()
            self._changed.set()

    async def _commit(self, done: list[_InFlight]) -> None:
        outcomes = [held.answer.result() for held in done]
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
        messages = [held.message for held in done]
        await self._retrying(partial(self._source.ack, messages), "acknowledge")
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


def origin_id(message: Message) -> str:
    """The request id of a message that brings none: 32 hex digits derived from where it was
    read (source, partition, position), so a redelivered message's answer carries the same id
    as its first answer, and a reader deduplicates answers by it."""
    origin = message.origin
    where = f"{origin.source}\0{origin.partition}\0{origin.position}".encode()
    return hashlib.blake2b(where, digest_size=16).hexdigest()


def _output_headers(response: InferResponse, request_id: str) -> dict[str, bytes]:
    parameters = response.parameters or {}
    return {
        REQUEST_ID: request_id.encode(),
        "x-model-name": response.model_name.encode(),
        "x-model-version": str(response.model_version).encode(),
        "x-model-sha256": str(parameters.get("modelport.sha256", "")).encode(),
    }


def _where(message: Message) -> str:
    origin = message.origin
    partition = "" if origin.partition is None else f"[{origin.partition}]"
    return f"{origin.source}{partition}@{origin.position}"


def _describe(record: Record) -> str:
    headers = record.headers
    fields = ("modelport.origin.source", "modelport.origin.position", "modelport.stage")
    where = " ".join(f"{name.rsplit('.', 1)[-1]}={_text(headers.get(name))}" for name in fields)
    return f"{where}: {_text(headers.get('modelport.error'))}"


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
