"""The Redis Streams source and sink against real servers.

Tests a shared server can run use the machine's Redis from MODELPORT_TEST_REDIS (each on
streams of its own, deleted afterwards); tests that restart, kill, pause or lock down the
server start a private one (redis_broker.RedisServer).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Record
from modelport.jobs.streams.redis_address import parse_redis_url
from modelport.jobs.streams.redis_streams import RedisSource, redis_sink, redis_source

from .redis_broker import RedisServer, TlsFiles, TlsUnsupported, free_port

pytestmark = pytest.mark.anyio

REDIS_ENV = "MODELPORT_TEST_REDIS"
SHARED = os.environ.get(REDIS_ENV, "")
SHARED_SKIP = f"{REDIS_ENV} is unset: set it to a Redis URL, such as redis://127.0.0.1:6379/0"
EVENTUALLY = 15.0
"""Seconds a condition polled for may take (reclaiming waits reclaim_after first)."""
GROUP = "scorers"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- servers and streams ---------------------------------------------------------------------


@pytest.fixture
def stream_url() -> Iterator[Callable[..., str]]:
    """Makes URLs of fresh streams on the shared server; deletes the streams afterwards."""
    if not SHARED:
        pytest.skip(SHARED_SKIP)
    base = SHARED.partition("?")[0]
    names: list[str] = []

    def make(**options: str) -> str:
        names.append(f"test-{uuid.uuid4().hex}")
        query = "".join(f"&{k}={v}" for k, v in options.items())
        return f"{base}?stream={names[-1]}{query}"

    yield make
    if names:
        with redis.Redis.from_url(base) as client:
            client.delete(*names)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as started:
        yield started


def admin(url: str) -> redis.Redis:
    """A synchronous client on the server of `url`, to look behind the source's back."""
    return redis.Redis.from_url(url.partition("?")[0])


def stream_of(url: str) -> str:
    return parse_redis_url(url, "--sink", sink=True).stream


@asynccontextmanager
async def opened(broker: Any) -> AsyncIterator[Any]:
    await broker.open()
    try:
        yield broker
    finally:
        await broker.close()


def source(url: str, consumer: str = "c1", reclaim_after: float = 60.0, **kw: Any) -> RedisSource:
    return redis_source(url, group=GROUP, consumer=consumer, reclaim_after=reclaim_after, **kw)


def records(n: int, start: int = 0) -> list[Record]:
    return [
        Record(f"v{i}".encode(), f"k{i % 3}".encode(), {"trace": f"t{i}".encode()})
        for i in range(start, start + n)
    ]


async def receive_until(src: RedisSource, count: int, limit: int = 100) -> list[Message]:
    """Receive until `count` messages came (polling with a deadline); more fails the caller."""
    got: list[Message] = []
    deadline = time.monotonic() + EVENTUALLY
    while len(got) < count and time.monotonic() < deadline:
        got += await src.receive(limit, 0.1)
    assert len(got) == count, f"received {len(got)} of {count} messages in {EVENTUALLY} s"
    return got


def values(messages: Sequence[Message]) -> list[bytes]:
    return [m.value for m in messages]


# -- URLs ------------------------------------------------------------------------------------


def test_a_url_without_a_stream_says_what_to_add() -> None:
    with pytest.raises(InvalidInput, match=r"add \?stream=NAME"):
        redis_sink("redis://127.0.0.1:6379/0")
    with pytest.raises(InvalidInput, match=r"--source .*add \?stream=NAME"):
        source("redis://u:hunter2@127.0.0.1:6379/0")
    with pytest.raises(InvalidInput) as refused:
        source("redis://u:hunter2@127.0.0.1:6379/0?stream=")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("http://127.0.0.1/0?stream=s", "redis:// or rediss://"),
        ("redis://127.0.0.1:port/0?stream=s", "port must be a number"),
        ("redis://127.0.0.1/zero?stream=s", "database number"),
        ("redis://127.0.0.1/0?stream=s&maxlen=5", "maxlen= applies to a sink only"),
        ("redis://127.0.0.1/0?stream=s&ca=/ca.pem", "use rediss://"),
        ("rediss://127.0.0.1/0?stream=s&key=/k.pem", "key= needs cert="),
        ("rediss://127.0.0.1/0?stream=s&verify=maybe", "verify= must be true or false"),
        ("redis://127.0.0.1/0?stream=s&stream=t", "given 2 times"),
        ("redis://127.0.0.1/0?stream=s&colour=red", "unknown option colour="),
    ],
)
def test_a_wrong_url_is_refused_with_what_to_fix(url: str, fix: str) -> None:
    with pytest.raises(InvalidInput, match=fix) as refused:
        source(url.replace("redis://", "redis://u:hunter2@", 1))
    assert "hunter2" not in str(refused.value)


