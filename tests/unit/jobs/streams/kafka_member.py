"""A consumer-group member in a process of its own, for tests that kill one.

    python kafka_member.py URL GROUP NAME RECLAIM_AFTER

Opens a Kafka source, then receives (and acknowledges) for ever. Prints one JSON line each
time its assignment changes, `{"assignment": [partitions...]}`, and one for every message,
`{"partition": P, "offset": O}`. SIGTERM closes it cleanly (it leaves the group).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from modelport.jobs.streams.kafka_topics import kafka_source


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(url: str, group: str, name: str, reclaim_after: float) -> None:
    source = kafka_source(url, group=group, consumer=name, reclaim_after=reclaim_after)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    shown: frozenset[int] | None = None
    try:
        await source.open()
        while not stop.is_set():
            if source.assignment != shown:
                shown = source.assignment
                say(assignment=sorted(shown))
            messages = await source.receive(100, wait=0.2)
            for message in messages:
                say(partition=message.origin.partition, offset=int(message.origin.position))
            await source.ack(messages)
    finally:
        await source.close()
        say(closed=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
