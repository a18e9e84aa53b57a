"""MLServer 1.7.1's Kafka server answering the stream benchmark's OIP messages.

What the server is (mlserver/kafka/, enabled with `kafka_enabled` in settings.json, with
`kafka_servers`, `kafka_topic_input` and `kafka_topic_output`): one aiokafka consumer of the
input topic *without a consumer group* (so no committed offsets: it starts at the topic's end
when it starts, and what it had not answered when it stops is lost to it) and one aiokafka
producer with its defaults (acks=1). It schedules every record it fetches as a task of its own,
without a bound: the value is an OIP InferenceRequest in JSON, the model is named by the
header `mlserver-model` (`mlserver-version` optional; without the header the message is
refused and only logged), the record's key replaces the request's id. Each task runs the
inference and then `send_and_wait`s the InferenceResponse as JSON to the output topic, keyed
by the response's id (the input's key), with the request's headers; an error is logged, and
nothing is produced for that message. So delivery is at most once, and order is not kept.

Because it starts at the end of the topic, the messages cannot be produced beforehand: the
runner starts it (same model as batch_mlserver.py serves: the demo iris's own weights, on
SERVER_CPU, parallel_workers 0), sends single probe messages (keyed `probe-N`, one a second)
until one is answered, so its consumer is known to be reading, then produces the messages
(acks=all, from LOAD_CPU) and watches the output topic until every one is answered or it
stalls. It does so twice, each time on a fresh start and fresh topics: fed all at once (a
backlog, as the other consumers meet theirs; without a bound on what it holds, it takes in
everything and its producer times out, see WINDOW), and fed with at most WINDOW messages
produced and not yet answered, which gives its sustained rate: the figure of the target. Its
rate is taken like the others' from the answers' timestamps; the errors it logged are counted.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from batch_mlserver import MLSERVER_BIN, mlserver_model
from servers import HOST, SERVER_CPU, ServerFailed, free_port, running
from stream_brokers import KafkaBroker, KafkaReader
from stream_data import MODEL_HEADER, Message, check
from stream_runs import watch

WINDOW = 1_000
"""Messages produced and not yet answered, at most, when MLServer is fed in a window: fed all
at once, its Kafka server (no bound on tasks in flight) was seen to answer a few hundred of
100,000 and lose the others to its producer's timeouts (KafkaTimeoutError, logged). Of the
windows tried here on 10,000 messages (250, 500, 1,000, 2,000, 4,000), 1,000 gave it the most:
about 1,050 msg/s against 530-880 below and 280-560 above."""
FEED_CHUNK = 100
PROBE_EVERY = 1.0
PROBE_DEADLINE = 120.0
"""Seconds MLServer's Kafka consumer may take to answer a first probe."""


def settings(broker: KafkaBroker, source: str, sink: str) -> dict[str, Any]:
    """settings.json: the ports (unused but bound), one process, and its Kafka server."""
    return {
        "host": HOST,
        "http_port": free_port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
        "kafka_enabled": True,
        "kafka_servers": broker.bootstrap,
        "kafka_topic_input": source,
        "kafka_topic_output": sink,
    }


