"""The raw loops of the stream benchmark: the most a consumer in Python can do, without a model.

Usage (the runner starts them pinned to SERVER_CPU; each runs until SIGTERM):
    python benchmarks/stream_raw.py redis PORT SOURCE SINK GROUP
    python benchmarks/stream_raw.py kafka HOST:PORT SOURCE SINK GROUP

One process, one asyncio loop (the standard one, as `modelport stream` runs), one message after
another in chunks of CHUNK, at least once, in the order `modelport stream` does it:

- redis: redis-py's asyncio client with the hiredis parser and RESP2, as modelport's Redis
  source makes it. XREADGROUP COUNT 100 as consumer `raw` of GROUP (created from the stream's
  first entry), one XADD per message in one pipeline, then one XACK of the chunk.
- kafka: aiokafka, as modelport's Kafka source and sink use it. A consumer of GROUP (manual
  commits, from the earliest offset, session timeout SESSION_MS), getmany(max_records=100),
  one send per message to a producer with acks=all, then, once every send is acknowledged,
  one commit of the next offsets.

Each message's JSON value is decoded (orjson), and its answer written with the fields an
answer of `modelport stream --format json` has: a JSON value of the same form and size (a
fixed class and probabilities, the model's name, version and digest, the request id), the
input's key, and the headers x-request-id, x-model-name, x-model-version, x-model-sha256 and
content-type; the request id derived from the message's origin as modelport derives it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import signal
import sys

import orjson

CHUNK = 100
BLOCK_MS = 500
"""How long one read waits for a first message (also how soon a SIGTERM is noticed)."""
SESSION_MS = 6_000
HEARTBEAT_MS = 1_000
SHA256 = "8248bc9e228670b29b80e9d0a94dda2185c394793a1da6773d50bb9275b65911"
"""A digest as long as the model's, for answers of the same size."""
PROBA = [0.98157287, 0.018427128, 1.4781146e-8]


@functools.lru_cache(maxsize=64)
def _partition_id(source: str, partition: int | None) -> str:
    return hashlib.blake2b(f"{source}\0{partition}".encode(), digest_size=8).hexdigest()


def request_id(source: str, partition: int | None, position: str | int) -> str:
    """32 hex digits of the message's origin, as modelport's consumer derives them: 16 of the
    source and partition, 16 of the position (a Kafka offset, or a Redis entry id's
    milliseconds and sequence)."""
    if isinstance(position, int):
        ordered = position
    else:
        millis, _, sequence = position.partition("-")
        ordered = int(millis) << 20 | int(sequence)
    return f"{_partition_id(source, partition)}{ordered:016x}"


def answer(value: bytes, rid: str) -> tuple[bytes, dict[str, bytes]]:
    """The answer's value and headers, as `--format json` writes them (without a model)."""
    orjson.loads(value)
    body = {"predict": 0, "predict_proba": PROBA, "_model": "iris", "_version": 1}
    body |= {"_sha256": SHA256, "_request_id": rid}
    headers = {
        "x-request-id": rid.encode(),
        "x-model-name": b"iris",
        "x-model-version": b"1",
        "x-model-sha256": SHA256.encode(),
        "content-type": b"application/json",
    }
    return orjson.dumps(body), headers


def stopping() -> asyncio.Event:
    """An event SIGTERM and SIGINT set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    return stop


async def redis_loop(port: int, source: str, sink: str, group: str) -> int:
    """Read, answer and acknowledge `source` into `sink` until SIGTERM; messages done."""
    import redis.asyncio as aioredis
    from redis import exceptions as rx

    client = aioredis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=None)
    try:
        await client.xgroup_create(source, group, "0", mkstream=True)
    except rx.ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise
    stop, done = stopping(), 0
    try:
        while not stop.is_set():
            read = await client.xreadgroup(group, "raw", {source: ">"}, count=CHUNK, block=BLOCK_MS)
            if not read:
                continue
            entries = read[0][1]
            pipe = client.pipeline(transaction=False)
            for entry_id, fields in entries:
                value, headers = answer(
                    fields[b"value"], request_id(source, None, entry_id.decode())
                )
                pipe.xadd(sink, {b"value": value, b"key": fields[b"key"], **headers})
            await pipe.execute()
            await client.xack(source, group, *(entry_id for entry_id, _ in entries))
            done += len(entries)
    finally:
        await client.aclose()
    return done


async def kafka_loop(bootstrap: str, source: str, sink: str, group: str) -> int:
    """Consume, answer and commit `source` into `sink` until SIGTERM; messages done."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    stop, done = stopping(), 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=BLOCK_MS, max_records=CHUNK)
            sent, offsets = [], {}
            for tp, records in batches.items():
                for r in records:
                    value, headers = answer(r.value, request_id(tp.topic, tp.partition, r.offset))
                    sent.append(
                        await producer.send(sink, value, key=r.key, headers=list(headers.items()))
                    )
                offsets[tp] = records[-1].offset + 1
            if sent:
                await asyncio.gather(*sent)
                await consumer.commit(offsets)
                done += len(sent)
    finally:
        await producer.stop()
        await consumer.stop()
    return done


def main() -> None:
    broker, where, source, sink, group = sys.argv[1:6]
    if broker == "redis":
        done = asyncio.run(redis_loop(int(where), source, sink, group))
    elif broker == "kafka":
        done = asyncio.run(kafka_loop(where, source, sink, group))
    else:
        sys.exit(f"stream_raw.py: no broker {broker!r}: redis or kafka")
    print(orjson.dumps({"stopped": {"acknowledged": done}}).decode(), flush=True)


if __name__ == "__main__":
    main()
