"""Kafka topics as a broker: a consumer-group source and an acknowledged producer sink (aiokafka).

A record is a message: its value, key and headers are Kafka's own. Kafka headers are a list in
which a name may repeat; `Message.headers` keeps the last value of each name (a null value
becomes b""). The URL (`kafka://HOST:PORT/TOPIC?...`) is described in `kafka_address`, the
client settings and the error mapping in `kafka_connection`, the topic checks in
`kafka_cluster`.

The source is one member of a consumer group (`group.id` = the group, `client.id` = the
consumer's name), committing offsets itself (no auto-commit). A group that has committed
nothing starts at each partition's first offset (`auto.offset.reset=earliest`), so that nothing
produced before the first start is skipped, as with the other brokers. Its session timeout is
the reclaim delay (within what the brokers accept, where they tell; at least 1 s), with a
heartbeat every third of it: a member that dies loses its partitions to the others after
about that long; one that closes leaves the group at once. Kafka keeps no delivery count:
`Message.attempt` is always 1.

`ack` commits, per partition, the offset after the last of the messages. Only partitions this
member still owns, and only messages it received since it got them, are committed: after a
rebalance (aiokafka's protocol takes every partition away and hands them out again) messages
received before it are not committed, and their partitions' owner reads them again from the
last commit, at least once. A commit the group refuses because it is rebalancing is logged
and dropped, for the same reason.

The sink produces with `acks=all`; records with the same key go to the same partition, in
order (aiokafka sends one batch at a time per partition, so a retry cannot reorder them).
Idempotent production is left off: the test broker refuses it, and at-least-once delivery
repeats records anyway when a send is retried.

Every call is bounded by `timeout` seconds (a receive: plus its wait). A receive that finds
nothing looks the topic up, so that a cluster that is down shows as BrokerUnavailable instead
of an endless run of empty polls; the clients reconnect by themselves once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import aiokafka.errors as kx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import Message, Origin, Record
from modelport.jobs.streams.kafka_address import KafkaAddress, parse_kafka_url
from modelport.jobs.streams.kafka_cluster import (
    close_admin,
    ensure_topic,
    open_admin,
    session_bounds,
    topic_facts,
)
from modelport.jobs.streams.kafka_connection import DEFAULT_TIMEOUT, KafkaConnection, milliseconds

log = logging.getLogger(__name__)

SESSION_FLOOR_MS: Final = 1_000
SESSION_CEILING_MS: Final = 1_800_000
"""Kafka's default group.max.session.timeout.ms (30 min), the longest session asked for."""
LINGER_MS: Final = 0
"""How long the producer waits for more records to fill a batch: not at all. A send appends all
its records before the producer's sender runs, so they share batches anyway, and it awaits
them all: 5 ms of lingering cut its rate to a fifth (benchmarks/kafka_topics.py)."""
MAX_BATCH_BYTES: Final = 256 * 1024
MAX_REQUEST_BYTES: Final = 1024 * 1024
"""The largest request the producer sends (Kafka's max.request.size, its default): a larger
record is refused before it is sent."""
_PARTITIONER: Final = DefaultPartitioner()
"""Where a keyed record goes, as the producer itself would put it."""
_REBALANCED: Final = (
    kx.CommitFailedError,
    kx.IllegalGenerationError,
    kx.RebalanceInProgressError,
    kx.UnknownMemberIdError,
    # aiokafka's own check that the partitions are still assigned, for a commit begun while
    # they were and raced by a rebalance.
    kx.IllegalStateError,
)


def kafka_source(
    url: str,
    *,
    group: str,
    consumer: str,
    reclaim_after: float,
    timeout: float = DEFAULT_TIMEOUT,
    option: str = "--source",
) -> KafkaSource:
    """A member `consumer` of group `group` on the topic `url` names; no I/O until `open()`.

    `reclaim_after` (seconds) becomes the member's session timeout: how long a member that
    stopped answering keeps its partitions. `option` names the flag the URL came from in
    messages. InvalidInput for a malformed URL or an empty name.
    """
    if not group or not consumer:
        raise InvalidInput(f"{option}: a Kafka consumer group and consumer name must not be empty")
    if reclaim_after <= 0:
        raise InvalidInput(f"{option}: the reclaim delay must be positive, not {reclaim_after}")
    address = parse_kafka_url(url, option)
    return KafkaSource(address, group, consumer, reclaim_after, timeout, option)


