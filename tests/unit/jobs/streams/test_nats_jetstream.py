"""The NATS JetStream source and sink against real servers.

The machine's NATS (MODELPORT_TEST_NATS) serves the tests a shared server is fine for, each
on a stream of its own; a private nats-server (nats_broker.NatsServer) serves restarts,
authentication, permissions and TLS.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import nats.js.errors
import pytest

from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Origin, Record
from modelport.jobs.streams.nats_address import parse_nats_url
from modelport.jobs.streams.nats_jetstream import (
    NatsSink,
    NatsSource,
    nats_headers,
    nats_sink,
    nats_source,
)

from .nats_broker import NatsServer, TlsFiles, free_port, nats_server_available

pytestmark = pytest.mark.anyio

RECLAIM = 1.0
"""The ack wait of the tests' groups: an unacknowledged message comes back after it."""
PAST_RECLAIM = 4 * RECLAIM
"""A receive waiting this long meets every message whose ack wait ran out meanwhile."""
HANG_GUARD = 60.0
"""A call that would hang fails the test after this long instead (not a speed target)."""

needs_server = pytest.mark.skipif(
    not nats_server_available(), reason="needs the nats-server executable on PATH"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Stream:
    """A stream of the test's own on some server: its URL for sources and sinks."""

    base: str
    name: str
    subject: str

    def url(self, extra: str = "") -> str:
        return f"{self.base}?stream={self.name}&subject={self.subject}{extra}"

    def source(self, group: str = "g", **options: float) -> NatsSource:
        return nats_source(
            self.url(), group=group, consumer=unique("test"), reclaim_after=RECLAIM, **options
        )

    def sink(self, **options: float) -> NatsSink:
        return nats_sink(self.url(), **options)


def new_stream(base: str, prefix: str = "mp-test") -> Stream:
    """A stream name of the test's own (not created), with the subject `NAME.in`."""
    name = unique(prefix)
    return Stream(base, name, f"{name}.in")


async def make_stream(base: str) -> Stream:
    """A new stream on the server at `base`."""
    stream = new_stream(base)
    client = await nats.connect(base)
    try:
        await client.jetstream().add_stream(name=stream.name, subjects=[stream.subject])
    finally:
        await client.close()
    return stream


async def delete_stream(stream: Stream) -> None:
    client = await nats.connect(stream.base)
    try:
        with suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(stream.name)
    finally:
        await client.close()


@pytest.fixture
def machine_nats() -> str:
    url = os.environ.get("MODELPORT_TEST_NATS")
    if not url:
        pytest.skip("set MODELPORT_TEST_NATS (nats://HOST:PORT with JetStream) to run this test")
    return url


@pytest.fixture
async def stream(machine_nats: str) -> AsyncIterator[Stream]:
    """A fresh stream on the machine's NATS, deleted after the test."""
    made = await make_stream(machine_nats)
    try:
        yield made
    finally:
        await delete_stream(made)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private nats-server with JetStream, stopped after the test."""
    if not nats_server_available():
        pytest.skip("needs the nats-server executable on PATH")
    with NatsServer(tmp_path / "nats") as started:
        yield started


async def opened(*sides: NatsSource | NatsSink) -> None:
    for side in sides:
        await side.open()


async def receive_all(
    source: NatsSource, count: int, limit: int = 100, *, ack: bool = False
) -> list[Message]:
    """`count` messages, received `limit` at a time (and acknowledged with `ack`)."""
    received: list[Message] = []
    with anyio.fail_after(HANG_GUARD):
        while len(received) < count:
            got = await source.receive(limit, wait=1.0)
            if ack:
                await source.ack(got)
            received += got
    return received


def record(i: int) -> Record:
    return Record(value=f"value-{i}".encode(), key=f"key-{i}".encode(), headers={"n": b"%d" % i})


# Round trip, order, groups -------------------------------------------------------------------


async def test_value_key_and_headers_round_trip(stream: Stream) -> None:
    sink, source = stream.sink(), stream.source()
    await opened(sink, source)
    try:
        await sink.send(
            [
                Record(b"\x00\xffbinary", b"k-1", {"trace": b"abc", "empty": b""}),
                Record(b"no key, no headers"),
                Record(b"", key=b"caf\xc3\xa9", headers={"Content-Type": b"application/json"}),
            ]
        )
        first, second, third = await receive_all(source, 3)
    finally:
        await sink.close()
        await source.close()
    assert (first.value, first.key) == (b"\x00\xffbinary", b"k-1")
    assert first.headers == {"trace": b"abc", "empty": b""}
    assert first.origin == Origin(stream.name, None, "1")
    assert first.attempt == 1
    assert (second.value, second.key, dict(second.headers)) == (b"no key, no headers", None, {})
    assert (third.value, third.key) == (b"", "café".encode())
    assert dict(third.headers) == {"Content-Type": b"application/json"}


async def test_records_keep_their_order(stream: Stream) -> None:
    sink, source = stream.sink(), stream.source()
    await opened(sink, source)
    try:
        for start in range(0, 1000, 250):
            await sink.send([record(i) for i in range(start, start + 250)])
        received = await receive_all(source, 1000, limit=64, ack=True)
    finally:
        await sink.close()
        await source.close()
    assert [m.value for m in received] == [record(i).value for i in range(1000)]
    assert [m.origin.position for m in received] == [str(i) for i in range(1, 1001)]


async def test_acknowledged_messages_never_come_back(stream: Stream) -> None:
    sink, first = stream.sink(), stream.source()
    await opened(sink, first)
    await sink.send([record(i) for i in range(3)])
    await sink.close()
    await first.ack(await receive_all(first, 3))
    await first.close()

    again = stream.source()
    await again.open()
    try:
        # Long enough for the ack wait to run out: unacknowledged, they would come back.
        assert await again.receive(10, wait=PAST_RECLAIM) == []
    finally:
        await again.close()


async def test_unacknowledged_messages_go_to_another_consumer_of_the_group(stream: Stream) -> None:
    sink, crashed = stream.sink(), stream.source()
    await opened(sink, crashed)
    await sink.send([record(i) for i in range(3)])
    await sink.close()
    taken = await receive_all(crashed, 3)
    await crashed.ack(taken[:1])
    # The first consumer stays connected and silent, as a stuck or killed process would.

    other = stream.source()
    await other.open()
    try:
        redelivered = await receive_all(other, 2)
        await other.ack(redelivered)
    finally:
        await other.close()
        await crashed.close()
    assert [m.value for m in redelivered] == [record(1).value, record(2).value]
    assert [m.origin for m in redelivered] == [m.origin for m in taken[1:]]
    assert [m.attempt for m in redelivered] == [2, 2]
    assert [m.attempt for m in taken] == [1, 1, 1]


async def test_close_hands_back_buffered_messages_ahead_of_newer_ones(stream: Stream) -> None:
    sink, leaving = stream.sink(), stream.source()
    await opened(sink, leaving)
    await sink.send([record(i) for i in range(5)])
    await sink.close()
    # The tail of a pull that arrives after its fetch stopped waiting stays in the client's
    # buffer, delivered at the server yet never returned by receive. A pull of our own on
    # the source's inbox, never fetched, makes that happen for certain.
    subscription = leaving._subscription
    assert subscription is not None
    client = leaving._connection.client
    pull = b'{"batch": 3, "no_wait": true}'
    await client.publish(subscription._nms, pull, reply=subscription._deliver)
    with anyio.fail_after(HANG_GUARD):
        while subscription.pending_msgs < 3:
            await anyio.sleep(0.01)  # the interval of a poll with a deadline
    await leaving.close()

    again = stream.source()
    await again.open()
    try:
        # Well within the ack wait: without the hand-back, messages 4 and 5 would come first.
        got = await again.receive(10, wait=RECLAIM / 4)
        await again.ack(got)
    finally:
        await again.close()
    assert [m.origin.position for m in got][:3] == ["1", "2", "3"]
    assert [m.attempt for m in got][:3] == [2, 2, 2]


async def test_two_consumers_of_a_group_share_the_messages(stream: Stream) -> None:
    sink, one, two = stream.sink(), stream.source(), stream.source()
    await opened(sink, one, two)
    try:
        await sink.send([record(i) for i in range(200)])
        seen: dict[str, list[bytes]] = {"one": [], "two": []}
        with anyio.fail_after(HANG_GUARD):
            while len(seen["one"]) + len(seen["two"]) < 200:
                for name, source in (("one", one), ("two", two)):
                    got = await source.receive(25, wait=0.2)
                    await source.ack(got)
                    seen[name] += [m.value for m in got]
        late = [*await one.receive(10, wait=PAST_RECLAIM), *await two.receive(10, wait=0.1)]
    finally:
        for side in (sink, one, two):
            await side.close()
    assert seen["one"], "the first consumer got none"
    assert seen["two"], "the second consumer got none"
    assert sorted(seen["one"] + seen["two"]) == sorted(record(i).value for i in range(200))
    assert late == []


async def test_groups_are_independent(stream: Stream) -> None:
    sink, a, b = stream.sink(), stream.source("a"), stream.source("b")
    await opened(sink, a, b)
    try:
        await sink.send([record(0)])
        got_a, got_b = await receive_all(a, 1), await receive_all(b, 1)
    finally:
        for side in (sink, a, b):
            await side.close()
    assert got_a[0].value == got_b[0].value == record(0).value


async def test_in_progress_keeps_a_slow_message(stream: Stream) -> None:
    sink, slow, other = stream.sink(), stream.source(), stream.source()
    await opened(sink, slow, other)
    try:
        await sink.send([record(0)])
        (message,) = await receive_all(slow, 1)
        stolen: list[Message] = []
        # Three ack waits long, the slow consumer says it is still at work every quarter.
        with anyio.move_on_after(3 * RECLAIM):
            while True:
                await slow.in_progress([message])
                stolen += await other.receive(1, wait=RECLAIM / 4)
        await slow.ack([message])
        late = await other.receive(1, wait=PAST_RECLAIM)
    finally:
        for side in (sink, slow, other):
            await side.close()
    assert stolen == []
    assert late == []


# Streams and subjects that are missing -------------------------------------------------------


async def test_a_missing_stream_is_invalid_input_without_create(machine_nats: str) -> None:
    name = unique("mp-missing")
    source = nats_source(
        f"{machine_nats}?stream={name}&subject={name}.in",
        group="g",
        consumer="c",
        reclaim_after=RECLAIM,
    )
    with pytest.raises(InvalidInput, match=f"no stream '{name}'.*create=true"):
        await source.open()


async def test_create_true_creates_the_stream(machine_nats: str) -> None:
    made = new_stream(machine_nats, "mp-created")
    source = nats_source(made.url("&create=true"), group="g", consumer="c", reclaim_after=RECLAIM)
    try:
        await source.open()
        sink = made.sink()
        await sink.open()
        await sink.send([record(7)])
        await sink.close()
        (message,) = await receive_all(source, 1)
        await source.close()
        assert message.value == record(7).value
    finally:
        await delete_stream(made)


async def test_a_sink_needs_a_stream_for_its_subject(machine_nats: str) -> None:
    sink = nats_sink(f"{machine_nats}?subject={unique('nobody')}.out")
    with pytest.raises(InvalidInput, match=r"no JetStream stream .* stores subject"):
        await sink.open()


async def test_a_sink_naming_another_stream_is_refused(stream: Stream) -> None:
    other = await make_stream(stream.base)
    try:
        sink = nats_sink(f"{stream.base}?stream={other.name}&subject={stream.subject}")
        await sink.open()
        with pytest.raises(InvalidInput, match="expected stream does not match"):
            await sink.send([record(0)])
        await sink.close()
    finally:
        await delete_stream(other)


def test_a_source_needs_stream_and_subject() -> None:
    with pytest.raises(InvalidInput, match=r"needs subject=: add \?subject=SUBJECT"):
        nats_source("nats://127.0.0.1:4222?stream=S", group="g", consumer="c", reclaim_after=1)
    with pytest.raises(InvalidInput, match="needs stream="):
        nats_source("nats://127.0.0.1:4222?subject=s", group="g", consumer="c", reclaim_after=1)
    with pytest.raises(InvalidInput, match="needs subject="):
        nats_sink("nats://127.0.0.1:4222?stream=S")


def test_a_group_must_be_a_jetstream_name() -> None:
    with pytest.raises(InvalidInput, match="consumer group"):
        nats_source("nats://h?stream=S&subject=s", group="a.b", consumer="c", reclaim_after=1)


# URLs ---------------------------------------------------------------------------------------


def test_url_parts_and_no_secret_in_repr() -> None:
    address = parse_nats_url(
        "tls://us%40r:s3cr%2Ft@h1:4000,[::1],h3?stream=S&subject=a.b&create=true&ca=/x/ca.pem"
    )
    assert address.servers == ("tls://h1:4000", "tls://[::1]:4222", "tls://h3:4222")
    assert (address.user, address.password) == ("us@r", "s3cr/t")
    assert (address.stream, address.subject, address.create, address.ca) == (
        "S",
        "a.b",
        True,
        "/x/ca.pem",
    )
    source = NatsSource(address, group="g", consumer="c", reclaim_after=1)
    for text in (repr(address), str(address), repr(source), repr(NatsSink(address))):
        assert "s3cr" not in text
        assert "us@r" not in text
        assert "us%40r" not in text
    token = parse_nats_url("nats://t0ken@h?subject=x")
    assert (token.token, token.user, token.servers) == ("t0ken", None, ("nats://h:4222",))
    assert "t0ken" not in repr(token)
    assert parse_nats_url("nats://h?cert=c.pem&key=k.pem&subject=x").tls


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:4222?subject=x", "nats:// or tls://"),
        ("nats://h:4222?subject=x&strem=S", "not strem"),
        ("nats://h:4222?subject=x&cert=c.pem", "both cert=PATH and key=PATH"),
        ("nats://h:99999?subject=x", "HOST:PORT"),
        ("nats://h:4222,?subject=x", "HOST:PORT"),
        ("nats://h:4222?subject=x&create=yes", "true or false"),
    ],
)
def test_malformed_urls_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_nats_url(url)


def test_headers_that_nats_cannot_carry_are_refused() -> None:
    assert nats_headers(Record(b"v")) is None
    assert nats_headers(Record(b"v", b"k", {"a": b"1"})) == {"a": "1", "key": "k"}
    for headers in ({"a": b"\xff"}, {"a": b"two\r\nlines"}, {"a": b" padded"}, {"a b": b"x"}):
        with pytest.raises(InvalidInput):
            nats_headers(Record(b"v", None, headers))
    with pytest.raises(InvalidInput, match="record key"):
        nats_headers(Record(b"v", None, {"key": b"x"}))


# Outages, restarts ---------------------------------------------------------------------------


async def test_open_without_a_server_is_unavailable() -> None:
    url = f"nats://127.0.0.1:{free_port()}?stream=S&subject=s"
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(BrokerUnavailable, match="could not connect"):
            await nats_sink(url, timeout=1.0).open()
        with pytest.raises(BrokerUnavailable, match="could not connect"):
            await nats_source(url, group="g", consumer="c", reclaim_after=1, timeout=1.0).open()


@needs_server
async def test_a_second_server_in_the_url_is_used(server: NatsServer) -> None:
    made = await make_stream(server.url())
    url = f"nats://127.0.0.1:{free_port()},127.0.0.1:{server.port}?subject={made.subject}"
    sink = nats_sink(url, timeout=2.0)
    await sink.open()
    await sink.send([record(0)])
    await sink.close()


async def eventually_sends(sink: NatsSink, records: list[Record]) -> int:
    """Send until the sink succeeds (the server is back); how many attempts failed."""
    failures = 0
    with anyio.fail_after(HANG_GUARD):
        while True:
            try:
                await sink.send(records)
                return failures
            except BrokerUnavailable:
                failures += 1
                await anyio.sleep(0.1)


@needs_server
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_a_server_restart_fails_calls_meanwhile_and_they_work_after(
    server: NatsServer, kill: bool
) -> None:
    made = await make_stream(server.url())
    sink, source = made.sink(timeout=2.0), made.source(timeout=2.0)
    await opened(sink, source)
    try:
        await sink.send([record(0), record(1)])
        before = await receive_all(source, 2)

        server.stop(kill=kill)
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(BrokerUnavailable):
                await sink.send([record(2)])
            with pytest.raises(BrokerUnavailable):
                await source.receive(10, wait=0.5)
            with pytest.raises(BrokerUnavailable):
                await source.ack(before)

        server.start()
        await eventually_sends(sink, [record(3)])
        # What was received before the restart can be acknowledged after it.
        await source.ack(before[:1])
        after: list[Message] = []
        with anyio.fail_after(HANG_GUARD):
            while not {record(1).value, record(3).value} <= {m.value for m in after}:
                got = await source.receive(10, wait=1.0)
                await source.ack(got)
                after += got
    finally:
        await sink.close()
        await source.close()
    # record(1), never acknowledged, came back (the loop waited for it) and record(3) was
    # stored; record(2) may have been or not (at least once: its sender was told to send it
    # again).
    if not kill:
        # A server stopped cleanly keeps its consumer's state: the ack and the delivery count.
        # (One killed may forget the last deliveries and acks, and deliver them again.) Ack
        # waits run out in stream order, so an unacknowledged record(0) came before record(1).
        assert record(0).value not in [m.value for m in after]
        assert [m.attempt for m in after if m.value == record(1).value] == [2]


# Credentials, permissions, TLS ----------------------------------------------------------------


@needs_server
async def test_user_and_password(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "auth", user="modelport", password="pa55-w0rd") as server:
        made = await make_stream(server.url())
        sink = nats_sink(made.url())
        await sink.open()
        await sink.send([record(0)])
        await sink.close()

        wrong = made.url().replace("pa55-w0rd", "guessed-wrong")
        for side in (
            nats_sink(wrong),
            nats_source(wrong, group="g", consumer="c", reclaim_after=RECLAIM),
            nats_sink(made.url().replace("modelport:pa55-w0rd@", "")),
        ):
            with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput) as refused:
                await side.open()
            assert "refused the credentials" in str(refused.value)
            assert "guessed-wrong" not in str(refused.value)
            assert "pa55-w0rd" not in str(refused.value)


@needs_server
async def test_token(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "token", token="t0k3n-s3cret") as server:
        made = await make_stream(server.url())
        source = made.source()
        await source.open()
        await source.close()
        with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput) as refused:
            await nats_sink(made.url().replace("t0k3n-s3cret", "nope-nope")).open()
        assert "nope-nope" not in str(refused.value)


@pytest.mark.skipif(importlib.util.find_spec("nkeys") is not None, reason="nkeys is installed")
async def test_creds_without_nkeys_says_what_to_install(tmp_path: Path) -> None:
    sink = nats_sink(f"nats://127.0.0.1:{free_port()}?subject=s&creds={tmp_path / 'u.creds'}")
    with pytest.raises(InvalidInput, match=r"nats-py\[nkeys\]"):
        await sink.open()


PERMISSIONS = """
authorization {
  users = [
    {user: limited, password: limited-pw, permissions: {publish: {deny: ["closed.>"]}}}
  ]
}
"""


@needs_server
async def test_a_denied_publish_is_invalid_input(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "perm", config=PERMISSIONS) as server:
        base = f"nats://limited:limited-pw@127.0.0.1:{server.port}"
        client = await nats.connect(base)
        await client.jetstream().add_stream(name="closed", subjects=["closed.out"])
        await client.close()
        sink = nats_sink(f"{base}?stream=closed&subject=closed.out", timeout=2.0)
        await sink.open()
        with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput) as refused:
            await sink.send([record(0)])
        await sink.close()
        assert "closed.out" in str(refused.value)
        assert "limited-pw" not in str(refused.value)


@needs_server
@pytest.mark.parametrize("mutual", [False, True])
async def test_tls(tmp_path: Path, mutual: bool) -> None:
    files = TlsFiles.issue(tmp_path / "pki")
    with NatsServer(tmp_path / "tls", tls=files, verify_clients=mutual) as server:
        client_files = f"&cert={files.client_cert}&key={files.client_key}" if mutual else ""
        base = server.url()
        assert base.startswith("tls://")
        stream = new_stream(base, "mp-tls")
        url = stream.url(f"&ca={files.ca}&create=true{client_files}")
        source = nats_source(url, group="g", consumer="c", reclaim_after=RECLAIM)
        sink = nats_sink(url)
        await opened(source, sink)
        await sink.send([record(0)])
        (message,) = await receive_all(source, 1)
        await source.ack([message])
        await sink.close()
        await source.close()
        assert message.value == record(0).value

        with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput, match="ca=PATH"):
            await nats_sink(stream.url(client_files)).open()
