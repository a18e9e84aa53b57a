"""The Grafana dashboard queries only metrics and labels the server defines, and shows them all."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from modelport.observability.metrics import Family, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "modelport-dashboard.json"

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series names each kind of family exposes.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"\b(modelport_[A-Za-z0-9_]*)\s*(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def series_of(family: Family) -> dict[str, frozenset[str]]:
    """Exposed series name -> the labels it carries."""
    labels = frozenset(family.labelnames)
    return {
        family.name + suffix: labels | ({"le"} if suffix == "_bucket" else set())
        for suffix in SUFFIXES[family.kind]
    }


def families(tmp: Path) -> list[Family]:
    """The metric families a server has."""
    return Metrics(tmp).families


def exposed(found: list[Family]) -> dict[str, frozenset[str]]:
    """Every series name the server can expose, with its labels."""
    series: dict[str, frozenset[str]] = {}
    for family in found:
        series.update(series_of(family))
    return series


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']!r}", text))
    return found


def problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What in `expr` names a series or label the server does not expose."""
    out = []
    # String literals (label values, regexes) may hold anything; only names count.
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    named = [m for m in _IDENTIFIER.findall(bare) if m.startswith("modelport_")]
    if not named:
        out.append("names no modelport metric")
    unknown = sorted(set(named) - set(series))
    out += [f"unknown metric {name}" for name in unknown]
    known = [name for name in named if name in series]
    for name, matchers in _SELECTOR.findall(bare):
        if name not in series:
            continue
        for label in _MATCHER_LABEL.findall(matchers):
            if label not in series[name] | TARGET_LABELS:
                out.append(f"{name} has no label {label!r}")
    carried = frozenset().union(*(series[name] for name in known)) | TARGET_LABELS
    label_values = re.fullmatch(r"\s*label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*", bare)
    if label_values and label_values.group(2) not in carried:
        out.append(f"label_values of missing label {label_values.group(2)!r}")
    for group in _GROUPING.findall(bare):
        for label in (part.strip() for part in group.split(",")):
            if label and label not in carried:
                out.append(f"groups by {label!r}, which none of its metrics carries")
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    return exposed(families(tmp_path_factory.mktemp("metrics")))


def test_every_query_names_only_exposed_metrics_and_labels(
    dashboard: dict[str, Any], series: dict[str, frozenset[str]]
) -> None:
    found = {
        f"{where}: {problem}"
        for where, expr in expressions(dashboard)
        for problem in problems(expr, series)
    }
    assert not found, "\n".join(sorted(found))


def test_every_metric_family_is_on_the_dashboard(dashboard: dict[str, Any], tmp_path: Path) -> None:
    text = " ".join(expr for _, expr in expressions(dashboard))
    missing = [
        family.name
        for family in families(tmp_path)
        if not any(name in text for name in series_of(family))
    ]
    assert not missing, f"metric families with no panel: {missing}"


def test_checker_rejects_unknown_metrics_and_labels(series: dict[str, frozenset[str]]) -> None:
    assert problems("rate(modelport_requests_total[5m])", series) == []
    assert problems("rate(modelport_requests[5m])", series) == ["unknown metric modelport_requests"]
    assert problems('modelport_queue_depth{code="200"}', series) == [
        "modelport_queue_depth has no label 'code'"
    ]
    assert problems("sum by (feature) (modelport_live_mae)", series) == [
        "groups by 'feature', which none of its metrics carries"
    ]
    assert problems("up", series) == ["names no modelport metric"]


def test_dashboard_imports_with_a_prometheus_input(dashboard: dict[str, Any]) -> None:
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert "model" in names