def test_a_url_is_parsed_and_shown_without_its_password() -> None:
    sink = redis_sink("rediss://ann:p%40ss@[::1]:6380/2?stream=out&maxlen=1000&ca=/c.pem")
    a = sink.address
    assert (a.host, a.port, a.db, a.stream, a.maxlen) == ("::1", 6380, 2, "out", 1000)
    assert (a.username, a.password, a.tls, a.ca, a.verify) == ("ann", "p@ss", True, "/c.pem", True)
    assert a.redacted == "rediss://ann:***@[::1]:6380/2?stream=out&ca=/c.pem&maxlen=1000"
    assert "p@ss" not in repr(sink)
    assert "p@ss" not in repr(a)
    assert "p%40ss" not in repr(sink)
    with pytest.raises(InvalidInput, match="maxlen= must be a whole number"):
        redis_sink("redis://127.0.0.1/0?stream=s&maxlen=0")


# -- the shared server -----------------------------------------------------------------------


async def test_records_come_back_as_messages_in_order(stream_url: Callable[..., str]) -> None:
    url = stream_url()
    sent = [*records(120), Record(b"no key"), Record(b"", None, {"empty": b""})]
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        for start in range(0, len(sent), 50):
            await sink.send(sent[start : start + 50])
        got = await receive_until(src, len(sent), limit=40)
        assert await src.receive(10, 0.05) == []
    assert [Record(m.value, m.key, dict(m.headers)) for m in got] == sent
    assert {m.attempt for m in got} == {1}
    assert {m.origin.source for m in got} == {stream_of(url)}
    assert {m.origin.partition for m in got} == {None}
    positions = [tuple(map(int, m.origin.position.split("-"))) for m in got]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(sent)


async def test_a_header_named_value_or_key_is_refused(stream_url: Callable[..., str]) -> None:
    url = stream_url()
    async with opened(redis_sink(url, option="--dead-letter")) as sink:
        for name in ("value", "key"):
            with pytest.raises(InvalidInput, match=f"--dead-letter .*header named '{name}'"):
                await sink.send([Record(b"fine"), Record(b"x", None, {name: b"y"})])
    assert admin(url).xlen(stream_of(url)) == 0


async def test_maxlen_trims_the_sinks_stream(stream_url: Callable[..., str]) -> None:
    url = stream_url(maxlen="10")
    async with opened(redis_sink(url)) as sink:
        for start in range(0, 1000, 100):
            await sink.send(records(100, start))
    # MAXLEN ~ trims whole nodes of the stream (100 entries each by default): about 10 are left.
    assert 10 <= admin(url).xlen(stream_of(url)) < 1000


async def test_acknowledged_messages_are_not_delivered_again(
    stream_url: Callable[..., str],
) -> None:
    url = stream_url()
    async with opened(redis_sink(url)) as sink:
        await sink.send(records(5))
        async with opened(source(url)) as src:
            got = await receive_until(src, 5)
            await src.ack(got)
        async with opened(source(url)) as src:
            assert await src.receive(10, 0.2) == []
            await sink.send(records(1, 5))
            (fresh,) = await receive_until(src, 1)
    assert (fresh.value, fresh.attempt) == (b"v5", 1)
    assert admin(url).xpending(stream_of(url), GROUP)["pending"] == 1


async def test_unacknowledged_messages_come_back_after_a_restart(
    stream_url: Callable[..., str],
) -> None:
    url = stream_url()
    async with opened(redis_sink(url)) as sink:
        await sink.send(records(6))
    async with opened(source(url)) as src:
        first = await receive_until(src, 6, limit=4)
        await src.ack(first[:2])
        # Still in flight: this source does not hand them out twice.
        assert await src.receive(10, 0.05) == []
    async with opened(source(url)) as src:
        again = await receive_until(src, 4, limit=3)
        assert await src.receive(10, 0.05) == []
        await src.ack(again)
    assert [m.origin for m in again] == [m.origin for m in first[2:]]
    assert values(again) == [b"v2", b"v3", b"v4", b"v5"]
    assert {m.attempt for m in again} == {2}
    async with opened(source(url)) as src:
        assert await src.receive(10, 0.05) == []


