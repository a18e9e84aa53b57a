"""Answering a chunk of messages: decode each, infer them as one request, encode each answer.

The messages a receive returned are decoded one by one (a message that does not decode is a
dead letter of its own), stacked along the batch dimension into one inference request and
sent through the dataplane, where it meets the model's adaptive batcher like any request. The
answer is split back into one answer per message. When the model refuses the stacked request,
the chunk is split in halves until the refused messages stand alone, as batch jobs do with
rows: a bad message never takes its neighbours down with it.

Each message is still one request to the telemetry: one access-log line and one
inference-log record each, with the message's own request id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelport.errors import InvalidInput, ModelportError, NotFound
from modelport.jobs.streams.broker import Message, Record, is_transient
from modelport.jobs.streams.formats import MessageFormat
from modelport.jobs.streams.stream_telemetry import StreamTelemetry
from modelport.protocol.types import InferRequest, InferResponse, Tensor
from modelport.serving.catalog import LoadedModel
from modelport.serving.dataplane import DataPlane
from modelport.serving.endpoint import Endpoint
from modelport.serving.telemetry import Answered, Call

log = logging.getLogger("modelport.stream")

REQUEST_ID = "x-request-id"
"""The header an input may carry its request id in, and every output carries (else the id
is derived from the message's origin: the same for every delivery of one message)."""
_MAX_ERROR = 1000
"""Characters of an error message kept in a dead letter's header."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message produced: an answer, or a dead letter."""

    output: Record | None = None
    dead_letter: Record | None = None


class Retry(Exception):
    """The chunk could not be answered now, for a reason that is not its messages' own (the
    model not ready, a version retired meanwhile)."""


@dataclass(slots=True)
class _Item:
    index: int
    message: Message
    request_id: str
    request: InferRequest


class Answerer:
    """Answers chunks of messages with the model `name` (`version`: a number or alias)."""

    def __init__(
        self,
        dataplane: DataPlane,
        message_format: MessageFormat,
        telemetry: StreamTelemetry,
        name: str,
        version: str | None,
        max_attempts: int,
    ) -> None:
        self._dataplane = dataplane
        self._format = message_format
        self._telemetry = telemetry
        self._name = name
        self._version = version
        self._max_attempts = max_attempts

    async def answer(self, messages: Sequence[Message]) -> list[Outcome]:
        """One outcome per message, in order; Retry when the model cannot answer now."""
        outcomes: list[Outcome | None] = [None] * len(messages)
        for index, message in enumerate(messages):
            if message.attempt > self._max_attempts:
                outcomes[index] = dead_letter(
                    message,
                    "deliver",
                    f"delivered {message.attempt} times without being acknowledged (more than "
                    f"--max-attempts {self._max_attempts}); a consumer may have died on it",
                )
        if any(o is None for o in outcomes):
            try:
                model = await self._dataplane.resolve(self._name, self._version)
            except ModelportError as exc:
                raise Retry(exc.message) from None
            if not await self._answer_together(messages, outcomes, model):
                items = self._decode(messages, outcomes, model)
                if items:
                    await self._infer(items, outcomes, model)
        return [o if o is not None else Outcome() for o in outcomes]

    async def _answer_together(
        self, messages: Sequence[Message], outcomes: list[Outcome | None], model: LoadedModel
    ) -> bool:
        """The common case in one go: every message decodes, in one request, the model
        answers it and every answer encodes. False (nothing done) when any of that fails:
        the caller then takes the messages one by one."""
        pending = [(i, m) for i, m in enumerate(messages) if outcomes[i] is None]
        if len(pending) < 2 or not _batched(model):
            return False
        fmt = self._format
        request = fmt.decode_many([m.value for _, m in pending], model)
        if request is None:
            return False
        ids = [_text(m.headers.get(REQUEST_ID)) or origin_id(m) for _, m in pending]
        call = Call("stream", ids[0], endpoint=Endpoint.INFER)
        try:
            response = await self._dataplane.infer(
                model.name, str(model.number), request, ids[0], call
            )
        except ModelportError as exc:
            if is_transient(exc) or isinstance(exc, NotFound):
                raise Retry(exc.message) from None
            return False
        except Exception:  # one by one, the one at fault is found and logged
            return False
        values = fmt.encode_many(response, model, ids)
        if values is None:
            return False
        headers = self._headers(model)
        for (index, message), value, request_id in zip(pending, values, ids, strict=True):
            own = dict(headers)
            own[REQUEST_ID] = request_id.encode()
            outcomes[index] = Outcome(output=Record(value, message.key, own))
        messages = [m for _, m in pending]
        self._telemetry.answered(_answered(call, model, messages, ids, request, response, None))
        return True

    def _headers(self, model: LoadedModel) -> dict[str, bytes]:
        return {
            "x-model-name": model.name.encode(),
            "x-model-version": str(model.number).encode(),
            "x-model-sha256": model.version.digest.encode(),
            "content-type": self._format.content_type.encode(),
        }

    def _decode(
        self, messages: Sequence[Message], outcomes: list[Outcome | None], model: LoadedModel
    ) -> list[_Item]:
        items = []
        for index, message in enumerate(messages):
            if outcomes[index] is not None:
                continue
            try:
                request = self._format.decode(message.value, model)
            except ModelportError as exc:
                outcomes[index] = dead_letter(message, "decode", exc.message, model)
                continue
            except Exception as exc:  # a fault of modelport's decoder: log it, keep going
                log.exception("stream: decoding %s failed", where(message))
                outcomes[index] = dead_letter(message, "decode", _internal(exc))
                continue
            request_id = _text(message.headers.get(REQUEST_ID)) or origin_id(message)
            items.append(_Item(index, message, request_id, request))
        return items

    async def _infer(
        self, items: list[_Item], outcomes: list[Outcome | None], model: LoadedModel
    ) -> None:
        stacked = _stack([item.request for item in items]) if _batched(model) else None
        if stacked is None and len(items) > 1:
            # Each its own request, all at once: they meet in the model's batcher.
            await asyncio.gather(*(self._infer([item], outcomes, model) for item in items))
            return
        request, rows = stacked if stacked is not None else (items[0].request, None)
        call = Call("stream", items[0].request_id, endpoint=Endpoint.INFER)
        try:
            response = await self._dataplane.infer(
                model.name, str(model.number), request, items[0].request_id, call
            )
        except ModelportError as exc:
            if is_transient(exc) or isinstance(exc, NotFound):
                raise Retry(exc.message) from None
            if len(items) > 1:
                await self._halves(items, outcomes, model)
                return
            stage = "validate" if isinstance(exc, InvalidInput) else "predict"
            self._refused(call, items[0], exc.kind.value, exc.message)
            outcomes[items[0].index] = dead_letter(items[0].message, stage, exc.message, model)
            return
        except Exception as exc:  # a fault of the model's code or of modelport: log it
            if len(items) > 1:
                await self._halves(items, outcomes, model)
                return
            log.exception("stream: predicting %s failed", where(items[0].message))
            self._refused(call, items[0], "internal", type(exc).__name__)
            outcomes[items[0].index] = dead_letter(items[0].message, "predict", _internal(exc))
            return
        answers = [response] if rows is None else _split(response, rows)
        encoded = []
        for item, answer in zip(items, answers, strict=True):
            answer.parameters["modelport.request_id"] = item.request_id
            answer.id = item.request_id if item.request.id is None else item.request.id
            outcome = outcomes[item.index] = self._encoded(item, answer, model)
            encoded.append(outcome.output is not None)
        if all(encoded):
            messages, ids = [i.message for i in items], [i.request_id for i in items]
            self._telemetry.answered(_answered(call, model, messages, ids, request, response, rows))
            return
        for item, answer, ok in zip(items, answers, encoded, strict=True):
            if ok:  # beside answers that were dead-lettered: each on its own
                own = _answered(
                    call, model, [item.message], [item.request_id], item.request, answer, None
                )
                self._telemetry.answered(own)

    async def _halves(
        self, items: list[_Item], outcomes: list[Outcome | None], model: LoadedModel
    ) -> None:
        half = len(items) // 2
        await self._infer(items[:half], outcomes, model)
        await self._infer(items[half:], outcomes, model)

    def _encoded(self, item: _Item, answer: InferResponse, model: LoadedModel) -> Outcome:
        try:
            value = self._format.encode(answer, model)
        except ModelportError as exc:
            return dead_letter(item.message, "encode", exc.message, model)
        except Exception as exc:
            log.exception("stream: encoding the answer to %s failed", where(item.message))
            return dead_letter(item.message, "encode", _internal(exc))
        headers = self._headers(model)
        headers[REQUEST_ID] = item.request_id.encode()
        return Outcome(output=Record(value, item.message.key, headers))

    def _refused(self, call: Call, item: _Item, kind: str, error: str) -> None:
        call.request_id, call.caller = item.request_id, where(item.message)
        call.error, call.kind = error, kind
        self._telemetry.refused(call, kind)


def dead_letter(
    message: Message, stage: str, error: str, model: LoadedModel | None = None
) -> Outcome:
    """`message` as a dead letter: its own value, key and headers, and why, where and when."""
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
    return Outcome(dead_letter=Record(message.value, message.key, headers))


def origin_id(message: Message) -> str:
    """The request id of a message that brings none, derived from where it was read, so a
    redelivered message's answer carries the same id as its first answer, and a reader
    deduplicates answers by it.

    32 hex digits: 16 name the source and partition (a hash), 16 the position in it. A
    position that is a number (a Kafka offset, a JetStream sequence) or a Redis entry id is
    written in its own order, so the ids of one partition ascend as it is read: the inference
    log's request-id index then appends instead of splitting pages (a fifth of the cost of
    writing a random id). Any other position is hashed.
    """
    origin = message.origin
    return _partition_id(origin.source, origin.partition) + _position_id(origin.position)


@functools.lru_cache(maxsize=1024)
def _partition_id(source: str, partition: int | None) -> str:
    return hashlib.blake2b(f"{source}\0{partition}".encode(), digest_size=8).hexdigest()


def _position_id(position: str) -> str:
    """16 hex digits for `position`, in the order of positions where the broker has one."""
    first, dash, second = position.partition("-")
    if _digits(first) and not dash and int(first) < 1 << 64:
        return f"{int(first):016x}"
    if _digits(first) and _digits(second) and int(first) < 1 << 44 and int(second) < 1 << 20:
        # A Redis entry id: milliseconds and a sequence, 44 bits and 20 of the 64.
        return f"{int(first) << 20 | int(second):016x}"
    return hashlib.blake2b(position.encode(), digest_size=8).hexdigest()


def where(message: Message) -> str:
    """Where `message` was read, for logs: SOURCE[PARTITION]@POSITION."""
    origin = message.origin
    partition = "" if origin.partition is None else f"[{origin.partition}]"
    return f"{origin.source}{partition}@{origin.position}"


def _answered(
    call: Call,
    model: LoadedModel,
    messages: list[Message],
    request_ids: list[str],
    request: InferRequest,
    response: InferResponse,
    rows: list[int] | None,
) -> Answered:
    """The messages answered by `response` (each its `rows`, one each when None) for the
    telemetry."""
    return Answered(
        "stream",
        model.name,
        model.number,
        model.version.digest,
        call.started,
        call.at,
        request_ids,
        [where(m) for m in messages],
        {t.name: t.data for t in request.inputs},
        {t.name: t.data for t in response.outputs},
        rows,
    )


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _batched(model: LoadedModel) -> bool:
    """Whether requests to `model` may be stacked: every input and output has a batch
    dimension."""
    signature = model.version.signature
    specs = (*signature.inputs, *signature.outputs)
    return all(spec.shape and spec.shape[0] == -1 for spec in specs)


def _layout(request: InferRequest) -> tuple[Any, ...] | None:
    """What must be equal for requests to stack, or None when `request` cannot stack."""
    if request.parameters or not request.inputs:
        return None
    rows = request.inputs[0].shape[:1]
    if not rows or any(t.shape[:1] != rows or t.parameters for t in request.inputs):
        return None
    outputs = None
    if request.outputs is not None:
        if any(o.parameters for o in request.outputs):
            return None
        outputs = tuple((o.name, o.binary) for o in request.outputs)
    inputs = tuple((t.name, t.datatype, t.shape[1:]) for t in request.inputs)
    return inputs, outputs, request.binary_output


def _stack(requests: list[InferRequest]) -> tuple[InferRequest, list[int]] | None:
    """`requests` as one request along the batch dimension, and each one's row count."""
    first = requests[0]
    layout = _layout(first)
    if layout is None or any(_layout(r) != layout for r in requests[1:]):
        return None
    rows = [r.inputs[0].shape[0] for r in requests]
    inputs = []
    for j, tensor in enumerate(first.inputs):
        data = np.concatenate([r.inputs[j].data for r in requests])
        inputs.append(Tensor(tensor.name, tensor.datatype, data.shape, data))
    return InferRequest(inputs, outputs=first.outputs, binary_output=first.binary_output), rows


def _split(response: InferResponse, rows: list[int]) -> list[InferResponse]:
    """`response` to a stacked request as one response per request of `rows` rows."""
    answers = []
    start = 0
    for count in rows:
        end = start + count
        outputs = [
            Tensor(t.name, t.datatype, (count, *t.shape[1:]), t.data[start:end])
            for t in response.outputs
        ]
        answers.append(
            InferResponse(
                response.model_name,
                response.model_version,
                response.id,
                outputs,
                dict(response.parameters),
            )
        )
        start = end
    return answers


def _internal(exc: BaseException) -> str:
    return f"internal error ({type(exc).__name__})"


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
