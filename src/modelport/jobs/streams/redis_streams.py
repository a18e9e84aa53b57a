"""Redis Streams as a broker: a consumer-group source and an XADD sink (redis-py's asyncio client).

An entry is a message: its `value` field the payload, its `key` field the key (optional),
every other field a header. The sink writes records the same way, so one consumer's outputs
are the next one's inputs.

The source is one consumer of a group (created, with the stream, on open; from the stream's
first entry, so that nothing produced before the first start is skipped). `receive` returns,
in this order: this consumer's own entries delivered before and never acknowledged (after a
restart under the same name, or a lost connection), entries that other consumers left pending
for longer than `reclaim_after` seconds (XAUTOCLAIM, looked for at most every
`reclaim_after / 2` seconds), then new entries. `attempt` is Redis's delivery count. Entries
deleted from the stream while pending are acknowledged away and never returned. `ack` is
XACK only: the entries stay in the stream for other groups (trim it with a sink's `maxlen=`).

Every call is bounded by `timeout` seconds (plus the wait of a blocking read). Connection
errors, timeouts and a server still loading its data are `BrokerUnavailable`; refused
credentials, a key that is not a stream or TLS that does not verify are `InvalidInput`
(`redis_connection` makes the client and translates its errors; `redis_address` reads URLs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from redis import exceptions as rx
from redis.typing import EncodableT, FieldT

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Origin, Record
from modelport.jobs.streams.redis_address import RedisAddress, parse_redis_url
from modelport.jobs.streams.redis_connection import DEFAULT_TIMEOUT, GroupGone, RedisConnection

RESERVED_FIELDS: Final = frozenset({"value", "key"})
"""Entry fields that carry the message itself; no header may be named so."""
_VALUE: Final = b"value"
_KEY: Final = b"key"
_RECLAIM_CALLS: Final = 8
"""XAUTOCLAIM calls one receive makes at most; each scans up to 10 x COUNT pending entries."""


def redis_source(
    url: str,
    *,
    group: str,
    consumer: str,
    reclaim_after: float,
    timeout: float = DEFAULT_TIMEOUT,
    option: str = "--source",
) -> RedisSource:
    """A consumer `consumer` of group `group` on the stream `url` names; no I/O until `open()`.

    `reclaim_after` is how long (seconds) an entry may stay pending at another consumer before
    this one takes it over: longer than the slowest batch takes. `option` names the flag the
    URL came from in messages. InvalidInput for a malformed URL.
    """
    if not group or not consumer:
        raise InvalidInput(f"{option}: a Redis consumer group and consumer name must not be empty")
    if reclaim_after <= 0:
        raise InvalidInput(f"{option}: the reclaim delay must be positive, not {reclaim_after}")
    address = parse_redis_url(url, option, sink=False)
    return RedisSource(address, group, consumer, reclaim_after, timeout, option)


def redis_sink(url: str, *, timeout: float = DEFAULT_TIMEOUT, option: str = "--sink") -> RedisSink:
    """A producer to the stream `url` names (XADD, trimmed when it says `maxlen=`); no I/O yet.

    `option` (`--sink`, `--dead-letter`) names the flag in messages. InvalidInput for a
    malformed URL.
    """
    return RedisSink(parse_redis_url(url, option, sink=True), timeout, option)


class RedisSource:
    """One consumer of a Redis consumer group: pending entries first, then reclaimed, then new."""

    def __init__(
        self,
        address: RedisAddress,
        group: str,
        consumer: str,
        reclaim_after: float,
        timeout: float,
        option: str,
    ) -> None:
        self.address = address
        self.option = option
        self._redis = RedisConnection(address, timeout, option)
        self.group = group
        self.consumer = consumer
        self.reclaim_after = reclaim_after
        self._backlog: bytes | None = b"0"
        """Where the re-read of this consumer's own pending entries goes on; None when done."""
        self._reclaim_cursor = b"0-0"
        self._next_reclaim = 0.0
        self._in_flight: set[bytes] = set()
        """Entry ids returned and not yet acknowledged: never returned twice by this source."""

    def __repr__(self) -> str:
        return f"RedisSource({self.address.redacted!r}, group={self.group!r})"

    async def open(self) -> None:
        """Connect and create the group (and the stream) unless they exist.

        Call `close()` even when this raised: it releases the client.
        """
        self._redis.connect()
        await self._create_group()
        self._backlog = b"0"
        self._next_reclaim = asyncio.get_running_loop().time()

    async def _create_group(self) -> None:
        async with self._redis.bounded("XGROUP CREATE"):
            try:
                await self._redis.client.xgroup_create(
                    self.address.stream, self.group, "0", mkstream=True
                )
            except rx.ResponseError as error:
                if not str(error).startswith("BUSYGROUP"):
                    raise

    async def receive(self, limit: int, wait: float) -> Sequence[Message]:
        """Up to `limit` entries: own pending, then reclaimed, then new (waiting up to `wait` s)."""
        if limit < 1:
            return []
        try:
            return await self._receive(limit, wait)
        except BrokerUnavailable:
            # Entries in an answer that was lost are pending at this consumer by now.
            self._backlog = b"0"
            raise
        except GroupGone:
            # The key was deleted, or the server restarted without its data: make the group
            # again and read on; what the server lost cannot be delivered anyway.
            await self._create_group()
            self._backlog = b"0"
            return await self._receive(limit, wait)

    async def _receive(self, limit: int, wait: float) -> list[Message]:
        if self._backlog is not None and (messages := await self._read_backlog(limit)):
            return messages
        if asyncio.get_running_loop().time() >= self._next_reclaim and (
            messages := await self._reclaim(limit)
        ):
            return messages
        return await self._read_new(limit, wait)

    async def _read_backlog(self, limit: int) -> list[Message]:
        while self._backlog is not None:
            async with self._redis.bounded("XREADGROUP"):
                answer = await self._redis.client.xreadgroup(
                    self.group, self.consumer, {self.address.stream: self._backlog}, count=limit
                )
            entries = _entries(answer)
            if not entries:
                self._backlog = None
                break
            self._backlog = entries[-1][0]
            # XREADGROUP returns an entry deleted from the stream as its id without fields.
            await self._ack_ids([i for i, fields in entries if not fields])
            live = [(i, f) for i, f in entries if f and i not in self._in_flight]
            if live:
                return await self._delivered_again(live)
        return []

    async def _reclaim(self, limit: int) -> list[Message]:
        idle_ms = max(1, round(self.reclaim_after * 1000))
        for _ in range(_RECLAIM_CALLS):
            async with self._redis.bounded("XAUTOCLAIM"):
                answer = await self._redis.client.xautoclaim(
                    self.address.stream,
                    self.group,
                    self.consumer,
                    idle_ms,
                    start_id=self._reclaim_cursor,
                    count=limit,
                )
            cursor, claimed = answer[0], answer[1]
            # Redis drops entries deleted from the stream from the pending list itself and
            # names them third (7.0 on); acknowledging them again is harmless.
            await self._ack_ids(list(answer[2]) if len(answer) > 2 else [])
            scanned = cursor in (b"0-0", "0-0")
            self._reclaim_cursor = b"0-0" if scanned else cursor
            if scanned:
                self._next_reclaim = asyncio.get_running_loop().time() + self.reclaim_after / 2
            live = [(i, f) for i, f in claimed if i is not None and f and i not in self._in_flight]
            if live:
                return await self._delivered_again(live)
            if scanned:
                break
        return []

    async def _read_new(self, limit: int, wait: float) -> list[Message]:
        block = max(1, round(wait * 1000)) if wait > 0 else None
        async with self._redis.bounded("XREADGROUP", extra=max(wait, 0.0)):
            answer = await self._redis.client.xreadgroup(
                self.group, self.consumer, {self.address.stream: ">"}, count=limit, block=block
            )
        return [self._message(i, f, 1) for i, f in _entries(answer)]

    async def _delivered_again(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[Message]:
        """Messages for entries delivered before, with Redis's delivery counts as attempts."""
        async with self._redis.bounded("XPENDING"):
            pipe = self._redis.client.pipeline(transaction=False)
            for entry_id, _ in entries:
                pipe.xpending_range(self.address.stream, self.group, entry_id, entry_id, 1)
            counts = await pipe.execute()
        attempts = [int(c[0]["times_delivered"]) if c else 2 for c in counts]
        return [self._message(i, f, n) for (i, f), n in zip(entries, attempts, strict=True)]

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes], attempt: int) -> Message:
        self._in_flight.add(entry_id)
        value = fields.pop(_VALUE, b"")
        key = fields.pop(_KEY, None)
        headers = {name.decode("utf-8", "surrogateescape"): v for name, v in fields.items()}
        position = entry_id.decode("ascii")
        origin = Origin(self.address.stream, None, position)
        # An entry id starts with the milliseconds at which Redis added the entry.
        stored = int(position.partition("-")[0]) / 1000
        return Message(value, key, headers, origin, attempt, token=entry_id, timestamp=stored)

    async def ack(self, messages: Sequence[Message]) -> None:
        """XACK the messages' entries in one call; they stay in the stream for other groups."""
        await self._ack_ids([m.token for m in messages])
        self._in_flight.difference_update(m.token for m in messages)

    async def _ack_ids(self, ids: list[bytes]) -> None:
        if ids:
            async with self._redis.bounded("XACK"):
                await self._redis.client.xack(self.address.stream, self.group, *ids)

    async def lag(self) -> int | None:
        """The group's lag as XINFO GROUPS reports it (entries not yet delivered to it);
        None when Redis cannot tell (entries deleted since) or is away."""
        try:
            async with self._redis.bounded("XINFO"):
                groups = await self._redis.client.xinfo_groups(self.address.stream)
        except ModelportError:  # away, or the stream gone: no figure this time
            return None
        for group in groups:
            name = group.get("name")
            name = name.decode() if isinstance(name, bytes) else name
            if name == self.group:
                lag = group.get("lag")
                return None if lag is None else int(lag)
        return None

    async def close(self) -> None:
        """Disconnect; unacknowledged entries stay pending at this consumer's name."""
        self._in_flight.clear()
        await self._redis.disconnect()


