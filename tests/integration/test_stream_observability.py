"""`modelport stream` as an operator watches it: the metrics port (stream counters, lag,
latency, health checks), the answer schema it publishes, and the errors it starts with."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fastavro
import httpx
import pytest
import redis

from .conftest import EVENTUALLY_SECONDS, STOP_TIMEOUT

pytestmark = pytest.mark.integration

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def registry(demo_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("stream-observability") / "registry"
    shutil.copytree(demo_registry, copy)
    return copy


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("MODELPORT_TEST_REDIS")
    if not url:
        pytest.skip("MODELPORT_TEST_REDIS is unset (.ci/run sets redis://127.0.0.1:6379/0)")
    return url.rstrip("/")


def modelport(registry: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "modelport", "stream", *args, "--registry", str(registry)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(check: object, what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_SECONDS
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {EVENTUALLY_SECONDS} s: {what}")
        time.sleep(0.05)


def test_the_metrics_port_shows_what_the_consumer_does(registry: Path, redis_url: str) -> None:
    stream = f"mp-observe-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    for i in range(200):
        value = b"not json" if i == 7 else json.dumps(ROW).encode()
        client.xadd(stream, {"value": value, "key": str(i)})
    port = free_port()
    args = [
        "iris",
        "--format",
        "json",
        "--source",
        f"{redis_url}?stream={stream}",
        "--sink",
        f"{redis_url}?stream={stream}-out",
        "--dead-letter",
        f"{redis_url}?stream={stream}-dead",
        "--metrics-port",
        str(port),
    ]
    process = subprocess.Popen(
        modelport(registry, *args), stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert process.stderr is not None
        first = ""
        while "modelport streaming" not in first and process.poll() is None:
            first = process.stderr.readline()
        assert f"metrics at http://127.0.0.1:{port}/metrics" in first, first
        base = f"http://127.0.0.1:{port}"

        def page() -> str:
            try:
                return httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.TransportError:
                return ""

        answered = re.compile(r'outcome="answered"\} 199\.0')
        eventually(lambda: answered.search(page()), "199 answers counted on /metrics")
        text = page()
        source = f'source="{stream}"'
        assert f'modelport_stream_messages_total{{{source},outcome="consumed"}} 200.0' in text
        assert f'modelport_stream_dead_letters_total{{{source},stage="decode"}} 1.0' in text
        assert f"modelport_stream_latency_seconds_count{{{source}}} 200" in text
        assert "modelport_batch_size_bucket" in text
        eventually(lambda: f"modelport_stream_lag{{{source}}} 0.0" in page(), "lag gauge at 0")
        assert httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
        assert httpx.get(f"{base}/v2/health/live", timeout=5).status_code == 200
        # The metrics port answers nothing else: no inference through it.
        assert httpx.post(f"{base}/v2/models/iris/infer", json={}, timeout=5).status_code == 404
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=STOP_TIMEOUT)
        assert process.returncode == 0, rest
        stopped = json.loads(rest.strip().splitlines()[-1])["stopped"]
        assert (stopped["acknowledged"], stopped["dead_lettered"]) == (200, 1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.delete(stream, f"{stream}-out", f"{stream}-dead")
        client.close()


def test_the_answer_schema_is_printed_and_reads_avro_answers(registry: Path) -> None:
    done = subprocess.run(
        [*modelport(registry, "iris", "--source", "x", "--sink", "y"), "--print-output-schema"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    schema = fastavro.parse_schema(json.loads(done.stdout))
    fields = [f["name"] for f in json.loads(done.stdout)["fields"]]
    assert fields[:2] == ["predict", "predict_proba"]
    assert {"_model", "_version", "_sha256", "_request_id"} <= set(fields)
    assert schema["type"] == "record"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "amqp://127.0.0.1/q"], "not a broker URL; give one of: kafka://"),
        (["--source", "redis://127.0.0.1:6379/0"], "stream="),
        (["--format", "oip", "--features", "a,b"], "--features applies to --format json"),
        (["--format", "avro"], "--format avro needs exactly one of --schema"),
    ],
)
def test_mistakes_are_refused_before_anything_is_consumed(
    registry: Path, args: list[str], message: str
) -> None:
    base = {
        "--source": "redis://127.0.0.1:6379/0?stream=s",
        "--sink": "redis://127.0.0.1:6379/0?stream=o",
    }
    given = dict(zip(args[::2], args[1::2], strict=True))
    merged = [item for pair in {**base, **given}.items() for item in pair]
    done = subprocess.run(
        modelport(registry, "iris", *merged),
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_model_is_refused(registry: Path) -> None:
    done = subprocess.run(
        modelport(
            registry,
            "nosuch",
            "--source",
            "redis://127.0.0.1:6379/0?stream=s",
            "--sink",
            "redis://127.0.0.1:6379/0?stream=o",
        ),
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert done.returncode == 1
    assert "nosuch" in done.stderr
    assert "Traceback" not in done.stderr


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MODELPORT_REGISTRY"}
