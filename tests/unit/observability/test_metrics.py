"""Metrics: what one process counts, how processes add up at a scrape, the exposition text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelport.observability.metrics import LATENCY_BUCKETS, Metrics

OTHER_PID = 999_999_999
"""The snapshot name of a process that is not this one."""


def lines(metrics: Metrics) -> list[str]:
    return metrics.render().decode().splitlines()


def samples(metrics: Metrics, prefix: str) -> dict[str, str]:
    """The exposition's samples whose name starts with `prefix`: series -> value text."""
    found = {}
    for line in lines(metrics):
        if line.startswith(prefix):
            series, value = line.rsplit(" ", 1)
            found[series] = value
    return found


def as_other_process(metrics: Metrics) -> None:
    """Turn this process's snapshot into that of another, still running, process."""
    metrics.flush()
    os.replace(metrics.directory / f"{os.getpid()}.json", metrics.directory / f"{OTHER_PID}.json")


def test_every_family_is_described_even_before_anything_is_counted(tmp_path: Path) -> None:
    text = lines(Metrics(tmp_path))
    assert text[:2] == [
        "# HELP modelport_requests_total Requests answered, by model, version, protocol, "
        "endpoint and status code.",
        "# TYPE modelport_requests_total counter",
    ]
    types = [line.split()[2:] for line in text if line.startswith("# TYPE")]
    assert types == [
        ["modelport_requests_total", "counter"],
        ["modelport_request_duration_seconds", "histogram"],
        ["modelport_batch_size", "histogram"],
        ["modelport_queue_depth", "gauge"],
        ["modelport_requests_in_flight", "gauge"],
        ["modelport_model_load_seconds", "gauge"],
        ["modelport_inference_log_backlog", "gauge"],
        ["modelport_inference_log_dropped_total", "counter"],
        ["modelport_drift_psi", "gauge"],
        ["modelport_drift_ks", "gauge"],
        ["modelport_feedback_rows", "gauge"],
        ["modelport_live_accuracy", "gauge"],
        ["modelport_live_mae", "gauge"],
        ["modelport_stream_messages_total", "counter"],
        ["modelport_stream_dead_letters_total", "counter"],
        ["modelport_stream_lag", "gauge"],
        ["modelport_stream_in_flight", "gauge"],
        ["modelport_stream_latency_seconds", "histogram"],
    ]
    assert all(line.startswith("#") for line in text)


