"""Redis Streams broker throughput: the sink's send, and the source's receive + ack.

Usage: python benchmarks/redis_streams.py [--url redis://127.0.0.1:6379/0] [--uvloop]
(with the project venv; the URL defaults to MODELPORT_TEST_REDIS, else the local server).

Sends MESSAGES records of VALUE_BYTES random bytes in chunks of CHUNK (one pipeline each) to a
fresh stream, then receives them as one consumer of a fresh group in chunks of CHUNK and
acknowledges each chunk before the next receive, as the stream consumer does. Prints
messages/s for each, the median of REPEATS runs; the streams are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import redis

from modelport.jobs.streams.broker import Record
from modelport.jobs.streams.redis_streams import redis_sink, redis_source

MESSAGES = 20_000
VALUE_BYTES = 100
CHUNK = 100
REPEATS = 3


async def one_run(base: str) -> tuple[float, float]:
    """(sent/s, received and acknowledged/s) for one fresh stream."""
    url = f"{base}?stream=bench-{uuid.uuid4().hex}"
    records = [Record(os.urandom(VALUE_BYTES)) for _ in range(MESSAGES)]
    sink = redis_sink(url)
    source = redis_source(url, group="bench", consumer="c1", reclaim_after=60.0)
    await sink.open()
    await source.open()
    try:
        started = time.perf_counter()
        for i in range(0, MESSAGES, CHUNK):
            await sink.send(records[i : i + CHUNK])
        send_rate = MESSAGES / (time.perf_counter() - started)

        started, received = time.perf_counter(), 0
        while received < MESSAGES:
            messages = await source.receive(CHUNK, 1.0)
            await source.ack(messages)
            received += len(messages)
        receive_rate = MESSAGES / (time.perf_counter() - started)
    finally:
        await source.close()
        await sink.close()
        with redis.Redis.from_url(base) as client:
            client.delete(url.partition("?stream=")[2])
    return send_rate, receive_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    default = os.environ.get("MODELPORT_TEST_REDIS", "redis://127.0.0.1:6379/0")
    parser.add_argument("--url", default=default.partition("?")[0])
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    runs = [asyncio.run(one_run(args.url)) for _ in range(REPEATS)]
    sends, receives = zip(*runs, strict=True)
    print(f"{MESSAGES} messages of {VALUE_BYTES} B in chunks of {CHUNK}, median of {REPEATS}:")
    print(f"  sink.send            {statistics.median(sends):>9,.0f} messages/s")
    print(f"  receive + ack        {statistics.median(receives):>9,.0f} messages/s")
    print(f"  (runs: send {[round(s) for s in sends]}, receive {[round(r) for r in receives]})")


if __name__ == "__main__":
    main()
