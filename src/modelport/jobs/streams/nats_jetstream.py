"""NATS JetStream as a stream source (a durable pull consumer) and a sink (acknowledged publishes).

The URL (``nats://...?stream=S&subject=X``, ``tls://...``) is described in `nats_address`;
the connection (reconnects, bounded calls, error mapping) in `nats_connection`.

A record's key travels as the message header ``key`` (NATS has no key of its own); the other
headers are the record's headers. NATS headers are text: a header value (or key) must be UTF-8
without line breaks or surrounding spaces, or `send` refuses it (InvalidInput).

A source's group is one durable pull consumer: every process opened with the same group shares
its messages; a message not acknowledged within `reclaim_after` seconds of its delivery goes to
the group again (JetStream's ack wait), with its delivery count as `Message.attempt`. The
consumer never gives up on a message (max deliver unlimited): the caller dead-letters it.

Every call to the broker is bounded by `timeout` seconds. While the connection is lost, nats-py
reconnects in the background (for ever) and every call raises BrokerUnavailable at once; calls
succeed again after the reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    StorageType,
    StreamConfig,
)

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Origin, Record
from modelport.jobs.streams.nats_address import NatsAddress, check_jetstream_name, parse_nats_url
from modelport.jobs.streams.nats_connection import NatsConnection
from modelport.jobs.streams.nats_pubacks import PubAcks

KEY_HEADER = "key"
"""The header that carries a record's key."""

# Header names nats-py accepts (an HTTP token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Publish preconditions JetStream keeps in the stored message; read back and produced again
# (say, copied to a dead letter) they would make another stream refuse the publish.
_PRECONDITION_PREFIX = "Nats-Expected-"
# The shortest fetch nats-py takes: it asks the server to expire the pull 0.1 ms early.
_SHORTEST_WAIT = 0.01
# How long the second pull of a receive lingers for messages beyond those already there.
_GATHER_WAIT = 0.005


async def _ensure_stream(
    js: JetStreamContext, connection: NatsConnection, stream: str, subject: str
) -> None:
    """The stream exists, or is created when the URL says create=true; InvalidInput otherwise."""
    with connection.calls(f"looking up stream {stream!r}"):
        try:
            await js.stream_info(stream)
            return
        except nats.js.errors.NotFoundError:
            if not connection.address.create:
                raise InvalidInput(
                    f"JetStream at {connection.address} has no stream {stream!r}: create it, or "
                    f"add &create=true to the URL to create it with subjects=[{subject!r}]"
                ) from None
    with connection.calls(f"creating stream {stream!r}"):
        # Another process may create it at the same time: the same config is no conflict.
        await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))


