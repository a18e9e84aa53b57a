"""The Kubernetes manifests under deploy/kubernetes render, validate, and agree with the server.

Rendering uses the real `kubectl kustomize`; the args are parsed by modelport's own `serve`
command, so a renamed flag or a moved port fails here rather than in a cluster. The KServe
objects are checked against the kserve SDK's own types by tests/clients/kserve_validate.py, in
the clients' venv (MODELPORT_CLIENTS_PYTHON): kserve's protobufs clash with modelport's.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from modelport import worker
from modelport.cli.serve import serve
from modelport.transports import grpc as grpc_transport

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
TREES = ["base", "overlays/single", "overlays/shared", "overlays/kserve"]
SERVER_TREES = ["base", "overlays/single", "overlays/shared"]
KUBERNETES_VERSION = "1.32.0"
HEALTH_PATHS = {"/v2/health/live", "/v2/health/ready"}
CLIENTS_PYTHON = os.environ.get("MODELPORT_CLIENTS_PYTHON", "")
KSERVE_VALIDATE = Path(__file__).resolve().parents[2] / "clients" / "kserve_validate.py"
needs_kserve_sdk = pytest.mark.skipif(
    not CLIENTS_PYTHON,
    reason="MODELPORT_CLIENTS_PYTHON is unset: the kserve SDK lives in the clients venv "
    "(`make clients`); `make test` points it there",
)


def render(tree: str) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize` renders for `tree`."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests cannot be rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / tree)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def parse_serve(args: list[str]) -> dict[str, Any]:
    """The parameters `modelport serve` would run with (args[0] is the subcommand)."""
    assert args[0] == "serve"
    ctx = serve.make_context("serve", list(args[1:]), resilient_parsing=False)
    return dict(ctx.params)


@pytest.mark.parametrize("tree", TREES)
def test_renders(tree: str) -> None:
    assert render(tree)


@pytest.mark.parametrize("tree", TREES)
def test_built_in_kinds_validate_strictly(tree: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for doc in render(tree):
        if doc["apiVersion"].split("/")[0].endswith((".coreos.com", ".kserve.io")):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    if tree != "overlays/kserve":
        assert checked >= 3


def test_strict_validation_rejects_an_unknown_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    service = one(render("base"), "Service")
    service["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}


def probe_port(probe: dict[str, Any], ports: dict[str, int]) -> int:
    port = (probe.get("httpGet") or probe.get("grpc"))["port"]
    return ports[port] if isinstance(port, str) else int(port)


@pytest.mark.parametrize("tree", SERVER_TREES)
def test_args_parse_and_agree_with_ports_and_probes(tree: str) -> None:
    deployment = one(render(tree), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    params = parse_serve(container["args"])
    ports = container_ports(container)
    assert ports == {
        "http": params["http_port"],
        "grpc": params["grpc_port"],
        "metrics": params["metrics_port"],
    }
    for name in ("startupProbe", "readinessProbe"):
        probe = container[name]
        assert probe["httpGet"]["path"] in HEALTH_PATHS
        assert probe_port(probe, ports) == params["metrics_port"]
    assert probe_port(container["livenessProbe"], ports) == params["grpc_port"]
    assert params["require_auth"]
    assert params["host"] == "0.0.0.0"


def test_single_overlay_serves_its_volume_registry() -> None:
    deployment = one(render("overlays/single"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    registry = str(parse_serve(container["args"])["registry"])
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(registry.startswith(m + "/") for m in mounts)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_shared_overlay_artifacts_are_on_its_shared_volume() -> None:
    docs = render("overlays/shared")
    secret = one(docs, "Secret")
    url = base64.b64decode(secret["data"]["url"]).decode()
    artifacts = url.split("artifacts=", 1)[1]
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert any(artifacts.startswith(m["mountPath"]) for m in container["volumeMounts"])
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kserve_runtime_args_parse(tmp_path: Path) -> None:
    runtime = one(render("overlays/kserve"), "ClusterServingRuntime")
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["args"][1] == "/mnt/models"
    # The parser checks that PATH exists: stand a local directory in for KServe's mount.
    args = [a.replace("{{.Name}}", "iris") for a in container["args"]]
    args[1] = str(tmp_path)
    params = parse_serve(args)
    assert params["model_name"] == "iris"
    assert params["http_port"] in {p["containerPort"] for p in container["ports"]}
    # KServe scrapes the port its annotation names: /metrics is on the REST port unless
    # --metrics-port moves it.
    scraped = runtime["spec"]["annotations"]["prometheus.kserve.io/port"]
    assert int(scraped) == (params["metrics_port"] or params["http_port"])


def test_unknown_flag_is_rejected_by_the_parser() -> None:
    with pytest.raises(click.UsageError):
        parse_serve(["serve", "--no-such-flag"])


@pytest.mark.parametrize("tree", SERVER_TREES)
def test_grace_period_covers_prestop_and_drain(tree: str) -> None:
    spec = one(render(tree), "Deployment")["spec"]["template"]["spec"]
    sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = worker.DRAIN_SECONDS + worker.GRACEFUL_SHUTDOWN_SECONDS + grpc_transport.GRACE_SECONDS
    assert spec["terminationGracePeriodSeconds"] >= sleep + drain


def test_kserve_runtime_serves_the_formats_protocols_and_model() -> None:
    docs = render("overlays/kserve")
    spec = one(docs, "ClusterServingRuntime")["spec"]
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert formats >= {"sklearn", "xgboost", "lightgbm", "onnx", "mlflow"}
    assert {"v1", "v2"} <= set(spec["protocolVersions"])
    args = spec["containers"][0]["args"]
    assert "{{.Name}}" in args
    assert "/mnt/models" in args
    model = one(docs, "InferenceService")["spec"]["predictor"]["model"]
    assert model["runtime"] == one(docs, "ClusterServingRuntime")["metadata"]["name"]
    assert model["runtime"] == "modelport"


def kserve_validate(docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLIENTS_PYTHON, str(KSERVE_VALIDATE)],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_kserve_sdk
def test_kserve_objects_validate_against_the_kserve_sdk() -> None:
    done = kserve_validate(render("overlays/kserve"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "ok ClusterServingRuntime/modelport",
        "ok InferenceService/iris",
    ]


def container(runtime: dict[str, Any]) -> dict[str, Any]:
    return runtime["spec"]["containers"][0]


def isvc_model(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]["model"]


Mutation = Callable[[dict[str, Any], dict[str, Any]], None]
BROKEN: dict[str, tuple[Mutation, str]] = {
    "unknown field deep inside": (
        lambda rt, isvc: container(rt).update(argz=["serve"]),
        "ClusterServingRuntime/modelport: spec.containers[0].argz: unknown field",
    ),
    "a string for a list": (
        lambda rt, isvc: rt["spec"].update(protocolVersions="v2"),
        "ClusterServingRuntime/modelport: spec.protocolVersions: expected a list",
    ),
    "a string for a port": (
        lambda rt, isvc: container(rt)["ports"][0].update(containerPort="8080"),
        "spec.containers[0].ports[0].containerPort: expected int, got a string '8080'",
    ),
    "a protocol KServe does not know": (
        lambda rt, isvc: rt["spec"]["protocolVersions"].append("v3"),
        "spec.protocolVersions[2]: 'v3' is not one of",
    ),
    "a required field missing": (
        lambda rt, isvc: isvc_model(isvc).pop("modelFormat"),
        "InferenceService/iris: spec.predictor.model.modelFormat: required field is missing",
    ),
    "a container without a name": (
        lambda rt, isvc: container(rt).pop("name"),
        "spec.containers[0].name: required field is missing (V1Container)",
    ),
    "a format the runtime does not serve": (
        lambda rt, isvc: isvc_model(isvc)["modelFormat"].update(name="pytorch"),
        "spec.predictor.model.modelFormat.name: runtime 'modelport' does not support 'pytorch'",
    ),
    "a kind at the wrong apiVersion": (
        lambda rt, isvc: isvc.update(apiVersion="serving.kserve.io/v1alpha1"),
        "apiVersion/kind: serving.kserve.io/v1alpha1 InferenceService is not one of",
    ),
}


@needs_kserve_sdk
@pytest.mark.parametrize("case", BROKEN)
def test_kserve_validation_rejects(case: str) -> None:
    mutate, message = BROKEN[case]
    docs = render("overlays/kserve")
    runtime = copy.deepcopy(one(docs, "ClusterServingRuntime"))
    isvc = copy.deepcopy(one(docs, "InferenceService"))
    mutate(runtime, isvc)
    done = kserve_validate([runtime, isvc])
    assert done.returncode == 1, done.stdout + done.stderr
    invalid = [line for line in done.stdout.splitlines() if line.startswith("invalid ")]
    assert len(invalid) == 1, done.stdout
    assert message in invalid[0]


@needs_kserve_sdk
def test_kserve_validation_needs_a_kserve_object() -> None:
    done = kserve_validate(render("base"))
    assert done.returncode == 1
    assert "no KServe documents" in done.stderr