def kafka_sink(url: str, *, timeout: float = DEFAULT_TIMEOUT, option: str = "--sink") -> KafkaSink:
    """A producer to the topic `url` names; no I/O until `open()`.

    `option` (`--sink`, `--dead-letter`) names the flag in messages. InvalidInput for a
    malformed URL.
    """
    return KafkaSink(parse_kafka_url(url, option), timeout, option)


class _Delivery(NamedTuple):
    """A message's token: where it was read, and during which ownership of its partition."""

    partition: TopicPartition
    offset: int
    ownership: int


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """The partitions this member owns now, each numbered by when it was (last) assigned."""

    def __init__(self, describe: str) -> None:
        self.owned: dict[TopicPartition, int] = {}
        self._numbers = itertools.count(1)
        self._describe = describe

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for partition in revoked:
            self.owned.pop(partition, None)
        if revoked:
            log.info("%s gave up partitions %s", self._describe, _numbers(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for partition in assigned:
            self.owned[partition] = next(self._numbers)
        log.info("%s owns partitions %s", self._describe, _numbers(assigned))


class KafkaSource:
    """One member of a Kafka consumer group: messages in order per partition, offsets committed."""

    def __init__(
        self,
        address: KafkaAddress,
        group: str,
        consumer: str,
        reclaim_after: float,
        timeout: float,
        option: str,
    ) -> None:
        self.address = address
        self.option = option
        self.group = group
        self.consumer = consumer
        self.reclaim_after = reclaim_after
        self._kafka = KafkaConnection(address, timeout, option)
        self._ownership = _Ownership(f"consumer {consumer!r} of group {group!r}")
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self.session_ms = _session(reclaim_after, None)
        """The session timeout asked for (ms); known for sure once open."""

    def __repr__(self) -> str:
        return f"KafkaSource({self.address.redacted!r}, group={self.group!r})"

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions of the topic this member owns now (empty while the group rebalances)."""
        return frozenset(p.partition for p in self._ownership.owned)

    async def open(self) -> None:
        """Check the topic (creating it with partitions=), then join the group.

        Returns once the group has given this member its partitions (`assignment`; none when
        the group has more members than the topic partitions), within the timeout plus twice
        the session. Call `close()` even when this raised: it releases the clients.
        """
        kafka = self._kafka
        settings = kafka.settings(self.consumer)
        await kafka.reach()
        self._admin = admin = await open_admin(kafka, self.consumer)
        facts = await ensure_topic(admin, kafka)
        bounds = await session_bounds(admin, kafka, facts.leader)
        self.session_ms = _session(self.reclaim_after, bounds)
        consumer = AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_ms,
            heartbeat_interval_ms=max(1, self.session_ms // 3),
            # A JoinGroup waits up to the session (the rebalance timeout) for the other
            # members: a request must be allowed longer than that.
            request_timeout_ms=max(settings["request_timeout_ms"], self.session_ms + 5_000),
            **{k: v for k, v in settings.items() if k != "request_timeout_ms"},
        )
        self._consumer = consumer
        consumer.subscribe([self.address.topic], listener=self._ownership)
        # start() returns once the group has assigned this member its partitions. The
        # members already there take up to a session to rejoin, and a member that left
        # without a word holds up the round until its session runs out.
        async with kafka.bounded("joining the consumer group", extra=2 * self.session_ms / 1000):
            await consumer.start()

    async def receive(self, limit: int, wait: float) -> Sequence[Message]:
        """Up to `limit` messages, waiting up to `wait` seconds for the first; each partition's
        in offset order."""
        if limit < 1:
            return []
        consumer = self._opened()
        wait = max(wait, 0.0)
        async with self._kafka.bounded(f"reading topic {self.address.topic!r}", extra=wait):
            batches = await consumer.getmany(timeout_ms=round(wait * 1000), max_records=limit)
        owned = self._ownership.owned
        messages = [
            self._message(partition, record, owned.get(partition, 0))
            for partition, records in batches.items()
            for record in records
        ]
        if not messages:
            await self._check_cluster()
        return messages

    def _message(self, partition: TopicPartition, record: Any, ownership: int) -> Message:
        headers = {name: value or b"" for name, value in record.headers or ()}
        return Message(
            value=record.value or b"",
            key=record.key,
            headers=headers,
            origin=Origin(partition.topic, partition.partition, str(record.offset)),
            attempt=1,
            token=_Delivery(partition, record.offset, ownership),
            timestamp=None if record.timestamp is None else record.timestamp / 1000,
        )

    async def _check_cluster(self) -> None:
        """BrokerUnavailable (or InvalidInput) unless the cluster answers for the topic."""
        admin = self._admin
        if admin is None:
            return
        async with self._kafka.bounded(f"looking up topic {self.address.topic!r}"):
            answer = await admin.describe_topics([self.address.topic])
        topic_facts(answer, self._kafka)

    async def ack(self, messages: Sequence[Message]) -> None:
        """Commit, per partition, the offset after the last of `messages` this member may commit.

        Messages of partitions taken away since they were received are left uncommitted (their
        new owner reads them again); a commit refused because the group is rebalancing too.
        """
        offsets: dict[TopicPartition, int] = {}
        stale = 0
        owned = self._ownership.owned
        for message in messages:
            delivery: _Delivery = message.token
            if owned.get(delivery.partition) != delivery.ownership:
                stale += 1
                continue
            offsets[delivery.partition] = max(
                offsets.get(delivery.partition, 0), delivery.offset + 1
            )
        if stale:
            log.info(
                "%d messages of %s were received before the group last rebalanced: not "
                "committed, their partitions' owner reads them again",
                stale,
                self,
            )
        if not offsets:
            return
        consumer = self._opened()
        async with self._kafka.bounded(f"committing offsets of topic {self.address.topic!r}"):
            try:
                await consumer.commit(offsets)
            except _REBALANCED as error:
                log.info(
                    "%s could not commit offsets of partitions %s (%s): the group is "
                    "rebalancing, and their owner reads those messages again",
                    self,
                    _numbers(offsets),
                    type(error).__name__,
                )

    def _opened(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise InvalidInput(f"open the Kafka source {self} before using it")
        return self._consumer

    async def lag(self) -> int | None:
        """Messages of this member's partitions past its position (end offset minus position,
        as the broker last reported the end); None before it owns any or when unknown."""
        consumer = self._consumer
        if consumer is None:
            return None
        total = 0
        try:
            for partition in consumer.assignment():
                end = consumer.highwater(partition)
                if end is None:
                    return None
                total += max(end - await consumer.position(partition), 0)
        except Exception:  # a partition taken away meanwhile, the broker away: no figure now
            return None
        return total

    async def close(self) -> None:
        """Leave the group (its partitions go to the others at once) and disconnect.

        Within the timeout, and without raising when the cluster is down: the clients are
        released all the same.
        """
        consumer, self._consumer = self._consumer, None
        admin, self._admin = self._admin, None
        self._ownership.owned.clear()
        try:
            if consumer is not None:
                await self._stop(consumer)
        finally:
            if admin is not None:
                await close_admin(admin)

    async def _stop(self, consumer: AIOKafkaConsumer) -> None:
        timeout = self._kafka.timeout
        try:
            async with asyncio.timeout(timeout):
                await consumer.stop()
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiokafka's fetcher, stopping, re-raises the cancellation of a fetch that was
            # backing off after a failure (the cluster is down), and stop() ends there.
            log.info("%s stopped while its cluster does not answer", self)
        except (TimeoutError, kx.KafkaError, OSError) as error:
            log.info("%s did not stop cleanly: %s", self, type(error).__name__)
        # What stop() did not get to: the client's connections and its metadata task.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await consumer._client.close()


async def _send_batches(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[Record]
) -> list[asyncio.Future[Any]]:
    """Queue `records` for `partition` in as few batches as they fit; a future for each batch.

    A batch built here costs half the CPU of sending the records one by one, where the
    producer makes a future and finds a partition for each record.
    """
    futures = []
    batch = producer.create_batch()
    for record in records:
        key, value, headers = record.key, record.value, list(record.headers.items())
        while (
            added := batch.append(timestamp=None, key=key, value=value, headers=headers)
        ) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
        if added.size > MAX_REQUEST_BYTES:  # what the producer refuses to send
            raise InvalidInput(
                f"a record of {added.size} bytes is larger than the {MAX_REQUEST_BYTES} bytes a "
                "Kafka producer sends in one request: make it smaller"
            )
    if batch.record_count():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


class KafkaSink:
    """Produces to one topic with acks=all: value, key and headers as the record's own."""

    def __init__(self, address: KafkaAddress, timeout: float, option: str) -> None:
        self.address = address
        self.option = option
        self._kafka = KafkaConnection(address, timeout, option)
        self._producer: AIOKafkaProducer | None = None

    def __repr__(self) -> str:
        return f"KafkaSink({self.address.redacted!r})"

    async def open(self) -> None:
        """Check the topic (creating it with partitions=) and connect the producer.

        Call `close()` even when this raised: it releases the client.
        """
        kafka = self._kafka
        settings = kafka.settings("modelport")
        await kafka.reach()
        admin = await open_admin(kafka, "modelport")
        try:
            await ensure_topic(admin, kafka)
        finally:
            await close_admin(admin)
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=False,
            linger_ms=LINGER_MS,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            **settings,
        )
        self._producer = producer
        async with kafka.bounded("connecting the producer"):
            await producer.start()

    async def send(self, records: Sequence[Record]) -> None:
        """Produce every record; returns once the cluster acknowledged all of them (acks=all)."""
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise InvalidInput(f"open the Kafka sink {self} before sending")
        topic = self.address.topic
        doing = f"producing to topic {topic!r}"
        pending: list[asyncio.Future[Any]] = []
        try:
            async with self._kafka.bounded(doing):
                for partition, group in (await self._partitioned(producer, records)).items():
                    pending += await _send_batches(producer, topic, partition, group)
                outcomes = await asyncio.gather(*pending, return_exceptions=True)
        except BaseException:
            # Nobody awaits them any more (the records may still be delivered: at least once).
            for future in pending:
                future.cancel()
            raise
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise self._kafka.translated(outcome, doing) from None

    async def _partitioned(
        self, producer: AIOKafkaProducer, records: Sequence[Record]
    ) -> dict[int, list[Record]]:
        """`records` by the partition each goes to: a keyed record's as the producer's default
        partitioner (murmur2 of the key, as Java clients) puts it; records without a key all
        to one partition, picked at random for each send (as Kafka's sticky partitioner does)."""
        partitions = sorted(await producer.partitions_for(self.address.topic))
        loose = random.choice(partitions)  # noqa: S311 (spreading load, not secrecy)
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            key = record.key
            partition = loose if key is None else _PARTITIONER(key, partitions, partitions)
            by_partition.setdefault(partition, []).append(record)
        return by_partition

    async def close(self) -> None:
        """Flush what is buffered and disconnect, within the timeout and without raising.

        Records still buffered then belong to sends that already failed (and that their
        caller repeats): they are given up.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        timeout = self._kafka.timeout
        try:
            async with asyncio.timeout(timeout):
                await producer.stop()
            return
        except (TimeoutError, kx.KafkaError, OSError) as error:
            log.info("%s did not flush before closing: %s", self, type(error).__name__)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await producer.client.close()


def _session(reclaim_after: float, bounds: tuple[int, int] | None) -> int:
    """The session timeout (ms) for a reclaim delay, within the broker's `bounds` if known."""
    session = min(max(milliseconds(reclaim_after), SESSION_FLOOR_MS), SESSION_CEILING_MS)
    if bounds is not None:
        low, high = bounds
        session = min(max(session, low), high)
    return session


def _numbers(partitions: Any) -> list[int]:
    return sorted(p.partition for p in partitions)