class RedisSink:
    """XADD to one stream: a record's value, key and headers as the entry's fields."""

    def __init__(self, address: RedisAddress, timeout: float, option: str) -> None:
        self.address = address
        self.option = option
        self._redis = RedisConnection(address, timeout, option)

    def __repr__(self) -> str:
        return f"RedisSink({self.address.redacted!r})"

    async def open(self) -> None:
        """Connect and check the key is a stream, or not there yet; `close()` even if it raised."""
        self._redis.connect()
        async with self._redis.bounded("TYPE"):
            kind = await self._redis.client.type(self.address.stream)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind not in ("stream", "none"):
            raise InvalidInput(
                f"the Redis key {self.address.stream!r} of {self.option} {self.address.redacted} "
                f"holds a {kind}, not a stream: name another with stream=, or delete it"
            )

    async def send(self, records: Sequence[Record]) -> None:
        """XADD every record in one pipeline; returns once Redis answered all of them."""
        if not records:
            return
        entries = [self._fields(r) for r in records]
        stream, maxlen = self.address.stream, self.address.maxlen
        async with self._redis.bounded("XADD"):
            pipe = self._redis.client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            await pipe.execute()

    def _fields(self, record: Record) -> dict[FieldT, EncodableT]:
        if clash := RESERVED_FIELDS.intersection(record.headers):
            raise InvalidInput(
                f"a record for {self.option} has a header named {sorted(clash)[0]!r}: in a Redis "
                "stream entry that field holds the message itself; rename the header"
            )
        fields: dict[FieldT, EncodableT] = {_VALUE: record.value}
        if record.key is not None:
            fields[_KEY] = record.key
        for name, value in record.headers.items():
            fields[name.encode("utf-8", "surrogateescape")] = value
        return fields

    async def close(self) -> None:
        """Disconnect (every send has already been answered)."""
        await self._redis.disconnect()


def _entries(answer: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The (id, fields) pairs of an XREADGROUP answer on one stream."""
    if not answer:
        return []
    return [(entry_id, fields or {}) for entry_id, fields in answer[0][1]]
