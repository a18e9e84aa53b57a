"""Metrics, access log and inference log of a real server: N requests in, N counted, N recorded.

Includes the sink going away mid-run (PostgreSQL refusing connections) and coming back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from modelport.demo import build_iris
from modelport.inference_log.location import open_store
from modelport.transports.grpc_gen import inference_pb2 as pb
from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

from .conftest import ServerFactory, eventually, free_port, refuse_connections

pytestmark = pytest.mark.integration

ROW = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def samples(http: httpx.Client, path: str = "/metrics") -> dict[str, list[Any]]:
    """Metric samples by name, from the server's exposition."""
    response = http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def total(found: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(
        s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def rest_infer(http: httpx.Client, count: int, rows: list[list[float]] | None = None) -> list[str]:
    """`count` inferences over 8 threads; the request ids the server answered with."""

    def one(i: int) -> str:
        row = dict(ROW, data=(rows[i % len(rows)] if rows else ROW["data"]))
        response = http.post("/v2/models/iris/infer", json={"inputs": [row]})
        assert response.status_code == 200, response.text
        return response.headers["x-request-id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def grpc_infer(address: str, count: int) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        data = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        for _ in range(count):
            request = pb.ModelInferRequest(model_name="iris")
            tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
            tensor.contents.fp32_contents.extend(data.ravel().tolist())
            stub.ModelInfer(request, timeout=30)


def test_counts_and_records_match_with_two_workers_and_both_protocols(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    grpc_port = free_port()
    server = start_server(
        "--registry", str(registry_dir), "--workers", "2", "--grpc-port", str(grpc_port)
    )
    rest_n, grpc_n = 240, 40
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        ids = rest_infer(http, rest_n)
        grpc_infer(server.grpc_address, grpc_n)
        short = dict(ROW, shape=[1, 3], data=[1.0, 2.0, 3.0])
        bad = http.post("/v2/models/iris/infer", json={"inputs": [short]})
        assert bad.status_code == 400

        def counted() -> bool:
            found = samples(http)
            return (
                total(
                    found, "modelport_requests_total", endpoint="infer", protocol="rest", code="200"
                )
                == rest_n
                and total(found, "modelport_requests_total", endpoint="infer", protocol="grpc")
                == grpc_n
            )

        # Polled: each process publishes its metrics in a snapshot a fraction of a second
        # later, and the server announces no snapshot.
        eventually(counted, "the requests counted across both workers")
        found = samples(http)
        assert total(found, "modelport_requests_total", endpoint="infer", code="400") == 1
        hist = total(
            found, "modelport_request_duration_seconds_count", model="iris", protocol="rest"
        )
        assert hist == rest_n + 1
        assert total(found, "modelport_batch_size_sum", model="iris") >= rest_n + grpc_n
        assert total(found, "modelport_model_load_seconds", model="iris", version="1") > 0
    assert server.stop() == 0
    with open_store(str(registry_dir / "inference-log.sqlite")) as store:
        records = store.read(model="iris")
    assert len(records) == rest_n + grpc_n + 1
    assert len({r.request_id for r in records}) == len(records)
    assert set(ids) <= {r.request_id for r in records}
    ok = [r for r in records if r.status in ("200", "OK")]
    assert len(ok) == rest_n + grpc_n
    first = next(r for r in ok if r.request_id == ids[0])
    assert first.model == "iris"
    assert first.version == 1
    assert first.protocol == "rest"
    # The log keeps the float32 values the model was given: copied, not computed, so exact.
    np.testing.assert_array_equal(
        np.asarray(first.inputs["input-0"], np.float32), np.float32([[5.1, 3.5, 1.4, 0.2]])
    )
    assert first.outputs is not None
    assert set(first.outputs) == {"predict", "predict_proba"}
    failed = [r for r in records if r.status == "400"]
    assert len(failed) == 1
    assert "shape" in failed[0].error


def test_access_log_has_one_json_record_per_request(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server("--registry", str(registry_dir), "--inference-log", "off")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        ids = rest_infer(http, 5)
        assert http.get("/v2/models/iris").status_code == 200
        assert http.get("/v2/models/nope").status_code == 404
    assert server.stop() == 0
    access = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and '"modelport.access"' in line
    ]
    assert len(access) == 7, server.log()
    by_id = {entry["request_id"]: entry for entry in access}
    for rid in ids:
        entry = by_id[rid]
        assert entry["model"] == "iris"
        assert entry["version"] == "1"
        assert entry["protocol"] == "rest"
        assert entry["endpoint"] == "infer"
        assert entry["status"] == "200"
        assert entry["latency_ms"] > 0
    assert sorted(e["status"] for e in access if e["endpoint"] == "metadata") == ["200", "404"]


def test_metrics_port_and_switches(start_server: ServerFactory, registry_dir: Path) -> None:
    port = free_port()
    server = start_server("--registry", str(registry_dir), "--metrics-port", str(port))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        rest_infer(http, 3)
        moved = http.get("/metrics")
        assert moved.status_code == 404
        assert str(port) in moved.json()["error"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as metrics:
        # Polled: metrics are published in periodic snapshots, which the server does not announce.
        eventually(
            lambda: total(samples(metrics), "modelport_requests_total", endpoint="infer") == 3,
            "three inferences counted on the metrics port",
        )
        # Probes may use the metrics port; nothing else of the API is there.
        assert metrics.get("/v2/health/ready").status_code == 200
        assert metrics.get("/v2/health/live").status_code == 200
        assert metrics.get("/v2/models/iris").status_code == 404
    off = start_server("--registry", str(registry_dir), "--no-metrics", "--inference-log", "off")
    with httpx.Client(base_url=off.url, timeout=30.0) as http:
        response = http.get("/metrics")
        assert response.status_code == 404
        assert "--no-metrics" in response.json()["error"]
        feedback = http.post("/v2/models/iris/feedback", json={"request_ids": ["a"], "labels": [0]})
        assert feedback.status_code == 501
        assert "inference log" in feedback.json()["error"]


# -- the sink goes away and comes back -------------------------------------------------------


def test_no_record_is_lost_while_postgresql_refuses_connections(
    start_server: ServerFactory,
    registry_dir: Path,
    tmp_path: Path,
    log_database: tuple[str, sa.Engine, str],
) -> None:
    url, admin, name = log_database
    server = start_server(
        "--registry", str(registry_dir),
        "--inference-log", url,
        "--inference-log-journal", str(tmp_path / "journal"),
    )  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        before = rest_infer(http, 60)
        with open_store(url) as store:
            # Polled: the writer thread stores records in the background and logs nothing
            # while all is well.
            eventually(lambda: store.count("iris") == 60, "the first records in PostgreSQL")
        refuse_connections(admin, name, refuse=True)
        during = rest_infer(http, 90)
        # Polled, as are the metrics below: they reach a scrape through periodic snapshots.
        eventually(
            lambda: total(samples(http), "modelport_inference_log_backlog") > 0,
            "records held back while PostgreSQL refuses connections",
        )
        refuse_connections(admin, name, refuse=False)
        eventually(
            lambda: total(samples(http), "modelport_inference_log_backlog") == 0,
            "the backlog delivered once PostgreSQL is back",
        )
        after = rest_infer(http, 30)
    assert server.stop() == 0
    with open_store(url) as store:
        records = store.read(model="iris")
    assert sorted(r.request_id for r in records) == sorted(before + during + after)


def test_past_the_capacity_the_server_sheds_or_drops_as_configured(
    start_server: ServerFactory,
    registry_dir: Path,
    tmp_path: Path,
    log_database: tuple[str, sa.Engine, str],
) -> None:
    url, admin, name = log_database
    refuse_connections(admin, name, refuse=True)
    common = (
        "--registry",
        str(registry_dir),
        "--inference-log",
        url,
        "--inference-log-capacity",
        "5",
    )
    shed = start_server(*common, "--inference-log-journal", str(tmp_path / "j1"))
    with httpx.Client(base_url=shed.url, timeout=30.0) as http:
        rest_infer(http, 5)
        # Polled: the server sheds once the writer has found PostgreSQL refusing and five
        # records wait; only its answers tell when that is.
        eventually(
            lambda: http.post("/v2/models/iris/infer", json={"inputs": [ROW]}).status_code == 503,
            "inferences shed once five records wait",
        )
        refused = http.post("/v2/models/iris/infer", json={"inputs": [ROW]})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "inference log" in refused.json()["error"]
    drop = start_server(
        *common, "--inference-log-journal", str(tmp_path / "j2"), "--inference-log-overflow", "drop"
    )
    with httpx.Client(base_url=drop.url, timeout=30.0) as http:
        rest_infer(http, 12)
        # Polled: the count reaches a scrape through a periodic snapshot.
        eventually(
            lambda: total(samples(http), "modelport_inference_log_dropped_total") == 7,
            "seven records dropped past a capacity of five",
        )


def test_console_traces_have_request_queue_batch_and_predict_spans(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server(
        "--registry", str(registry_dir), "--inference-log", "off", "--trace-exporter", "console"
    )
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        [rid] = rest_infer(http, 1)
    assert server.stop() == 0
    text = server.log()
    decoder = json.JSONDecoder()
    spans = []
    index = text.find('{\n    "name"')
    while index >= 0:
        span, end = decoder.raw_decode(text, index)
        spans.append(span)
        index = text.find('{\n    "name"', end)
    traced = [s for s in spans if s["attributes"].get("modelport.request_id") == rid]
    assert len(traced) == 1, text
    root = traced[0]
    assert root["name"] == "infer"
    assert root["attributes"]["modelport.model"] == "iris"
    trace_id = root["context"]["trace_id"]
    children = {s["name"]: s for s in spans if s["context"]["trace_id"] == trace_id}
    assert set(children) == {"infer", "queue", "batch", "predict"}
    for name in ("queue", "batch", "predict"):
        assert children[name]["parent_id"] == root["context"]["span_id"]
        assert children[name]["start_time"] >= root["start_time"]
        assert children[name]["end_time"] <= root["end_time"]


# -- drift and feedback -----------------------------------------------------------------------


@pytest.fixture
def profiled_registry(tmp_path: Path) -> Path:
    """iris version 1 pushed with the iris data as its reference data."""
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    reference = tmp_path / "iris.csv"
    header = "sepal length,sepal width,petal length,petal width"
    np.savetxt(reference, x, delimiter=",", header=header, comments="", fmt="%.1f")
    location = tmp_path / "registry"
    path, _, meta = build_iris(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "modelport", "models", "push", str(path), "--name", "iris",
         "--meta", f"train_accuracy={meta['train_accuracy']}",
         "--reference-data", str(reference), "--registry", str(location)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return location


def test_drift_shows_shifted_inputs_and_feedback_gives_live_accuracy(
    start_server: ServerFactory, profiled_registry: Path
) -> None:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    rows = [[float(v) for v in row] for row in x]
    server = start_server("--registry", str(profiled_registry))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        ids = rest_infer(http, len(rows), rows)
        report = http.get("/v2/models/iris/drift").json()
        assert report["status"] == "ok", report
        assert len(report["features"]) == 4
        assert all(f["psi"] < 0.01 for f in report["features"]), report

        rest_infer(http, len(rows), [[v + 3.0 for v in row] for row in rows])
        shifted = http.get("/v2/models/iris/versions/1/drift").json()
        assert all(f["psi"] > 0.25 for f in shifted["features"]), shifted
        assert all(f["ks"] > 0.3 for f in shifted["features"]), shifted
        found = samples(http)
        assert total(found, "modelport_drift_psi", model="iris", feature="petal length") > 0.25

        answer = http.post(
            "/v2/models/iris/feedback",
            json={"request_ids": ids, "labels": [int(v) for v in y]},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["received"] == len(ids)
        assert body["matched"] == len(ids)
        accuracy = body["versions"]["1"]["accuracy"]
        meta = http.get("/v2/models/iris").json()["parameters"]
        assert accuracy == pytest.approx(float(meta["meta.train_accuracy"]), abs=1e-4)
        assert total(samples(http), "modelport_live_accuracy", model="iris") == pytest.approx(
            accuracy, abs=1e-6
        )
        bad = http.post("/v2/models/iris/feedback", json={"request_ids": ids[:2], "labels": [1]})
        assert bad.status_code == 400
        assert "labels" in bad.json()["error"]


def test_sampling_and_redaction_from_the_config_file(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text('[models.iris]\nlog_sample_rate = 0.5\nlog_redact = ["input-0"]\n')
    server = start_server("--registry", str(registry_dir), "--config", str(config))
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        ids = rest_infer(http, 200)
    assert server.stop() == 0
    with open_store(str(registry_dir / "inference-log.sqlite")) as store:
        records = store.read(model="iris")
    # 200 draws at one half: fewer than 50 or more than 150 kept has odds below 1e-12.
    assert 50 <= len(records) <= 150
    assert {r.request_id for r in records} <= set(ids)
    assert all(r.inputs == {"input-0": "[redacted]"} for r in records)
    assert all(r.outputs is not None and "predict" in r.outputs for r in records)