def test_requests_are_counted_and_their_latency_bucketed(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.request("iris", "1", "rest", "infer", "200", 0.003)
    metrics.request("iris", "1", "rest", "infer", "200", 0.02)
    metrics.request("iris", "1", "grpc", "infer", "INVALID_ARGUMENT", 0.0001)

    assert samples(metrics, "modelport_requests_total{") == {
        'modelport_requests_total{model="iris",version="1",protocol="grpc",endpoint="infer",'
        'code="INVALID_ARGUMENT"}': "1.0",
        'modelport_requests_total{model="iris",version="1",protocol="rest",endpoint="infer",'
        'code="200"}': "2.0",
    }
    rest = 'model="iris",version="1",protocol="rest",endpoint="infer"'
    buckets = samples(metrics, f"modelport_request_duration_seconds_bucket{{{rest}")
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets[f'modelport_request_duration_seconds_bucket{{{rest},le="0.0025"}}'] == "0"
    assert buckets[f'modelport_request_duration_seconds_bucket{{{rest},le="0.005"}}'] == "1"
    assert buckets[f'modelport_request_duration_seconds_bucket{{{rest},le="0.025"}}'] == "2"
    assert buckets[f'modelport_request_duration_seconds_bucket{{{rest},le="+Inf"}}'] == "2"
    totals = samples(metrics, "modelport_request_duration_seconds_")
    assert totals[f"modelport_request_duration_seconds_count{{{rest}}}"] == "2"
    assert float(totals[f"modelport_request_duration_seconds_sum{{{rest}}}"]) == pytest.approx(
        0.023
    )


def test_batches_set_the_queue_depth_and_count_rows(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.batch("iris", 2, rows=3, queued=5)
    metrics.batch("iris", 2, rows=1, queued=4)
    assert samples(metrics, "modelport_queue_depth{") == {
        'modelport_queue_depth{model="iris",version="2"}': "4.0"
    }
    sizes = samples(metrics, "modelport_batch_size_")
    assert sizes['modelport_batch_size_bucket{model="iris",version="2",le="1.0"}'] == "1"
    assert sizes['modelport_batch_size_bucket{model="iris",version="2",le="4.0"}'] == "2"
    assert sizes['modelport_batch_size_count{model="iris",version="2"}'] == "2"
    assert sizes['modelport_batch_size_sum{model="iris",version="2"}'] == "4.0"


def test_a_scrape_adds_up_every_process(tmp_path: Path) -> None:
    other = Metrics(tmp_path)
    other.request("iris", "1", "rest", "infer", "200", 0.001)
    other.queue_depth.labels("iris", "1").set(3)
    other.load_seconds.labels("iris", "1").set(2.5)
    other.drift_psi.labels("iris", "1", "x").set(0.4)
    as_other_process(other)

    this = Metrics(tmp_path)
    this.request("iris", "1", "rest", "infer", "200", 0.001)
    this.queue_depth.labels("iris", "1").set(2)
    this.load_seconds.labels("iris", "1").set(1.0)
    this.drift_psi.labels("iris", "1", "x").set(0.1)  # the newer value wins

    assert samples(this, "modelport_requests_total{") == {
        'modelport_requests_total{model="iris",version="1",protocol="rest",endpoint="infer",'
        'code="200"}': "2.0"
    }
    assert samples(this, "modelport_queue_depth{") == {
        'modelport_queue_depth{model="iris",version="1"}': "5.0"
    }
    assert samples(this, "modelport_model_load_seconds{") == {
        'modelport_model_load_seconds{model="iris",version="1"}': "2.5"
    }
    assert samples(this, "modelport_drift_psi{") == {
        'modelport_drift_psi{model="iris",version="1",feature="x"}': "0.1"
    }


def test_a_process_that_is_gone_keeps_its_counts_but_not_its_live_gauges(tmp_path: Path) -> None:
    other = Metrics(tmp_path)
    other.request("iris", "1", "rest", "infer", "200", 0.001)
    other.log_dropped.inc(3)
    other.log_backlog.set(7)
    as_other_process(other)

    this = Metrics(tmp_path)
    this.log_backlog.set(1)
    assert samples(this, "modelport_inference_log_backlog ") == {
        "modelport_inference_log_backlog": "8.0"
    }
    this.process_gone(OTHER_PID)
    this.process_gone(OTHER_PID)  # already gone: nothing to do
    assert samples(this, "modelport_inference_log_backlog ") == {
        "modelport_inference_log_backlog": "1.0"
    }
    assert samples(this, "modelport_inference_log_dropped_total ") == {
        "modelport_inference_log_dropped_total": "3.0"
    }
    assert len(samples(this, "modelport_requests_total{")) == 1


def test_a_snapshot_that_cannot_be_read_is_left_out(tmp_path: Path) -> None:
    (tmp_path / f"{OTHER_PID}.json").write_text("{half a snap")
    metrics = Metrics(tmp_path)
    metrics.log_dropped.inc()
    assert samples(metrics, "modelport_inference_log_dropped_total ") == {
        "modelport_inference_log_dropped_total": "1.0"
    }


def test_the_snapshot_file_holds_this_process_values(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.log_dropped.inc(2)
    metrics.flush()
    snapshot = json.loads((tmp_path / f"{os.getpid()}.json").read_text())
    assert snapshot["modelport_inference_log_dropped"] == [[[], 2.0]]
    assert not list(tmp_path.glob("*.tmp"))


def test_label_values_are_escaped(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.drift_ks.labels('a"b', "1", "back\\slash\nnewline").set(0.5)
    assert samples(metrics, "modelport_drift_ks{") == {
        'modelport_drift_ks{model="a\\"b",version="1",feature="back\\\\slash\\nnewline"}': "0.5"
    }
