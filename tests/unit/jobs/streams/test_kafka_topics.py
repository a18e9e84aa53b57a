"""The Kafka source and sink against a real Kafka-compatible broker (Tansu, kafka_broker.py).

One broker in memory serves the module's tests that a shared broker is fine for, each on
topics and groups of its own; tests that stop, kill or lock down a broker start their own,
with its data in an S3 bucket (moto's server) where it must survive a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.metadata import MetadataRequest

import modelport
from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import BrokerUnavailable, Message, Origin, Record
from modelport.jobs.streams.kafka_address import KafkaAddress, parse_kafka_url
from modelport.jobs.streams.kafka_cluster import topic_facts
from modelport.jobs.streams.kafka_connection import KafkaConnection
from modelport.jobs.streams.kafka_topics import (
    KafkaSink,
    KafkaSource,
    _session,
    kafka_sink,
    kafka_source,
)

from .kafka_broker import HOST, KafkaBroker, TlsProxy, free_port, skip_unless_available
from .nats_broker import TlsFiles

pytestmark = pytest.mark.anyio

RECLAIM = 3.0
"""The reclaim delay (so the session timeout) of the tests' consumers."""
TIMEOUT = 5.0
"""The per-call timeout of the tests' sources and sinks."""
HANG_GUARD = 60.0
"""A call that would hang fails the test after this long instead (not a speed target)."""
MEMBER = Path(__file__).with_name("kafka_member.py")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Tansu broker in memory, shared by the module's tests (each on topics of its own)."""
    skip_unless_available()
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as started:
        yield started


@pytest.fixture
def topic(broker: KafkaBroker) -> str:
    """A new topic with 4 partitions on the shared broker."""
    name = unique("mp-test")
    broker.create_topic(name, partitions=4)
    return name


def source(url: str, group: str, **options: Any) -> KafkaSource:
    options.setdefault("timeout", TIMEOUT)
    return kafka_source(
        url, group=group, consumer=unique("member"), reclaim_after=RECLAIM, **options
    )


async def opened(*sides: KafkaSource | KafkaSink) -> None:
    for side in sides:
        await side.open()


async def closed(*sides: KafkaSource | KafkaSink) -> None:
    for side in sides:
        await side.close()


async def receive_all(
    src: KafkaSource, count: int, limit: int = 100, *, ack: bool = False
) -> list[Message]:
    """`count` messages, received `limit` at a time (and acknowledged with `ack`)."""
    received: list[Message] = []
    with anyio.fail_after(HANG_GUARD):
        while len(received) < count:
            got = await src.receive(limit, wait=1.0)
            if ack:
                await src.ack(got)
            received += got
    return received


