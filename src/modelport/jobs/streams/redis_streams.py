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
credentials, a key that is not a stream or TLS that does not verify are `InvalidInput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT, FieldT

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Origin, Record
from modelport.jobs.streams.redis_address import RedisAddress, parse_redis_url

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds one command may take (a blocking read: beyond its wait) before BrokerUnavailable."""
RESERVED_FIELDS: Final = frozenset({"value", "key"})
"""Entry fields that carry the message itself; no header may be named so."""
_VALUE: Final = b"value"
_KEY: Final = b"key"
_RECLAIM_CALLS: Final = 8
"""XAUTOCLAIM calls one receive makes at most; each scans up to 10 x COUNT pending entries."""
# Errors the server answers with that a later try may not meet: a replica promoted, memory
# freed by trimming, a server starting up (LOADING is a BusyLoadingError, a ConnectionError).
_TRANSIENT_REPLIES: Final = (rx.ReadOnlyError, rx.OutOfMemoryError, rx.TryAgainError)
_TRANSIENT_REPLY_CODES: Final = ("MASTERDOWN", "CLUSTERDOWN")


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


class _GroupGone(ModelportError):
    """The consumer group no longer exists; the source makes it again."""


class _Connected:
    """A client for one address, and the translation of its errors into modelport's."""

    def __init__(self, address: RedisAddress, timeout: float, option: str) -> None:
        self.address = address
        self.timeout = timeout
        self.option = option
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address.redacted!r})"

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open: call open() first")
        return self._client

    def connect(self) -> None:
        """Make the client (it connects on its first command); InvalidInput for bad TLS files."""
        if self._client is not None:
            return
        a = self.address
        tls: dict[str, Any] = {}
        if a.tls:
            _check_tls_files(a, self.option)
            tls = {
                "ssl": True,
                "ssl_ca_certs": a.ca,
                "ssl_certfile": a.cert,
                "ssl_keyfile": a.key,
                "ssl_cert_reqs": "required" if a.verify else "none",
                "ssl_check_hostname": a.verify,
            }
        self._client = aioredis.Redis(
            host=a.host,
            port=a.port,
            db=a.db,
            username=a.username,
            password=a.password,
            # Each call is bounded by asyncio.timeout instead (a blocking read waits longer).
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
            # One quick reconnect heals a pooled connection the server closed (a restart);
            # beyond that the caller decides how to back off.
            retry=Retry(NoBackoff(), 1),
            protocol=2,
            **tls,
        )

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(rx.RedisError, OSError):
                await client.aclose()

    @contextlib.contextmanager
    def errors(self, command: str) -> Iterator[None]:
        """Raise what `command` failed with as BrokerUnavailable, InvalidInput or ModelportError."""
        try:
            yield
        except ModelportError:
            raise
        except (rx.RedisError, OSError) as error:
            raise self.translated(error, command) from None

    def translated(self, error: BaseException, command: str) -> ModelportError:
        """The modelport error for `error`, raised by `command`; its text free of the password."""
        a, where = self.address, f"{self.option} {self.address.redacted}"
        detail = self._scrubbed(str(error) or type(error).__name__)
        if isinstance(error, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
            return InvalidInput(
                f"the Redis server refused the credentials in {where}: check the user name and "
                "password (redis://USER:PASSWORD@HOST:PORT/DB)"
            )
        if isinstance(error, rx.NoPermissionError | rx.AuthorizationError):
            return InvalidInput(
                f"the Redis user of {where} may not run {command} on {a.stream!r}: grant it in "
                f"the server's ACL ({detail})"
            )
        if (tls := _tls_error(error)) is not None:
            return InvalidInput(
                f"the TLS handshake with the Redis server of {where} failed ({tls}): check ca=, "
                "cert= and key=, and that the port serves TLS"
            )
        if isinstance(error, rx.ConnectionError | rx.TimeoutError | OSError | _TRANSIENT_REPLIES):
            return BrokerUnavailable(
                f"the Redis server at {a.endpoint} ({self.option}) did not answer {command}: "
                f"{detail}"
            )
        if isinstance(error, rx.ResponseError) and detail.startswith(_TRANSIENT_REPLY_CODES):
            return BrokerUnavailable(f"the Redis server at {a.endpoint} is not ready: {detail}")
        if isinstance(error, rx.ResponseError) and detail.startswith("NOGROUP"):
            return _GroupGone(
                f"the consumer group {getattr(self, 'group', '?')!r} of {where} is gone (the "
                "stream was deleted, or the server lost its data)"
            )
        if isinstance(error, rx.ResponseError) and detail.startswith("WRONGTYPE"):
            return InvalidInput(
                f"the Redis key {a.stream!r} of {where} holds no stream: name another with "
                "stream=, or delete the key"
            )
        return ModelportError(f"the Redis server of {where} refused {command}: {detail}")

    def _scrubbed(self, text: str) -> str:
        password = self.address.password
        return text.replace(password, "***") if password else text

    @contextlib.asynccontextmanager
    async def bounded(self, command: str, extra: float = 0.0) -> AsyncIterator[None]:
        """Run the body as `command`, within `timeout + extra` seconds, errors translated."""
        with self.errors(command):
            try:
                async with asyncio.timeout(self.timeout + extra):
                    yield
            except TimeoutError:
                raise BrokerUnavailable(
                    f"the Redis server at {self.address.endpoint} ({self.option}) did not answer "
                    f"{command} within {self.timeout + extra:g} s"
                ) from None


class RedisSource(_Connected):
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
        super().__init__(address, timeout, option)
        self.group = group
        self.consumer = consumer
        self.reclaim_after = reclaim_after
        self._backlog: bytes | None = b"0"
        """Where the re-read of this consumer's own pending entries goes on; None when done."""
        self._reclaim_cursor = b"0-0"
        self._next_reclaim = 0.0
        self._in_flight: set[bytes] = set()
        """Entry ids returned and not yet acknowledged: never returned twice by this source."""

    async def open(self) -> None:
        """Connect and create the group (and the stream) unless they exist."""
        self.connect()
        await self._create_group()
        self._backlog = b"0"
        self._next_reclaim = asyncio.get_running_loop().time()

    async def _create_group(self) -> None:
        async with self.bounded("XGROUP CREATE"):
            try:
                await self.client.xgroup_create(self.address.stream, self.group, "0", mkstream=True)
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
        except _GroupGone:
            pass
        # The group is gone (the key deleted, a server restarted without its data): make it
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
            async with self.bounded("XREADGROUP"):
                answer = await self.client.xreadgroup(
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
            async with self.bounded("XAUTOCLAIM"):
                answer = await self.client.xautoclaim(
                    self.address.stream,
                    self.group,
                    self.consumer,
                    idle_ms,
                    start_id=self._reclaim_cursor,
                    count=limit,
                )
            self._reclaim_cursor = answer[0]
            # Redis removes the entries deleted from the stream from the pending list itself
            # and names them third; acknowledging them again is harmless and version-proof.
            await self._ack_ids(list(answer[2]) if len(answer) > 2 else [])
            claimed = [(i, f) for i, f in answer[1] if i is not None and f]
            if self._reclaim_cursor in (b"0-0", "0-0"):
                self._reclaim_cursor = b"0-0"
                loop_time = asyncio.get_running_loop().time()
                self._next_reclaim = loop_time + self.reclaim_after / 2
            live = [(i, f) for i, f in claimed if i not in self._in_flight]
            if live:
                return await self._delivered_again(live)
            if self._reclaim_cursor == b"0-0":
                break
        return []

    async def _read_new(self, limit: int, wait: float) -> list[Message]:
        block = max(1, round(wait * 1000)) if wait > 0 else None
        async with self.bounded("XREADGROUP", extra=max(wait, 0.0)):
            answer = await self.client.xreadgroup(
                self.group, self.consumer, {self.address.stream: ">"}, count=limit, block=block
            )
        return [self._message(i, f, 1) for i, f in _entries(answer)]

    async def _delivered_again(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[Message]:
        """Messages for entries delivered before, with Redis's delivery counts as attempts."""
        async with self.bounded("XPENDING"):
            pipe = self.client.pipeline(transaction=False)
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
        return Message(value, key, headers, origin, attempt, token=entry_id)

    async def ack(self, messages: Sequence[Message]) -> None:
        """XACK the messages' entries in one call; they stay in the stream for other groups."""
        await self._ack_ids([m.token for m in messages])
        self._in_flight.difference_update(m.token for m in messages)

    async def _ack_ids(self, ids: list[bytes]) -> None:
        if ids:
            async with self.bounded("XACK"):
                await self.client.xack(self.address.stream, self.group, *ids)

    async def close(self) -> None:
        """Disconnect; unacknowledged entries stay pending at this consumer's name."""
        self._in_flight.clear()
        await self.disconnect()


class RedisSink(_Connected):
    """XADD to one stream: a record's value, key and headers as the entry's fields."""

    async def open(self) -> None:
        """Connect and check the key is a stream, or not there yet."""
        self.connect()
        async with self.bounded("TYPE"):
            kind = await self.client.type(self.address.stream)
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
        async with self.bounded("XADD"):
            pipe = self.client.pipeline(transaction=False)
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
        await self.disconnect()


def _entries(answer: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The (id, fields) pairs of an XREADGROUP answer on one stream."""
    if not answer:
        return []
    return [(entry_id, fields or {}) for entry_id, fields in answer[0][1]]


def _tls_error(error: BaseException) -> str | None:
    """The reason of a TLS failure that no retry cures, found in `error`'s causes; else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
        ):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _check_tls_files(address: RedisAddress, option: str) -> None:
    """InvalidInput when the CA or client certificate files of `address` cannot be loaded."""
    context = ssl.create_default_context()
    try:
        if address.ca is not None:
            context.load_verify_locations(cafile=address.ca)
        if address.cert is not None:
            context.load_cert_chain(address.cert, address.key)
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput(
            f"{option} {address.redacted}: cannot load the TLS files given by ca=, cert= and "
            f"key= ({getattr(error, 'strerror', None) or error})"
        ) from None