def measure_mlserver(
    broker: KafkaBroker,
    iris_artifact: Path,
    messages: list[Message],
    expected: np.ndarray[Any, Any] | None,
    scratch: Path,
    logs: Path,
) -> dict[str, Any]:
    """MLServer's Kafka server over `messages`, fed at once and fed with at most WINDOW
    outstanding, each on a fresh start and fresh topics, checked like modelport's runs."""
    from run import ensure_mlserver_venv

    ensure_mlserver_venv()
    version = subprocess.run(
        [str(MLSERVER_BIN), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    out: dict[str, Any] = {"version": version[-1] if version else ""}
    for name, window in (("mlserver-at-once", None), ("mlserver", WINDOW)):
        out[name] = one_run(broker, iris_artifact, messages, expected, scratch, logs, window)
    return out


def one_run(
    broker: KafkaBroker,
    iris_artifact: Path,
    messages: list[Message],
    expected: np.ndarray[Any, Any] | None,
    scratch: Path,
    logs: Path,
    window: int | None,
) -> dict[str, Any]:
    """One start of MLServer with its Kafka server: probe, feed, watch, stop, check."""
    import models
    from run import READY_DEADLINE

    artifact, _ = mlserver_model(iris_artifact, scratch)
    folder = models.mlserver_folder(scratch / "mlserver", "iris", artifact)
    source, sink = f"mlserver-in-{time.time_ns()}", f"mlserver-out-{time.time_ns()}"
    broker.create(source, sink)
    config = settings(broker, source, sink)
    (folder / "settings.json").write_text(json.dumps(config, indent=2))
    fed = "all at once" if window is None else f"at most {window:,} outstanding"
    label = f"MLServer Kafka server (oip), fed {fed}"
    result: dict[str, Any] = {"label": label, "messages": len(messages), "window": window}
    log = logs / f"mlserver-kafka-{'at-once' if window is None else window}.log"
    reader = broker.reader(sink)
    try:
        argv = [str(MLSERVER_BIN), "start", "."]
        with running(
            "mlserver", argv, config["http_port"], log, folder, READY_DEADLINE, cpu=SERVER_CPU
        ) as server:
            probe(broker, source, reader)
            print(f"{label}: {len(messages):,} messages ...", flush=True)
            feeder = Feeder(broker, source, messages, Answered(reader), window)
            result |= watch(server, feeder, len(messages))
        reader.read(1.0)
        result |= check(reader.answers, len(messages), "oip", expected)
        result["errors_logged"] = log.read_bytes().count(b"] ERROR - ERROR ")
    except ServerFailed as exc:
        result |= {"error": str(exc), "messages_per_s": None, "missing": len(messages)}
    finally:
        reader.close()
        broker.delete(source, sink)
    if result["error"]:
        print(f"  FAILED: {result['error']}", flush=True)
    else:
        print(
            f"  {result['messages_per_s'] or 0:,.0f} msg/s; {result['answers']:,} answers, "
            f"{result['missing']:,} missing, {result['duplicated']:,} duplicated",
            flush=True,
        )
    return result


class Answered:
    """Answers to the measured messages (not to probes) the reader has seen, read on each call."""

    def __init__(self, reader: KafkaReader) -> None:
        self.reader, self.seen, self.count = reader, 0, 0

    def __call__(self) -> int:
        self.reader.read(0.05)
        new = self.reader.answers[self.seen :]
        self.seen += len(new)
        self.count += sum(1 for a in new if a.key is not None and a.key.isdigit())
        return self.count


class Feeder:
    """The progress `watch` polls, producing on each poll: everything on the first (window
    None), else chunks of FEED_CHUNK while fewer than `window` messages are unanswered."""

    def __init__(
        self,
        broker: KafkaBroker,
        topic: str,
        messages: list[Message],
        answered: Answered,
        window: int | None,
    ) -> None:
        self.broker, self.topic, self.messages = broker, topic, messages
        self.answered, self.window = answered, window
        self.produced = 0

    def __call__(self) -> int:
        count, total = self.answered(), len(self.messages)
        end = total if self.window is None else min(total, count + self.window)
        step = total if self.window is None else FEED_CHUNK
        while self.produced < end:
            upto = min(end, self.produced + step)
            self.broker.produce(self.topic, self.messages[self.produced : upto])
            self.produced = upto
        return count


def probe(broker: KafkaBroker, source: str, reader: KafkaReader) -> None:
    """Send probes until MLServer answers one (its consumer is reading), then wait until the
    answers to earlier probes stop coming."""
    first = Message(
        b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", '
        b'"data": [5.1, 3.5, 1.4, 0.2]}]}',
        b"probe-0",
        dict(MODEL_HEADER),
    )
    deadline = time.perf_counter() + PROBE_DEADLINE
    sent = 0
    while time.perf_counter() < deadline:
        broker.send_one(source, Message(first.value, b"probe-%d" % sent, first.headers))
        sent += 1
        until = time.perf_counter() + PROBE_EVERY
        while time.perf_counter() < until:
            if reader.read(0.1):
                # Late answers to earlier probes may still come: wait for them a little.
                while reader.read(PROBE_EVERY):
                    pass
                return
    raise ServerFailed(f"MLServer answered no probe within {PROBE_DEADLINE:.0f} s")