class NatsSource:
    """A group's messages from a JetStream stream: a durable pull consumer named after the group.

    `Message.key` is the header ``key``; `Message.headers` the others (``Nats-Msg-Id`` among
    them), less JetStream's publish preconditions (``Nats-Expected-*``); `Message.origin` is
    (stream, None, stream sequence). A new group starts at the stream's first message. The
    server's default max ack pending (1000) caps the group's unacknowledged messages, all its
    processes together. One `receive` at a time per source (the pulls share one inbox).
    """

    def __init__(
        self,
        address: NatsAddress,
        *,
        group: str,
        consumer: str,
        reclaim_after: float,
        timeout: float = 5.0,
    ) -> None:
        self.stream = check_jetstream_name(
            "stream name", address.required("stream", "source", "stream=NAME&subject=SUBJECT")
        )
        self.subject = address.required("subject", "source", "subject=SUBJECT")
        self.group = check_jetstream_name("consumer group", group)
        if reclaim_after <= 0:
            raise InvalidInput(f"reclaim_after is a positive number of seconds: {reclaim_after}")
        self.reclaim_after = reclaim_after
        self._connection = NatsConnection(address, consumer, timeout)
        self._subscription: JetStreamContext.PullSubscription | None = None

    def __repr__(self) -> str:
        return f"NatsSource({self._connection.address}, group={self.group!r})"

    async def open(self) -> None:
        """Connect, make sure of the stream, create or update the group's durable consumer."""
        js = await self._connection.open()
        try:
            await _ensure_stream(js, self._connection, self.stream, self.subject)
            config = ConsumerConfig(
                durable_name=self.group,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.reclaim_after,
                max_deliver=-1,
                filter_subject=self.subject,
            )
            doing = f"creating consumer {self.group!r} on stream {self.stream!r}"
            with self._connection.calls(doing):
                # Creating an existing durable updates it (the last opener's ack wait wins).
                await js.add_consumer(self.stream, config)
                self._subscription = await js.pull_subscribe_bind(
                    durable=self.group, stream=self.stream
                )
        except BaseException:
            await self._connection.close()
            raise

    async def receive(self, limit: int, wait: float) -> Sequence[Message]:
        """Up to `limit` messages, waiting at most `wait` seconds (at least 10 ms) for the first.

        Two pulls: one message, waited for; then up to `limit - 1` more that are there already
        (nats-py's fetch of a batch waits out its timeout unless the batch fills).
        """
        if limit < 1:
            return []
        self._pulling()
        self._connection.check_connected("receiving")
        first = await self._fetch(1, max(wait, _SHORTEST_WAIT))
        if not first or limit == 1:
            return first
        try:
            more = await self._fetch(limit - 1, _GATHER_WAIT)
        except BrokerUnavailable:
            # The first is ours already; the caller meets the outage on its next call.
            more = []
        return first + more

    async def _fetch(self, limit: int, wait: float) -> list[Message]:
        subscription = self._pulling()
        with self._connection.calls(f"receiving from stream {self.stream!r}"):
            try:
                # nats-py bounds the fetch by `wait`; the outer bound is for a stuck socket.
                fetched = await asyncio.wait_for(
                    subscription.fetch(batch=limit, timeout=wait), wait + self._connection.timeout
                )
            except TimeoutError:
                if self._connection.refusal is not None:
                    raise
                self._connection.check_connected("receiving")
                return []
        return [self._message(msg) for msg in fetched]

    def _message(self, msg: Msg) -> Message:
        metadata = msg.metadata
        headers = dict(msg.headers or {})
        key = headers.pop(KEY_HEADER, None)
        return Message(
            value=msg.data,
            key=None if key is None else key.encode(),
            headers={
                name: value.encode()
                for name, value in headers.items()
                if not name.startswith(_PRECONDITION_PREFIX)
            },
            origin=Origin(metadata.stream, None, str(metadata.sequence.stream)),
            attempt=metadata.num_delivered,
            token=msg,
            timestamp=None if metadata.timestamp is None else metadata.timestamp.timestamp(),
        )

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge `messages` and flush: the acks are at the server when it returns."""
        await self._reply(messages, "acknowledging", Msg.ack)

    async def in_progress(self, messages: Sequence[Message]) -> None:
        """Tell JetStream `messages` are still being worked on: their ack wait starts again.

        Optional (not in the Source contract): one small publish per message, for a caller
        whose work on a message may outlast `reclaim_after`.
        """
        await self._reply(messages, "extending the ack wait", Msg.in_progress)

    async def _reply(self, messages: Sequence[Message], doing: str, reply: Any) -> None:
        if not messages:
            return
        self._pulling()
        self._connection.check_connected(doing)
        with self._connection.calls(f"{doing} on stream {self.stream!r}"):
            for message in messages:
                with contextlib.suppress(nats.errors.MsgAlreadyAckdError):
                    # A retried ack after a failed flush meets the ones already sent.
                    await reply(message.token)
            # The PONG comes after the server has read every ack written before the PING.
            client = self._connection.client
            await client.flush(timeout=self._connection.timeout)  # type: ignore[arg-type]

    def _pulling(self) -> JetStreamContext.PullSubscription:
        if self._subscription is None:
            raise InvalidInput(f"open the NATS source {self} before receiving")
        return self._subscription

    async def lag(self) -> int | None:
        """The group's pending count from JetStream (messages not yet delivered to it); None
        when the server is away."""
        subscription = self._pulling()
        try:
            with self._connection.calls(f"asking stream {self.stream!r} for the group's lag"):
                info = await subscription.consumer_info()
        except ModelportError:
            return None
        return None if info.num_pending is None else int(info.num_pending)

    async def close(self) -> None:
        """Disconnect; the durable consumer stays, and unacknowledged messages go to the group.

        Messages the client buffered and `receive` never returned (the tail of a pull that
        came after its wait) are handed back first: the group receives them again at once,
        ahead of newer messages, instead of after the ack wait.
        """
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await self._hand_back(subscription)
        await self._connection.close()

    async def _hand_back(self, subscription: JetStreamContext.PullSubscription) -> None:
        if not self._connection.client.is_connected:
            return  # the ack wait will return them
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            async with asyncio.timeout(self._connection.timeout):
                while subscription.pending_msgs:
                    # A fetch takes a buffered message before it asks the server for more.
                    for msg in await subscription.fetch(1, timeout=_SHORTEST_WAIT):
                        await msg.nak()


class NatsSink:
    """Publishes records to one subject with JetStream, awaiting every PubAck."""

    def __init__(self, address: NatsAddress, *, name: str = "modelport", timeout: float = 5.0):
        self.subject = address.required("subject", "sink", "subject=SUBJECT")
        self.stream = address.stream
        if self.stream is not None:
            check_jetstream_name("stream name", self.stream)
        self._connection = NatsConnection(address, name, timeout)
        self._acks: PubAcks | None = None

    def __repr__(self) -> str:
        return f"NatsSink({self._connection.address})"

    async def open(self) -> None:
        """Connect and make sure a stream stores the subject (creating it with create=true)."""
        js = await self._connection.open()
        try:
            if self.stream is not None:
                await _ensure_stream(js, self._connection, self.stream, self.subject)
            else:
                with self._connection.calls(f"looking up the stream of subject {self.subject!r}"):
                    try:
                        await js.find_stream_name_by_subject(self.subject)
                    except nats.js.errors.NotFoundError:
                        raise InvalidInput(
                            f"no JetStream stream at {self._connection.address} stores subject "
                            f"{self.subject!r}: create one, or add &stream=NAME&create=true"
                        ) from None
            acks = PubAcks()
            with self._connection.calls("subscribing to the PubAcks"):
                await acks.open(self._connection.client)
        except BaseException:
            await self._connection.close()
            raise
        self._acks = acks

    async def send(self, records: Sequence[Record]) -> None:
        """Publish `records` in order and await every PubAck, all within `timeout` seconds.

        The publishes are written one after the other on the one connection, so the stream
        stores them in order; their acks are awaited together.
        """
        if not records:
            return
        if self._acks is None:
            raise InvalidInput(f"open the NATS sink {self} before sending")
        acks, client = self._acks, self._connection.client
        prepared = [(record.value, self._headers(record)) for record in records]
        self._connection.check_connected("publishing")
        replies: list[str] = []
        pending: list[asyncio.Future[None]] = []
        with self._connection.calls(f"publishing to subject {self.subject!r}"):
            try:
                async with asyncio.timeout(self._connection.timeout):
                    for value, headers in prepared:
                        reply, future = acks.expect()
                        replies.append(reply)
                        pending.append(future)
                        await client.publish(self.subject, value, reply=reply, headers=headers)
                    outcomes = await asyncio.gather(*pending, return_exceptions=True)
            finally:
                acks.forget(replies)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome

    def _headers(self, record: Record) -> dict[str, str] | None:
        headers = nats_headers(record)
        if self.stream is None:
            return headers
        # The broker refuses the publish when another stream stores the subject.
        return {**(headers or {}), Header.EXPECTED_STREAM: self.stream}

    async def close(self) -> None:
        """Disconnect (every send has already awaited its acks)."""
        self._acks = None
        await self._connection.close()


def nats_headers(record: Record) -> dict[str, str] | None:
    """`record`'s headers and key as NATS headers; InvalidInput for what NATS cannot carry."""
    headers: dict[str, str] = {}
    items: list[tuple[str, bytes]] = list(record.headers.items())
    if KEY_HEADER in record.headers:
        raise InvalidInput(f"the header {KEY_HEADER!r} carries the record key on NATS")
    if record.key is not None:
        items.append((KEY_HEADER, record.key))
    for name, value in items:
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidInput(
                f"a NATS header name is letters, digits and !#$%&'*+-.^_`|~: {name!r}"
            )
        headers[name] = _header_text(name, value)
    return headers or None


def _header_text(name: str, value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        text = None
    if text is None or text != text.strip() or "\r" in text or "\n" in text:
        raise InvalidInput(
            f"NATS carries header {name!r} as text: UTF-8 without line breaks or surrounding spaces"
        )
    return text


def nats_source(
    url: str, *, group: str, consumer: str, reclaim_after: float, timeout: float = 5.0
) -> NatsSource:
    """The source a ``nats://`` or ``tls://`` URL names, for `group`; no I/O until `open`.

    `consumer` names this process's connection (shown in the server's monitoring).
    """
    return NatsSource(
        parse_nats_url(url),
        group=group,
        consumer=consumer,
        reclaim_after=reclaim_after,
        timeout=timeout,
    )


def nats_sink(url: str, *, name: str = "modelport", timeout: float = 5.0) -> NatsSink:
    """The sink a ``nats://`` or ``tls://`` URL names; no I/O until `open`.

    `name` names the connection (shown in the server's monitoring).
    """
    return NatsSink(parse_nats_url(url), name=name, timeout=timeout)


__all__ = [
    "KEY_HEADER",
    "NatsSink",
    "NatsSource",
    "nats_headers",
    "nats_sink",
    "nats_source",
    "parse_nats_url",
]
