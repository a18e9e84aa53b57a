"""NATS JetStream source and sink throughput: messages/s of sink.send and of receive + ack.

Usage: .venv/bin/python benchmarks/stream_nats.py [--url nats://127.0.0.1:4222] [--records
20000] [--chunk 100] [--size 100] [--rounds 3]. Not part of `make bench`; needs a NATS server
with JetStream. Each round makes a stream of its own (file storage), sends `--records` records
of `--size` bytes with a key and one header, `--chunk` per `NatsSink.send` (each awaits its
PubAcks), then receives them `--chunk` at a time and acknowledges each chunk (`NatsSource.ack`:
acks, then one flush), and deletes the stream. For comparison it also acknowledges with
nats-py's `ack_sync` (every ack confirmed by the server, `--chunk` at a time concurrently).
Prints the median messages/s of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import nats

from modelport.jobs.streams.broker import Message, Record
from modelport.jobs.streams.nats_jetstream import NatsSource, nats_sink, nats_source


async def acked_by_server(source: NatsSource, messages: Sequence[Message]) -> None:
    """Every ack confirmed by the server (nats-py's ack_sync), concurrently."""
    await asyncio.gather(*(message.token.ack_sync(timeout=5.0) for message in messages))


async def one_round(
    url: str,
    records: int,
    chunk: int,
    size: int,
    ack: Callable[[NatsSource, Sequence[Message]], Awaitable[None]],
) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    address = f"{url}?stream={name}&subject={name}.in&create=true"
    payload = b"x" * size
    batches = [
        [Record(payload, b"key-%d" % i, {"n": b"%d" % i}) for i in range(start, start + chunk)]
        for start in range(0, records, chunk)
    ]
    sink = nats_sink(address)
    source = nats_source(address, group="bench", consumer="bench", reclaim_after=30.0)
    try:
        await sink.open()
        await source.open()
        started = time.perf_counter()
        for batch in batches:
            await sink.send(batch)
        sent = records / (time.perf_counter() - started)

        started, received = time.perf_counter(), 0
        while received < records:
            messages = await source.receive(chunk, wait=1.0)
            await ack(source, messages)
            received += len(messages)
        consumed = records / (time.perf_counter() - started)
    finally:
        await sink.close()
        await source.close()
        client = await nats.connect(url)
        await client.jetstream().delete_stream(name)
        await client.close()
    return sent, consumed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    for label, ack in (("ack + flush", NatsSource.ack), ("ack_sync", acked_by_server)):
        rounds = [
            await one_round(options.url, options.records, options.chunk, options.size, ack)
            for _ in range(options.rounds)
        ]
        sent = statistics.median(r[0] for r in rounds)
        consumed = statistics.median(r[1] for r in rounds)
        print(
            f"{options.records} records of {options.size} B, {options.chunk} per call, "
            f"median of {options.rounds}: send {sent:,.0f} msg/s; "
            f"receive + {label} {consumed:,.0f} msg/s"
        )


if __name__ == "__main__":
    asyncio.run(main())