async def committed(broker: KafkaBroker, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic`'s 4 partitions (those without one left out)."""
    # A consumer that joins nothing: only its offset lookups are used.
    reader = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{broker.port}", group_id=group, enable_auto_commit=False
    )
    await reader.start()
    try:
        offsets = {p: await reader.committed(TopicPartition(topic, p)) for p in range(4)}
    finally:
        await reader.stop()
    return {p: offset for p, offset in offsets.items() if offset is not None}


def record(i: int, key: str | None = None) -> Record:
    return Record(
        value=f"value-{i}".encode(),
        key=(key or f"key-{i}").encode(),
        headers={"n": b"%d" % i},
    )


def by_partition(messages: list[Message]) -> dict[int | None, list[int]]:
    offsets: dict[int | None, list[int]] = {}
    for message in messages:
        offsets.setdefault(message.origin.partition, []).append(int(message.origin.position))
    return offsets


# URLs -----------------------------------------------------------------------------------------


def test_url_parts_and_defaults() -> None:
    address = parse_kafka_url("kafka://b1:9093,b2,[::1]:9094/orders", "--source")
    assert address.servers == ("b1:9093", "b2:9092", "[::1]:9094")
    assert (address.topic, address.security_protocol, address.tls, address.sasl) == (
        "orders",
        "PLAINTEXT",
        False,
        False,
    )
    assert (address.partitions, address.replication, address.sasl_mechanism) == (None, 1, None)
    assert parse_kafka_url("kafka+ssl://b/t?ca=/pki/ca.pem", "--sink").security_protocol == "SSL"
    sasl = parse_kafka_url("kafka://u:p@b/t?sasl_mechanism=scram-sha-512", "--sink")
    assert (sasl.security_protocol, sasl.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert parse_kafka_url("kafka+ssl://u:p@b/t", "--sink").security_protocol == "SASL_SSL"
    assert parse_kafka_url("kafka://u:p@b/t", "--sink").sasl_mechanism == "PLAIN"
    made = parse_kafka_url("kafka://b/t.v1_x-y?partitions=6&replication=3", "--sink")
    assert (made.topic, made.partitions, made.replication) == ("t.v1_x-y", 6, 3)
    explicit = parse_kafka_url(
        "kafka://u:p@b/t?security_protocol=sasl_ssl&cert=/c.pem&key=/k.pem", "--sink"
    )
    assert (explicit.security_protocol, explicit.cert, explicit.key) == (
        "SASL_SSL",
        "/c.pem",
        "/k.pem",
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h/t", "kafka:// or kafka\\+ssl://"),
        ("kafka://h:9092", "names no topic: add /TOPIC"),
        ("kafka://h:9092/", "names no topic: add /TOPIC"),
        ("kafka://h:9092/a/b", "not a Kafka topic name"),
        ("kafka://h:9092/..", "not a Kafka topic name"),
        ("kafka://h:99999/t", "HOST:PORT"),
        ("kafka://h:9092,/t", "HOST:PORT"),
        ("kafka://h/t?partition=3", "unknown option partition="),
        ("kafka://h/t?partitions=0", "partitions= must be a whole number"),
        ("kafka://h/t?partitions=2&partitions=3", "given 2 times"),
        ("kafka://h/t?replication=2", "replication= applies to a topic created"),
        ("kafka://h/t?security_protocol=TLS", "security_protocol= is one of"),
        ("kafka://h/t?ca=/ca.pem", "apply to TLS"),
        ("kafka+ssl://h/t?key=/k.pem", "key= needs cert="),
        ("kafka+ssl://h/t?security_protocol=PLAINTEXT", "kafka\\+ssl:// is TLS"),
        ("kafka://h/t?security_protocol=SASL_PLAINTEXT", "needs the SASL user and password"),
        ("kafka://u:p@h/t?security_protocol=SSL", "are for SASL"),
        ("kafka://user@h/t", "a user and a password"),
        ("kafka://h/t?sasl_mechanism=PLAIN", "sasl_mechanism= applies to SASL"),
        ("kafka://u:p@h/t?sasl_mechanism=GSSAPI", "sasl_mechanism= is one of"),
    ],
)
def test_malformed_urls_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as refused:
        parse_kafka_url(url, "--source")
    assert "--source" in str(refused.value)


def test_no_secret_in_messages_or_repr() -> None:
    secret = "s3cr%2Ft-pw"
    url = f"kafka+ssl://alice:{secret}@b1:9093/orders?sasl_mechanism=SCRAM-SHA-256"
    address = parse_kafka_url(url, "--sink")
    assert address.password == "s3cr/t-pw"
    assert address.redacted == "kafka+ssl://alice:***@b1:9093/orders?sasl_mechanism=SCRAM-SHA-256"
    src = kafka_source(url, group="g", consumer="c", reclaim_after=1)
    texts = [repr(address), str(address), repr(src), repr(kafka_sink(url))]
    texts.append(KafkaConnection(address, 1.0, "--sink").where)
    for bad in (f"{url}&nope=1", url.replace("/orders", "/"), url.replace(":9093", ":x")):
        with pytest.raises(InvalidInput) as refused:
            parse_kafka_url(bad, "--sink")
        texts.append(str(refused.value))
    for text in texts:
        assert "s3cr" not in text, text


def test_source_names_and_reclaim_delay_are_checked() -> None:
    with pytest.raises(InvalidInput, match="must not be empty"):
        kafka_source("kafka://h/t", group="", consumer="c", reclaim_after=1)
    with pytest.raises(InvalidInput, match="reclaim delay must be positive"):
        kafka_source("kafka://h/t", group="g", consumer="c", reclaim_after=0)
    with pytest.raises(InvalidInput, match="names no topic"):
        kafka_source("kafka://h", group="g", consumer="c", reclaim_after=1)


def test_the_session_follows_the_reclaim_delay_within_bounds() -> None:
    assert _session(3.0, None) == 3_000
    assert _session(0.2, None) == 1_000
    assert _session(10_000.0, None) == 1_800_000
    assert _session(3.0, (6_000, 300_000)) == 6_000
    assert _session(600.0, (6_000, 300_000)) == 300_000


def test_tls_settings_from_the_url(tmp_path: Path) -> None:
    files = TlsFiles.issue(tmp_path / "pki")
    url = f"kafka+ssl://h:9093/t?ca={files.ca}&cert={files.client_cert}&key={files.client_key}"
    connection = KafkaConnection(parse_kafka_url(url, "--sink"), 2.0, "--sink")
    settings = connection.settings("me")
    assert settings["security_protocol"] == "SSL"
    assert settings["bootstrap_servers"] == ["h:9093"]
    assert (settings["client_id"], settings["request_timeout_ms"]) == ("me", 2_000)
    context = settings["ssl_context"]
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()]  # the test CA, loaded
    assert "sasl_plain_password" not in settings

    missing = f"kafka+ssl://h:9093/t?ca={tmp_path / 'nope.pem'}"
    with pytest.raises(InvalidInput, match="cannot load the TLS files"):
        KafkaConnection(parse_kafka_url(missing, "--sink"), 2.0, "--sink").settings("me")


# Round trip, order ----------------------------------------------------------------------------


async def test_value_key_and_headers_round_trip(broker: KafkaBroker, topic: str) -> None:
    sink, src = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), "g")
    await opened(sink, src)
    try:
        await sink.send(
            [
                Record(b"\x00\xffbinary", b"same", {"trace": b"abc", "empty": b""}),
                Record(b"", b"same", {"Content-Type": b"application/json"}),
                Record(b"no headers", b"same"),
            ]
        )
        # Kafka headers are a list that may repeat a name, and a value or header may be null.
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{broker.port}")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, None, key=b"same", headers=[("h", b"first"), ("h", b"last"), ("n", None)]
            )
        finally:
            await producer.stop()
        first, second, third, fourth = await receive_all(src, 4)
    finally:
        await closed(sink, src)
    assert (first.value, first.key, dict(first.headers)) == (
        b"\x00\xffbinary",
        b"same",
        {"trace": b"abc", "empty": b""},
    )
    assert first.attempt == 1
    assert first.origin == Origin(topic, first.origin.partition, "0")
    assert (second.value, dict(second.headers)) == (b"", {"Content-Type": b"application/json"})
    assert (third.value, dict(third.headers)) == (b"no headers", {})
    assert (fourth.value, dict(fourth.headers)) == (b"", {"h": b"last", "n": b""})
    assert {m.origin.partition for m in (first, second, third, fourth)} == {first.origin.partition}
    assert [m.origin.position for m in (first, second, third, fourth)] == ["0", "1", "2", "3"]


async def test_records_of_a_key_keep_their_order(broker: KafkaBroker, topic: str) -> None:
    sink, src = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), "g")
    await opened(sink, src)
    try:
        for start in range(0, 1000, 250):
            await sink.send([record(i, key=f"k{i % 5}") for i in range(start, start + 250)])
        received = await receive_all(src, 1000, limit=64, ack=True)
    finally:
        await closed(sink, src)
    per_key: dict[bytes | None, list[int]] = {}
    for message in received:
        per_key.setdefault(message.key, []).append(int(message.headers["n"]))
    assert sorted(per_key) == [f"k{k}".encode() for k in range(5)]
    for k, numbers in per_key.items():
        assert numbers == [i for i in range(1000) if f"k{i % 5}".encode() == k]
    for offsets in by_partition(received).values():
        assert offsets == list(range(len(offsets)))


async def test_a_key_goes_to_the_partition_any_kafka_producer_puts_it_in(
    broker: KafkaBroker, topic: str
) -> None:
    from aiokafka import AIOKafkaProducer

    keys = [f"key-{i}".encode() for i in range(40)]
    sink, src = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), "g")
    plain = AIOKafkaProducer(bootstrap_servers=f"{HOST}:{broker.port}")
    await opened(sink, src)
    await plain.start()
    try:
        await sink.send([Record(b"sink", key) for key in keys])
        await sink.send([Record(b"loose", None, {"n": b"%d" % i}) for i in range(30)])
        for key in keys:
            await (await plain.send(topic, b"plain", key=key))
        received = await receive_all(src, 2 * len(keys) + 30, ack=True)
    finally:
        await plain.stop()
        await closed(sink, src)
    placed: dict[tuple[bytes, bytes | None], int | None] = {
        (m.value, m.key): m.origin.partition for m in received
    }
    assert {placed[b"sink", key] for key in keys} == {0, 1, 2, 3}
    assert all(placed[b"sink", key] == placed[b"plain", key] for key in keys)
    # Records without a key, sent together, go to one partition together, in order.
    loose = [m for m in received if m.value == b"loose"]
    assert len({m.origin.partition for m in loose}) == 1
    assert [int(m.headers["n"]) for m in loose] == list(range(30))


async def test_a_large_record_is_invalid_input(broker: KafkaBroker, topic: str) -> None:
    sink = kafka_sink(broker.url(topic), timeout=TIMEOUT)
    await sink.open()
    try:
        with pytest.raises(InvalidInput, match="larger than"):
            await sink.send([Record(b"x" * (2 * 1024 * 1024))])
        await sink.send([Record(b"small")])  # the sink still works
    finally:
        await sink.close()


# Groups, commits ------------------------------------------------------------------------------


async def test_committed_messages_never_come_back(broker: KafkaBroker, topic: str) -> None:
    group = unique("g")
    sink, first = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), group)
    await opened(sink, first)
    await sink.send([record(i) for i in range(20)])
    await sink.close()
    await first.ack(await receive_all(first, 20))
    await first.close()
    offsets = await committed(broker, group, topic)
    assert sum(offsets.values()) == 20

    again = source(broker.url(topic), group)
    await again.open()
    try:
        assert again.assignment == {0, 1, 2, 3}
        assert await again.receive(100, wait=2.0) == []
    finally:
        await again.close()


async def test_unacknowledged_messages_come_back_to_the_group(
    broker: KafkaBroker, topic: str
) -> None:
    group = unique("g")
    sink, first = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), group)
    await opened(sink, first)
    await sink.send([record(i, key="one") for i in range(10)])
    await sink.close()
    taken = await receive_all(first, 10)
    await first.ack(taken[:4])
    await first.close()  # as a restart would: the last six never acknowledged

    again = source(broker.url(topic), group)
    await again.open()
    try:
        back = await receive_all(again, 6)
        assert await again.receive(10, wait=0.5) == []
    finally:
        await again.close()
    assert [m.value for m in back] == [m.value for m in taken[4:]]
    assert [m.origin for m in back] == [m.origin for m in taken[4:]]


async def test_groups_are_independent(broker: KafkaBroker, topic: str) -> None:
    sink = kafka_sink(broker.url(topic), timeout=TIMEOUT)
    a, b = source(broker.url(topic), unique("a")), source(broker.url(topic), unique("b"))
    await opened(sink, a, b)
    try:
        await sink.send([record(0)])
        got_a, got_b = await receive_all(a, 1), await receive_all(b, 1)
        await a.ack(got_a)
    finally:
        await closed(sink, a, b)
    assert got_a[0].value == got_b[0].value == record(0).value


async def test_partitions_creates_a_missing_topic(broker: KafkaBroker) -> None:
    name = unique("mp-made")
    sink = kafka_sink(broker.url(name, partitions="3"), timeout=TIMEOUT)
    await sink.open()
    await sink.send([record(i) for i in range(30)])
    await sink.close()
    src = source(broker.url(name), unique("g"))
    await src.open()
    try:
        assert src.assignment == {0, 1, 2}
        received = await receive_all(src, 30)
    finally:
        await src.close()
    assert sorted(m.value for m in received) == sorted(record(i).value for i in range(30))


async def test_a_missing_topic_is_invalid_input_where_the_broker_makes_none(
    broker: KafkaBroker,
) -> None:
    # Tansu creates topics on first use; asked not to, it answers as a broker that never
    # does: that answer must be refused, naming the topic and saying what to add.
    name = unique("mp-missing")
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
    await client.bootstrap()
    try:
        node = client.get_random_node()
        answer = await client.send(node, MetadataRequest([name], allow_auto_topic_creation=False))
    finally:
        await client.close()
    connection = KafkaConnection(parse_kafka_url(broker.url(name), "--sink"), 1.0, "--sink")
    with pytest.raises(InvalidInput, match=f"no topic '{name}'.*partitions=N"):
        topic_facts(answer.to_object()["topics"], connection)


# Rebalances -----------------------------------------------------------------------------------


async def wait_for(
    condition: Any,
    *sources: KafkaSource,
    what: str,
    into: dict[KafkaSource, list[Message]] | None = None,
) -> float:
    """Seconds until `condition()` holds, receiving (without acknowledging) on `sources`, what
    they receive kept `into` a list per source."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > HANG_GUARD:
            raise AssertionError(f"not seen within {HANG_GUARD:g} s: {what}")
        for src in sources:
            got = await src.receive(10, wait=0.1)
            if into is not None:
                into.setdefault(src, []).extend(got)
        if not sources:
            await anyio.sleep(0.05)
    return time.monotonic() - start


async def test_two_members_share_the_partitions_and_a_clean_stop_hands_them_over(
    broker: KafkaBroker, topic: str
) -> None:
    group = unique("g")
    one, two = source(broker.url(topic), group), source(broker.url(topic), group)
    sink = kafka_sink(broker.url(topic), timeout=TIMEOUT)
    await opened(sink, one)
    try:
        # Joining while `one` keeps polling, as a running consumer does.
        joining = asyncio.ensure_future(two.open())
        await wait_for(lambda: joining.done(), one, what="the second member joined")
        await joining
        await wait_for(
            lambda: (
                one.assignment | two.assignment == {0, 1, 2, 3}
                and len(one.assignment) == len(two.assignment) == 2
            ),
            one,
            two,
            what="the partitions are shared",
        )
        await sink.send([record(i) for i in range(200)])
        seen: dict[str, list[Message]] = {"one": [], "two": []}
        with anyio.fail_after(HANG_GUARD):
            while len(seen["one"]) + len(seen["two"]) < 200:
                for name, src in (("one", one), ("two", two)):
                    got = await src.receive(50, wait=0.2)
                    await src.ack(got)
                    seen[name] += got
        assert {m.origin.partition for m in seen["one"]} == one.assignment
        assert {m.origin.partition for m in seen["two"]} == two.assignment
        values = sorted(m.value for m in seen["one"] + seen["two"])
        assert values == sorted(record(i).value for i in range(200))

        await two.close()
        handover = await wait_for(lambda: one.assignment == {0, 1, 2, 3}, one, what="handover")
        print(f"\nafter a clean stop, the other member owned every partition in {handover:.2f} s")
        await sink.send([record(i) for i in range(200, 240)])
        late = await receive_all(one, 40, ack=True)
        assert sorted(m.value for m in late) == sorted(record(i).value for i in range(200, 240))
    finally:
        await closed(sink, one, two)


async def test_a_killed_member_loses_its_partitions_after_its_session(
    broker: KafkaBroker, topic: str
) -> None:
    group = unique("g")
    survivor = source(broker.url(topic), group)
    await survivor.open()
    env = dict(os.environ)
    # The member imports this checkout's modelport, whatever is installed.
    src_dir = str(Path(modelport.__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src_dir, env.get("PYTHONPATH", "")])
    member = await asyncio.create_subprocess_exec(
        sys.executable,
        str(MEMBER),
        broker.url(topic),
        group,
        unique("victim"),
        str(RECLAIM),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    victim: list[int] = []

    async def follow() -> None:
        assert member.stdout is not None
        async for line in member.stdout:
            event = json.loads(line)
            if "assignment" in event:
                victim[:] = event["assignment"]

    following = asyncio.ensure_future(follow())
    try:
        await wait_for(
            lambda: len(victim) == 2 and survivor.assignment == {0, 1, 2, 3} - set(victim),
            survivor,
            what="the partitions are shared",
        )
        member.send_signal(signal.SIGKILL)
        await member.wait()
        takeover = await wait_for(
            lambda: survivor.assignment == {0, 1, 2, 3}, survivor, what="takeover"
        )
        print(
            f"\nafter a SIGKILL, the other member owned every partition in {takeover:.2f} s "
            f"(session {survivor.session_ms / 1000:g} s)"
        )
        # A bound that the session sets, plus a generous margin for a loaded machine.
        assert takeover < survivor.session_ms / 1000 + 15
    finally:
        if member.returncode is None:
            member.kill()
            await member.wait()
        following.cancel()
        await survivor.close()


async def test_ack_after_a_rebalance_commits_nothing_of_the_old_assignment(
    broker: KafkaBroker, topic: str
) -> None:
    group = unique("g")
    sink, one = kafka_sink(broker.url(topic), timeout=TIMEOUT), source(broker.url(topic), group)
    await opened(sink, one)
    two = source(broker.url(topic), group)
    try:
        await sink.send([record(i) for i in range(40)])
        before = await receive_all(one, 40)
        assert {m.origin.partition for m in before} == {0, 1, 2, 3}
        joining = asyncio.ensure_future(two.open())
        again: dict[KafkaSource, list[Message]] = {one: [], two: []}
        await wait_for(lambda: joining.done(), one, what="the second member joined", into=again)
        await joining
        await wait_for(lambda: len(one.assignment) == 2, one, what="a rebalance", into=again)

        await one.ack(before)  # received before the rebalance: not crashing, not committing
        assert await committed(broker, group, topic) == {}

        # Every message is read again by its partition's owner, from the last commit.
        await wait_for(
            lambda: len(again[one]) + len(again[two]) >= 40, one, two, what="all again", into=again
        )
        assert sorted(m.value for m in again[one] + again[two]) == sorted(m.value for m in before)
        assert {m.origin.partition for m in again[one]} == one.assignment
        assert {m.origin.partition for m in again[two]} == two.assignment
        await one.ack(again[one])
        await two.ack(again[two])
        offsets = await committed(broker, group, topic)
        assert sum(offsets.values()) == 40
    finally:
        await closed(sink, one, two)


# Outages, restarts ----------------------------------------------------------------------------


async def test_open_without_a_broker_is_unavailable() -> None:
    url = f"kafka://127.0.0.1:{free_port()}/t"
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(BrokerUnavailable, match=r"no Kafka broker .* answered"):
            await kafka_sink(url, timeout=1.0).open()
        src = kafka_source(url, group="g", consumer="c", reclaim_after=1, timeout=1.0)
        with pytest.raises(BrokerUnavailable, match=r"no Kafka broker .* answered"):
            await src.open()
        await src.close()


async def test_a_second_server_in_the_url_is_used(broker: KafkaBroker, topic: str) -> None:
    url = f"kafka://127.0.0.1:{free_port()},127.0.0.1:{broker.port}/{topic}"
    sink = kafka_sink(url, timeout=2.0)
    await sink.open()
    await sink.send([record(0)])
    await sink.close()


@pytest.fixture
def lasting_broker(tmp_path: Path, s3: Any) -> Iterator[KafkaBroker]:
    """A broker of the test's own that keeps its data in an S3 bucket across restarts."""
    skip_unless_available()
    with KafkaBroker(tmp_path / "kafka", s3_bucket=s3.bucket, s3_env=s3.env()) as started:
        yield started


async def eventually_sends(sink: KafkaSink, records: list[Record]) -> None:
    with anyio.fail_after(HANG_GUARD):
        while True:
            try:
                await sink.send(records)
                return
            except BrokerUnavailable:
                await anyio.sleep(0.1)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_a_broker_restart_fails_calls_meanwhile_and_they_work_after(
    lasting_broker: KafkaBroker, kill: bool
) -> None:
    name, group = unique("mp-restart"), unique("g")
    lasting_broker.create_topic(name, partitions=2)
    url = lasting_broker.url(name)
    sink, src = kafka_sink(url, timeout=2.0), source(url, group, timeout=2.0)
    await opened(sink, src)
    try:
        await sink.send([record(i, key="one") for i in range(4)])
        before = await receive_all(src, 4)
        await src.ack(before[:2])
        assert sum((await committed(lasting_broker, group, name)).values()) == 2

        lasting_broker.stop(kill=kill)
        started = time.monotonic()
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(BrokerUnavailable):
                await sink.send([record(99)])
            with pytest.raises(BrokerUnavailable):
                await src.receive(10, wait=0.5)
            with pytest.raises(BrokerUnavailable):
                await src.ack(before[2:3])
        print(f"\nthree calls failed with BrokerUnavailable in {time.monotonic() - started:.2f} s")

        lasting_broker.start()
        # The commit made before the stop lasted (the one that failed meanwhile may have been
        # written all the same: aiokafka finishes a commit it began).
        assert list((await committed(lasting_broker, group, name)).values()) in ([2], [3])
        await eventually_sends(sink, [record(4, key="one")])
        # The member still owns its partitions (or was handed them again): what it received
        # before is acknowledged now, or comes again.
        with anyio.fail_after(HANG_GUARD):
            while True:
                try:
                    await src.ack(before[2:])
                    break
                except BrokerUnavailable:
                    await anyio.sleep(0.1)
        after = await receive_all(src, 1, ack=True)
        with anyio.fail_after(HANG_GUARD):
            while record(4).value not in [m.value for m in after]:
                after += await src.receive(10, wait=0.5)
                await src.ack(after)
    finally:
        await closed(sink, src)
    values = [m.value for m in after]
    assert record(0).value not in values
    assert record(1).value not in values

    # Everything acknowledged is committed for good: a new member of the group gets nothing.
    again = source(url, group)
    await again.open()
    try:
        assert await again.receive(10, wait=1.0) == []
    finally:
        await again.close()
    # And the records lasted: a new group reads them all, in order.
    fresh = source(url, unique("g"))
    await fresh.open()
    try:
        everything = [m.value for m in await receive_all(fresh, 5)]
        everything += [m.value for m in await fresh.receive(10, wait=0.5)]
    finally:
        await fresh.close()
    expected = [record(i).value for i in range(5)]
    assert [v for v in everything if v in expected] == expected


async def test_close_while_the_broker_is_down_releases_the_clients(tmp_path: Path) -> None:
    skip_unless_available()
    with KafkaBroker(tmp_path / "kafka") as doomed:
        doomed.create_topic("t", partitions=2)
        sink, src = kafka_sink(doomed.url("t"), timeout=2.0), source(doomed.url("t"), "g")
        await opened(sink, src)
        await sink.send([record(0)])
        await receive_all(src, 1)
        doomed.stop(kill=True)
        with pytest.raises(BrokerUnavailable):
            await sink.send([record(1)])
        with pytest.raises(BrokerUnavailable):
            await src.receive(10, wait=0.5)  # the fetcher now backs off after failures
        with anyio.fail_after(HANG_GUARD):
            await src.close()
            await sink.close()
    # Nothing of the clients runs on: no task, no connection retried for ever.
    await anyio.sleep(0.1)
    codes = [getattr(task.get_coro(), "cr_code", None) for task in asyncio.all_tasks()]
    assert [c for c in codes if c is not None and "aiokafka" in c.co_filename] == []


# Security ------------------------------------------------------------------------------------


async def test_sasl_refused_credentials_are_invalid_input(tmp_path: Path) -> None:
    skip_unless_available()
    with KafkaBroker(tmp_path / "auth", authentication=True) as locked:
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            url = locked.url("t", userinfo="alice:pa55-w0rd", sasl_mechanism=mechanism)
            for side in (
                kafka_sink(url, timeout=TIMEOUT),
                kafka_source(url, group="g", consumer="c", reclaim_after=RECLAIM, timeout=TIMEOUT),
            ):
                with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput) as refused:
                    await side.open()
                await side.close()
                assert "refused the SASL login" in str(refused.value)
                assert mechanism in str(refused.value)
                assert "pa55-w0rd" not in str(refused.value)


async def test_sasl_to_a_listener_without_it_is_invalid_input(broker: KafkaBroker) -> None:
    url = broker.url("t", userinfo="alice:pa55-w0rd", sasl_mechanism="SCRAM-SHA-512")
    with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput) as refused:
        await kafka_sink(url, timeout=TIMEOUT).open()
    assert "does not take SASL SCRAM-SHA-512" in str(refused.value)
    assert "pa55-w0rd" not in str(refused.value)


async def test_tls_to_a_plaintext_listener_says_so(broker: KafkaBroker, tmp_path: Path) -> None:
    files = TlsFiles.issue(tmp_path / "pki")
    url = broker.url("t", scheme="kafka+ssl", ca=str(files.ca))
    with anyio.fail_after(HANG_GUARD), pytest.raises(BrokerUnavailable) as refused:
        await kafka_sink(url, timeout=1.0).open()
    assert "if the port does not serve TLS, use kafka://" in str(refused.value)


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[tuple[KafkaBroker, TlsFiles, TlsProxy]]:
    """A broker behind a TLS proxy that demands a client certificate; it advertises the proxy."""
    skip_unless_available()
    files = TlsFiles.issue(tmp_path / "pki")
    proxy = TlsProxy(files.cert, files.key, client_ca=files.ca)
    behind = KafkaBroker(tmp_path / "kafka", advertised_port=proxy.port)
    behind.start()
    await proxy.start(behind.port)
    try:
        yield behind, files, proxy
    finally:
        await proxy.close()
        behind.stop()


async def test_tls_with_a_client_certificate(
    tls_broker: tuple[KafkaBroker, TlsFiles, TlsProxy],
) -> None:
    behind, files, proxy = tls_broker
    name = unique("mp-tls")
    query = {"ca": str(files.ca), "cert": str(files.client_cert), "key": str(files.client_key)}
    url = behind.url(name, scheme="kafka+ssl", port=proxy.port, partitions="2", **query)
    sink, src = kafka_sink(url, timeout=TIMEOUT), source(url, unique("g"))
    await opened(sink, src)
    try:
        await sink.send([record(0), record(1)])
        received = await receive_all(src, 2, ack=True)
    finally:
        await closed(sink, src)
    assert sorted(m.value for m in received) == [record(0).value, record(1).value]

    other_ca = TlsFiles.issue(Path(files.ca).parent / "other")
    untrusted = behind.url(name, scheme="kafka+ssl", port=proxy.port, ca=str(other_ca.ca))
    with anyio.fail_after(HANG_GUARD), pytest.raises(InvalidInput, match="TLS handshake"):
        await kafka_sink(untrusted, timeout=TIMEOUT).open()


def test_an_address_repr_has_no_password() -> None:
    address = KafkaAddress(("h:1",), "t", "SASL_SSL", "u", "hunter2", "PLAIN")
    assert "hunter2" not in repr(address)
