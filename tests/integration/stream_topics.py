"""What the stream tests need of each broker: addresses for the command, a way to produce test
messages, and a way to read back everything a sink holds.

Messages are produced with the broker modules' own sinks (their unit tests check them against
the client libraries); sinks are read back with the client libraries directly, so what the
consumer wrote is checked by an independent reader.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from modelport.jobs.streams.broker import Record, Sink


@dataclass(frozen=True)
class Delivered:
    """One message read back from a sink."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class Topics(Protocol):
    """One broker as the stream tests use it; `name`s are made unique by the caller."""

    broker: str

    def source(self, name: str) -> str:
        """The `--source` URL of topic/stream `name`."""

    def sink(self, name: str) -> str:
        """The `--sink` (or `--dead-letter`) URL of topic/stream `name`."""

    def produce(self, name: str, records: Sequence[Record]) -> None:
        """Append `records` to `name`, in order, acknowledged by the broker."""

    def count(self, name: str) -> int:
        """How many messages `name` holds."""

    def read(self, name: str) -> list[Delivered]:
        """Every message `name` holds, in order."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _send(sink: Sink, records: Sequence[Record], chunk: int = 500) -> None:
    await sink.open()
    try:
        for start in range(0, len(records), chunk):
            await sink.send(records[start : start + chunk])
    finally:
        await sink.close()


class RedisTopics:
    """Redis Streams on `base` (redis://HOST:PORT/DB)."""

    broker = "redis"

    def __init__(self, base: str) -> None:
        import redis

        self.base = base.rstrip("/")
        self._client = redis.Redis.from_url(self.base)

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
        for _, fields in self._client.xrange(name):
            fields = {k.decode(): v for k, v in fields.items()}
            value, key = fields.pop("value"), fields.pop("key", None)
            out.append(Delivered(key, value, fields))
        return out

    def close(self) -> None:
        self._client.close()


class NatsTopics:
    """NATS JetStream on `base` (nats://HOST:PORT): topic `name` is stream `name` with the one
    subject `name.in`, created on first use."""

    broker = "nats"

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

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

        connection = await nats.connect(self.base)
        try:
            js = connection.jetstream()
            total = int((await js.stream_info(name)).state.messages)
            subscription = await js.pull_subscribe(f"{name}.in", stream=name)
            out: list[Delivered] = []
            while len(out) < total:
                try:
                    batch = await subscription.fetch(min(1000, total - len(out)), timeout=5)
                except nats.errors.TimeoutError:
                    break
                for msg in batch:
                    headers = {k: v.encode() for k, v in (msg.headers or {}).items()}
                    key = headers.pop("key", None)
                    out.append(Delivered(key, msg.data, headers))
                    await msg.ack()
            await subscription.unsubscribe()
            return out
        finally:
            await connection.close()

    def close(self) -> None:
        pass
