"""The HPA of deploy/kubernetes/overlays/shared scales on a metric the real server exports."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

SHARED = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "overlays" / "shared"


def hpa_pods_metric() -> str:
    hpa = yaml.safe_load((SHARED / "hpa.yaml").read_text())
    names = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert len(names) == 1
    return str(names[0])


def test_adapter_rule_names_the_hpa_metric() -> None:
    config_map = yaml.safe_load((SHARED / "prometheus-adapter-rules.yaml").read_text())
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    name = hpa_pods_metric()
    assert any(rule["seriesQuery"].startswith(name + "{") for rule in rules)


def test_server_exports_the_hpa_metric_as_a_gauge(http: httpx.Client) -> None:
    name = hpa_pods_metric()
    body = http.get("/metrics").text
    assert f"# TYPE {name} gauge" in body.splitlines()
