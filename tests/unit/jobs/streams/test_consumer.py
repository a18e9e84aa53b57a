"""The stream consumer's loop on real Redis streams and the demo iris model: stacked answers
in order, refused messages isolated, redelivery limits, back-pressure, drain, and the
telemetry it reports through a real Observer (its metrics page)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
import redis

import modelport
from modelport.config import ServeSettings
from modelport.jobs.streams.answers import origin_id
from modelport.jobs.streams.broker import Message, Origin, Record
from modelport.jobs.streams.consumer import StreamConsumer, StreamOptions, StreamStats
from modelport.jobs.streams.formats import message_format
from modelport.jobs.streams.redis_streams import redis_sink, redis_source
from modelport.observability.observer import Observer
from modelport.registry.store import Registry
from modelport.serving.catalog import Catalog
from modelport.serving.dataplane import DataPlane
from modelport.serving.executor import Executor
from modelport.serving.lifecycle import Lifecycle

from ....conftest import assert_close_float32
from ..conftest import FEATURES, iris_table
from .redis_broker import RedisServer, skip_unless_available

HANG_GUARD = 60.0
"""A run that would hang fails the test after this long instead (not a speed target)."""


@pytest.fixture(scope="module")
def registry(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    copy = tmp_path_factory.mktemp("consumer") / "registry"
    shutil.copytree(demo_registry, copy)
    with Registry.open(str(copy)) as store:
        yield store


@pytest.fixture
def observer(tmp_path: Path) -> Observer:
    settings = ServeSettings(registry=str(tmp_path / "unused"))
    (tmp_path / "metrics").mkdir()
    return Observer.from_settings(settings, Executor(), tmp_path / "metrics", _Null())


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.fixture
def redis_url() -> str:
    import os

    url = os.environ.get("MODELPORT_TEST_REDIS")
    if not url:
        pytest.skip("MODELPORT_TEST_REDIS is unset (.ci/run sets redis://127.0.0.1:6379/0)")
    return url.rstrip("/")


@pytest.fixture
def streams(redis_url: str) -> Iterator[dict[str, str]]:
    """Unique names for the input, output and dead-letter streams; deleted afterwards."""
    tag = uuid.uuid4().hex[:10]
    names = {role: f"mp-consumer-{tag}-{role}" for role in ("in", "out", "dead")}
    yield names
    client = redis.Redis.from_url(redis_url)
    client.delete(*names.values())
    client.close()


def rows(n: int) -> list[dict[str, float]]:
    table = iris_table()
    return [table.slice(i % table.num_rows, 1).to_pylist()[0] for i in range(n)]


def encoded(record: dict[str, Any]) -> bytes:
    return orjson.dumps({k: record[k] for k in FEATURES if k in record})


def produce(url: str, values: list[bytes]) -> None:
    async def send() -> None:
        sink = redis_sink(url)
        await sink.open()
        try:
            records = [Record(v, str(i).encode()) for i, v in enumerate(values)]
            await sink.send(records)
        finally:
            await sink.close()

    asyncio.run(send())


def read(url: str, stream: str) -> list[dict[str, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return [{k.decode(): v for k, v in f.items()} for _, f in client.xrange(stream)]
    finally:
        client.close()


def consume(
    registry: Registry,
    source_url: str,
    sink_url: str,
    *,
    until: int,
    dead_url: str | None = None,
    observer: Observer | None = None,
    message_format_name: str = "json",
    **options: Any,
) -> StreamStats:
    """Run a consumer until it has acknowledged `until` messages, then stop it (drain)."""

    async def main() -> StreamStats:
        lifecycle = Lifecycle(registry, Catalog(), Executor(threads=2), telemetry=observer)
        lifecycle.preload(("iris",))
        dataplane = DataPlane(lifecycle)
        consumer = StreamConsumer(
            dataplane,
            redis_source(source_url, group="g", consumer="c1", reclaim_after=30),
            redis_sink(sink_url),
            message_format(message_format_name),
            StreamOptions("iris", **options),
            dead_letters=None if dead_url is None else redis_sink(dead_url),
            telemetry=observer,
        )
        stop = asyncio.Event()

        async def stopper() -> None:
            while consumer.stats.acknowledged < until:
                await asyncio.sleep(0.01)
            stop.set()

        watcher = asyncio.ensure_future(stopper())
        try:
            return await asyncio.wait_for(consumer.run(stop), HANG_GUARD)
        finally:
            watcher.cancel()
            await lifecycle.close()

    return asyncio.run(main())


def test_answers_stack_each_receive_and_keep_the_order_and_the_values(
    registry: Registry, redis_url: str, streams: dict[str, str]
) -> None:
    records = rows(450)
    produce(f"{redis_url}?stream={streams['in']}", [encoded(r) for r in records])
    stats = consumer_run(registry, redis_url, streams, until=450, chunk=100)
    assert (stats.received, stats.answered, stats.acknowledged) == (450, 450, 450)
    answers = read(redis_url, streams["out"])
    assert [a["key"] for a in answers] == [str(i).encode() for i in range(450)]
    values = [orjson.loads(a["value"]) for a in answers]
    want = model_answers(records)
    assert [v["predict"] for v in values] == want.column("predict").to_pylist()
    for k in range(3):
        assert_close_float32(
            [v["predict_proba"][k] for v in values],
            want.column(f"predict_proba_{k}").to_pylist(),
        )
    first = answers[0]
    assert first["x-model-name"] == b"iris"
    assert first["x-model-version"] == b"1"
    assert first["content-type"] == b"application/json"
    assert values[0]["_request_id"] == first["x-request-id"].decode()


def test_a_refused_message_is_a_dead_letter_and_its_neighbours_are_answered(
    registry: Registry, redis_url: str, streams: dict[str, str]
) -> None:
    """A NaN (given as text) decodes, then validation refuses it: the stacked request is split
    until the refused ones stand alone, and the rest of their chunk is answered with their own
    values. A message that is not JSON, or whose value is out of range, fails to decode."""
    records = rows(120)
    values = [encoded(r) for r in records]
    values[17] = b"not json"
    values[40] = orjson.dumps({**records[40], "sepal_length": 1e39})
    for bad in (63, 64, 101):
        values[bad] = orjson.dumps({**records[bad], "sepal_length": "nan"})
    produce(f"{redis_url}?stream={streams['in']}", values)
    stats = consumer_run(registry, redis_url, streams, until=120, chunk=120, dead=True)
    dead = {int(d["key"]): d for d in read(redis_url, streams["dead"])}
    assert sorted(dead) == [17, 40, 63, 64, 101]
    assert stats.dead_lettered == 5
    assert [dead[k]["modelport.stage"] for k in sorted(dead)] == [
        b"decode",
        b"decode",
        b"validate",
        b"validate",
        b"validate",
    ]
    assert b"NaN" in dead[63]["modelport.error"]
    assert dead[17]["value"] == b"not json"
    assert dead[17]["modelport.origin.source"] == streams["in"].encode()
    assert dead[17]["modelport.attempt"] == b"1"
    answers = read(redis_url, streams["out"])
    good = [i for i in range(120) if i not in dead]
    assert [int(a["key"]) for a in answers] == good
    want = model_answers([records[i] for i in good])
    got = [orjson.loads(a["value"]) for a in answers]
    assert [v["predict"] for v in got] == want.column("predict").to_pylist()
    assert_close_float32(
        [v["predict_proba"][0] for v in got], want.column("predict_proba_0").to_pylist()
    )


def consumer_run(
    registry: Registry,
    redis_url: str,
    streams: dict[str, str],
    *,
    until: int,
    dead: bool = False,
    **options: Any,
) -> StreamStats:
    return consume(
        registry,
        f"{redis_url}?stream={streams['in']}",
        f"{redis_url}?stream={streams['out']}",
        until=until,
        dead_url=f"{redis_url}?stream={streams['dead']}" if dead else None,
        **options,
    )


_DEMO: list[Path] = []


@pytest.fixture(autouse=True)
def _demo(demo_registry: Path) -> None:
    _DEMO[:] = [demo_registry]


def model_answers(records: list[dict[str, float]]) -> pa.Table:
    """What the embedding API answers for `records` (the same rows as a table)."""
    model = modelport.load("iris", registry=_DEMO[0])
    try:
        return model.predict_table(pa.Table.from_pylist(records))
    finally:
        model.close()


def test_the_request_id_of_a_message_is_the_same_on_every_delivery() -> None:
    one = Message(b"v", None, {}, Origin("s", None, "1-0"), 1)
    again = Message(b"v", None, {}, Origin("s", None, "1-0"), 3)
    other = Message(b"v", None, {}, Origin("s", None, "1-1"), 1)
    assert origin_id(one) == origin_id(again)
    assert origin_id(one) != origin_id(other)
    assert len(origin_id(one)) == 32


def test_a_message_delivered_too_often_is_dead_lettered_unread(
    registry: Registry, redis_url: str, streams: dict[str, str]
) -> None:
    """Delivered more than --max-attempts times without an acknowledgement (it may be what
    killed the consumers before): a dead letter of stage deliver, never answered."""
    source = streams["in"]
    produce(f"{redis_url}?stream={source}", [encoded(r) for r in rows(3)])
    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(source, "g", id="0")
        entries = client.xreadgroup("g", "gone", {source: ">"}, count=1)[0][1]
        for _ in range(3):  # every claim is one more delivery
            client.xclaim(source, "g", "c1", 0, [entries[0][0]])
    finally:
        client.close()
    stats = consumer_run(registry, redis_url, streams, until=3, dead=True, max_attempts=2)
    dead = read(redis_url, streams["dead"])
    assert [(d["key"], d["modelport.stage"]) for d in dead] == [(b"0", b"deliver")]
    assert int(dead[0]["modelport.attempt"]) > 2
    assert [a["key"] for a in read(redis_url, streams["out"])] == [b"1", b"2"]
    assert stats.redelivered == 1


def test_the_metrics_count_messages_dead_letters_and_latency(
    registry: Registry, redis_url: str, streams: dict[str, str], observer: Observer
) -> None:
    values = [encoded(r) for r in rows(30)]
    values[4] = b"{}"
    produce(f"{redis_url}?stream={streams['in']}", values)
    consume(
        registry,
        f"{redis_url}?stream={streams['in']}",
        f"{redis_url}?stream={streams['out']}",
        until=30,
        dead_url=f"{redis_url}?stream={streams['dead']}",
        observer=observer,
    )
    page = (observer.metrics_page() or b"").decode()
    source = f'source="{streams["in"]}"'
    assert f'modelport_stream_messages_total{{{source},outcome="consumed"}} 30.0' in page
    assert f'modelport_stream_messages_total{{{source},outcome="answered"}} 29.0' in page
    assert f'modelport_stream_messages_total{{{source},outcome="dead_lettered"}} 1.0' in page
    assert f'modelport_stream_dead_letters_total{{{source},stage="decode"}} 1.0' in page
    assert f"modelport_stream_latency_seconds_count{{{source}}} 30" in page
    # Each answered message is a request of its own, counted under the stream protocol.
    assert 'protocol="stream",endpoint="infer",code="ok"} 29.0' in page


def test_a_sink_that_is_away_pauses_consumption_and_loses_nothing(
    registry: Registry, redis_url: str, streams: dict[str, str], tmp_path: Path
) -> None:
    """While the sink does not answer, the consumer holds at most --max-in-flight messages,
    retries the produce with backoff and acknowledges nothing; then it finishes the rest."""
    skip_unless_available()
    source_url = f"{redis_url}?stream={streams['in']}"
    produce(source_url, [encoded(r) for r in rows(300)])
    with RedisServer(tmp_path / "sink") as server:
        sink_url = server.url("out")
        seen: dict[str, int] = {}

        async def main() -> StreamStats:
            lifecycle = Lifecycle(registry, Catalog(), Executor(threads=2))
            lifecycle.preload(("iris",))
            consumer = StreamConsumer(
                DataPlane(lifecycle),
                redis_source(
                    f"{redis_url}?stream={streams['in']}",
                    group="g",
                    consumer="c1",
                    reclaim_after=30,
                ),
                redis_sink(sink_url, timeout=0.3),
                message_format("json"),
                StreamOptions("iris", max_in_flight=50, chunk=10),
            )
            stop = asyncio.Event()
            stats = consumer.stats

            async def drive() -> None:
                while stats.received == 0:
                    await asyncio.sleep(0.01)
                server.pause()
                retries = stats.retries
                while stats.retries < retries + 1:  # the writer is stuck in a produce now
                    await asyncio.sleep(0.01)
                seen["acknowledged_before"] = stats.acknowledged
                while stats.retries < retries + 4:  # and it failed three more times
                    await asyncio.sleep(0.01)
                seen["received"] = stats.received
                seen["acknowledged"] = stats.acknowledged
                server.resume()
                while consumer.stats.acknowledged < 300:
                    await asyncio.sleep(0.01)
                stop.set()

            driver = asyncio.ensure_future(drive())
            try:
                return await asyncio.wait_for(consumer.run(stop), HANG_GUARD)
            finally:
                driver.cancel()
                await lifecycle.close()

        stats = asyncio.run(main())
        answered = server.client().xlen("out")
    # Nothing acknowledged during the outage, and no more received than the window holds.
    assert seen["acknowledged"] == seen["acknowledged_before"]
    assert seen["received"] - seen["acknowledged"] <= 50
    assert stats.acknowledged == 300
    assert answered >= 300  # a produce cut off by the outage may have landed: at least once


def test_oip_requests_naming_their_outputs_stack_and_the_odd_one_is_answered_alone(
    registry: Registry, redis_url: str, streams: dict[str, str]
) -> None:
    """OIP requests stack when they name the same outputs; one asking for other outputs is
    its own request, sent beside the stack, and answers with only what it asked for."""
    records = rows(40)

    def request(i: int, outputs: list[str]) -> bytes:
        features = [records[i][f] for f in FEATURES]
        tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": features}
        return orjson.dumps(
            {"id": f"r{i}", "inputs": [tensor], "outputs": [{"name": n} for n in outputs]}
        )

    values = [request(i, ["predict", "predict_proba"]) for i in range(40)]
    values[9] = request(9, ["predict"])
    produce(f"{redis_url}?stream={streams['in']}", values)
    stats = consume(
        registry,
        f"{redis_url}?stream={streams['in']}",
        f"{redis_url}?stream={streams['out']}",
        until=40,
        message_format_name="oip",
    )
    assert stats.answered == 40
    answers = [orjson.loads(a["value"]) for a in read(redis_url, streams["out"])]
    assert [a["id"] for a in answers] == [f"r{i}" for i in range(40)]
    want = model_answers(records).column("predict").to_pylist()
    assert [a["outputs"][0]["data"][0] for a in answers] == want
    assert [o["name"] for o in answers[9]["outputs"]] == ["predict"]
    assert [o["name"] for o in answers[10]["outputs"]] == ["predict", "predict_proba"]


def test_request_ids_of_one_partition_ascend_in_its_order() -> None:
    def ids(source: str, partition: int | None, positions: list[str]) -> list[str]:
        return [
            origin_id(Message(b"v", None, {}, Origin(source, partition, p), 1)) for p in positions
        ]

    for positions in (
        ["0", "1", "2", "10", "255", "256", "99999999"],
        ["1-0", "1-1", "2-0", "17-3"],
    ):
        made = ids("s", 0, positions)
        assert made == sorted(made)
        assert len(set(made)) == len(made)
    # Other partitions and sources have ids of their own; other positions are hashed.
    assert ids("s", 0, ["7"]) != ids("s", 1, ["7"]) != ids("t", 0, ["7"])
    assert len({*ids("s", None, ["x", "y", "1-x", "-1", "١"])}) == 5