async def test_another_consumer_reclaims_a_dead_consumers_messages(
    stream_url: Callable[..., str],
) -> None:
    url = stream_url()
    async with opened(redis_sink(url)) as sink:
        await sink.send(records(4))
        async with opened(source(url, "dead")) as dead:
            await receive_until(dead, 4)  # and dies without acknowledging
        await sink.send(records(2, 4))
        async with opened(source(url, "heir", reclaim_after=0.5)) as heir:
            got = await receive_until(heir, 6)
            await heir.ack(got)
            assert await heir.receive(10, 0.6) == []
    by_value = {m.value: m.attempt for m in got}
    assert by_value == {b"v0": 2, b"v1": 2, b"v2": 2, b"v3": 2, b"v4": 1, b"v5": 1}
    pending = admin(url).xpending(stream_of(url), GROUP)
    assert pending["pending"] == 0


async def test_pending_entries_deleted_from_the_stream_are_acknowledged_away(
    stream_url: Callable[..., str],
) -> None:
    url = stream_url()
    stream, client = stream_of(url), admin(url)
    async with opened(redis_sink(url)) as sink:
        await sink.send(records(8))
    async with opened(source(url, "a")) as a:
        own = await receive_until(a, 4, limit=4)
    async with opened(source(url, "b")) as b:
        others = await receive_until(b, 4, limit=4)
    # Two of a's and two of b's entries go while pending.
    client.xdel(stream, own[0].origin.position, own[2].origin.position)
    client.xdel(stream, others[1].origin.position, others[3].origin.position)

    async with opened(source(url, "a")) as a:
        back = await receive_until(a, 2)
        # Checked before the next receive looks for entries to reclaim (which drops deleted
        # ones too): reading its own backlog acknowledged the deleted entries away.
        pending = client.xpending_range(stream, GROUP, "-", "+", 10, consumername="a")
        assert [p["message_id"].decode() for p in pending] == [m.origin.position for m in back]
        assert await a.receive(10, 0.05) == []
        await a.ack(back)
    assert values(back) == [b"v1", b"v3"]
    assert [m.attempt for m in back] == [2, 2]

    async with opened(source(url, "c", reclaim_after=0.3)) as c:
        reclaimed = await receive_until(c, 2)
        assert await c.receive(10, 0.4) == []
        await c.ack(reclaimed)
    assert values(reclaimed) == [b"v4", b"v6"]
    assert [m.attempt for m in reclaimed] == [2, 2]
    assert client.xpending(stream, GROUP)["pending"] == 0


async def test_a_deleted_stream_gets_its_group_again(stream_url: Callable[..., str]) -> None:
    url = stream_url()
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        await sink.send(records(2))
        await src.ack(await receive_until(src, 2))
        admin(url).delete(stream_of(url))
        assert await src.receive(10, 0.05) == []
        await sink.send(records(1, 2))
        (later,) = await receive_until(src, 1)
    assert later.value == b"v2"


async def test_a_key_that_is_no_stream_is_refused(stream_url: Callable[..., str]) -> None:
    url = stream_url()
    admin(url).set(stream_of(url), b"plain")
    with pytest.raises(InvalidInput, match="holds a string, not a stream"):
        await redis_sink(url).open()
    src = source(url)
    with pytest.raises(InvalidInput, match="holds no stream"):
        await src.open()
    await src.close()


async def test_no_server_is_broker_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?stream=s"
    for broker in (redis_sink(url, timeout=2.0), source(url, timeout=2.0)):
        with pytest.raises(BrokerUnavailable, match="did not answer"):
            await broker.open()
        await broker.close()


# -- a private server: restarts, pauses --------------------------------------------------------


async def test_the_sink_is_unavailable_while_the_server_is_down(server: RedisServer) -> None:
    url = server.url("out")
    async with opened(redis_sink(url)) as sink:
        await sink.send(records(3))
        server.stop(kill=True)
        with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{server.port}"):
            await sink.send(records(3, 3))
        server.start()
        await sink.send(records(3, 3))
    entries = server.client().xrange("out")
    assert [fields[b"value"] for _, fields in entries] == [f"v{i}".encode() for i in range(6)]


async def test_pending_messages_survive_a_killed_server(server: RedisServer) -> None:
    url = server.url("in")
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        await sink.send(records(3))
        got = await receive_until(src, 3)
        await src.ack(got[:1])
        server.stop(kill=True)
        with pytest.raises(BrokerUnavailable):
            await src.receive(10, 0.05)
        with pytest.raises(BrokerUnavailable):
            await src.ack(got[1:])
        server.start()
        # After the lost connection the source reads its own pending entries again, but not
        # those it handed out and still waits to acknowledge.
        assert await src.receive(10, 0.05) == []
        await src.ack(got[1:])
    async with opened(source(url)) as src:
        assert await src.receive(10, 0.05) == []


async def test_a_restarted_consumer_gets_its_messages_from_a_restarted_server(
    server: RedisServer,
) -> None:
    url = server.url("in")
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        await sink.send(records(3))
        await receive_until(src, 3)
    server.restart(kill=True)
    async with opened(source(url)) as src:
        again = await receive_until(src, 3)
    assert values(again) == [b"v0", b"v1", b"v2"]
    assert {m.attempt for m in again} == {2}


async def test_a_server_that_does_not_answer_is_unavailable(server: RedisServer) -> None:
    url = server.url("in")
    async with (
        opened(redis_sink(url, timeout=0.5)) as sink,
        opened(source(url, timeout=0.5)) as src,
    ):
        assert await src.receive(10, 0) == []  # its own backlog read: next come new entries
        await sink.send(records(1))
        server.pause()
        try:
            with pytest.raises(BrokerUnavailable, match=r"XREADGROUP within 0\.6 s"):
                await src.receive(10, 0.1)
            with pytest.raises(BrokerUnavailable, match=r"XADD within 0\.5 s"):
                await sink.send(records(1, 1))
        finally:
            server.resume()
        # The server runs both commands once it resumes (before a later connection's PING): v0
        # was delivered in an answer that was lost, v1 written. The two came on two connections,
        # which a resumed server may serve in either order: when the XADD ran first, the lost
        # answer held v1 too.
        assert server.client().ping()
        pending = server.client().xpending_range("in", GROUP, "-", "+", 10)
        assert {p["consumer"] for p in pending} == {b"c1"}
        assert len(pending) in (1, 2)
        got = await receive_until(src, 2)
    assert values(got) == [b"v0", b"v1"]
    assert [m.attempt for m in got] == [2, len(pending)]


async def test_reclaiming_is_looked_for_at_most_every_half_reclaim_after(
    server: RedisServer,
) -> None:
    url = server.url("in")
    async with opened(source(url, reclaim_after=2.0)) as src:
        started = time.monotonic()
        for _ in range(50):
            assert await src.receive(10, 0) == []
        elapsed = time.monotonic() - started
    calls = server.command_calls("xautoclaim")
    assert 1 <= calls <= 1 + elapsed / 1.0, f"{calls} XAUTOCLAIMs in {elapsed:.2f} s"


# -- a private server: credentials, permissions, TLS -------------------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("redis-auth")
    users = {"ann": "ann-secret", "reader": "reader-secret"}
    with RedisServer(directory, password="default-secret", users=users) as started:
        # reader may read and look, not write.
        started.client().execute_command(
            "ACL", "SETUSER", "reader", "-@all", "+@read", "+type", "+ping", "+client", "+hello"
        )
        yield started


@pytest.mark.parametrize(
    ("user", "password"), [(None, "default-secret"), ("ann", "ann-secret")], ids=["default", "acl"]
)
async def test_the_right_credentials_are_accepted(
    locked: RedisServer, user: str | None, password: str
) -> None:
    url = locked.url(f"s-{uuid.uuid4().hex}", user=user, password=password)
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        await sink.send(records(2))
        assert values(await receive_until(src, 2)) == [b"v0", b"v1"]


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, "wrong-secret"), ("ann", "wrong-secret"), ("nobody", "wrong-secret"), (None, None)],
    ids=["default", "acl", "unknown-user", "none"],
)
async def test_wrong_credentials_are_refused_without_showing_them(
    locked: RedisServer, user: str | None, password: str | None
) -> None:
    url = locked.url("s", user=user, password=password)
    for broker, option in ((source(url), "--source"), (redis_sink(url), "--sink")):
        with pytest.raises(InvalidInput, match=f"refused the credentials in {option}") as refused:
            await broker.open()
        await broker.close()
        assert "wrong-secret" not in str(refused.value)
        assert "wrong-secret" not in repr(broker)
    assert f"redis://{user or ''}{':***' if password else ''}" in str(refused.value)


async def test_a_user_without_write_permission_is_told_so(locked: RedisServer) -> None:
    url = locked.url("s", user="reader", password="reader-secret")
    async with opened(redis_sink(url)) as sink:
        with pytest.raises(InvalidInput, match="may not run XADD") as refused:
            await sink.send(records(1))
    assert "reader-secret" not in str(refused.value)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


def tls_server(directory: Path, tls: TlsFiles, client_certificates: bool) -> Iterator[RedisServer]:
    server = RedisServer(directory, tls=tls, client_certificates=client_certificates)
    try:
        server.start()
    except TlsUnsupported as error:
        pytest.skip(f"this redis-server serves no TLS: {error}")
    with server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisServer]:
    yield from tls_server(tmp_path_factory.mktemp("redis-tls"), tls_files, False)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisServer]:
    yield from tls_server(tmp_path_factory.mktemp("redis-mtls"), tls_files, True)


async def round_trip(url: str) -> list[bytes]:
    async with opened(redis_sink(url)) as sink, opened(source(url)) as src:
        await sink.send(records(2))
        return values(await receive_until(src, 2))


async def test_rediss_verifies_the_server_against_the_given_ca(
    tls: RedisServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    stream = f"s-{uuid.uuid4().hex}"
    assert await round_trip(tls.url(stream, tls=True, ca=str(tls_files.ca))) == [b"v0", b"v1"]
    other = TlsFiles.make(tmp_path / "other")
    for url in (tls.url(stream, tls=True, ca=str(other.ca)), tls.url(stream, tls=True)):
        with pytest.raises(InvalidInput, match=r"TLS handshake .* failed .*certificate"):
            await redis_sink(url).open()
    unverified = tls.url(f"s-{uuid.uuid4().hex}", tls=True, verify="false")
    assert await round_trip(unverified) == [b"v0", b"v1"]


async def test_rediss_presents_a_client_certificate(mtls: RedisServer, tls_files: TlsFiles) -> None:
    ca, cert, key = str(tls_files.ca), str(tls_files.client_cert), str(tls_files.client_key)
    url = mtls.url(f"s-{uuid.uuid4().hex}", tls=True, ca=ca, cert=cert, key=key)
    assert await round_trip(url) == [b"v0", b"v1"]
    sink = redis_sink(mtls.url("s", tls=True, ca=ca), timeout=2.0)
    # The server refuses the handshake with an alert, or resets the connection first.
    with pytest.raises((InvalidInput, BrokerUnavailable), match="cert= and key="):
        await sink.open()
    await sink.close()


async def test_tls_files_that_cannot_be_read_are_invalid_input(
    tls: RedisServer, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    for options in ({"ca": str(missing)}, {"cert": str(missing)}):
        sink = redis_sink(tls.url("s", tls=True, **options))
        with pytest.raises(InvalidInput, match="cannot load the TLS files"):
            await sink.open()


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_commands_are_packed_into_the_bytes_redis_py_sends(kind: str) -> None:
    import redis.asyncio as aioredis

    from modelport.jobs.streams import redis_connection

    packed = (
        redis_connection._PackedConnection()
        if kind == "plain"
        else redis_connection._PackedSSLConnection()
    )
    plain = aioredis.Connection()
    commands = [
        ("XADD", "s", "*", b"value", b"\x00\xff" * 3000, b"key", 7, b"f", 0.1),
        ("XGROUP CREATE", "s", "g", "$", "MKSTREAM"),
        (b"CLIENT SETNAME", "caf\u00e9"),
        ("SET", "k", memoryview(b"a view"), 10**20, 1e300),  # hiredis refuses views
    ]
    for command in commands:
        assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert b"".join(packed.pack_commands(commands)) == b"".join(plain.pack_commands(commands))
    assert b"".join(packed.pack_commands(commands[:3])) == b"".join(
        plain.pack_commands(commands[:3])
    )
