"""The `modelport` command line: push, list, show, help, and how errors are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from modelport.registry.store import Registry

from .conftest import fails, ok, run

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
    "outputs": [{"name": "total", "datatype": "FP64", "shape": [-1]}],
}


@pytest.fixture
def registry(tmp_path: Path) -> str:
    return str(tmp_path / "registry")


@pytest.fixture(scope="module")
def summer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cloudpickled object with predict and no signature of its own."""

    class Summer:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return {"total": np.sum(inputs["x"], axis=1)}

    path = tmp_path_factory.mktemp("summer") / "summer.cloudpickle"
    path.write_bytes(cloudpickle.dumps(Summer()))
    return path


def test_push_prints_the_version(registry: str, iris_file: Path, tmp_path: Path) -> None:
    assert ok(run("models", "push", str(iris_file), "--name", "iris", "--registry", registry)) == (
        "1\n"
    )
    other = tmp_path / "other.skops"
    other.write_bytes(iris_file.read_bytes())  # same bytes under another name: a duplicate
    fails(
        run("models", "push", str(other), "--name", "iris", "--registry", registry),
        "already has this artifact as version 1",
    )
    assert ok(run("models", "push", str(iris_file), "--name", "flowers", "--registry", registry))
    with Registry.open(registry) as store:
        assert store.models() == ["flowers", "iris"]


def test_push_json_and_meta(registry: str, iris_file: Path) -> None:
    out = ok(
        run(
            "models", "push", str(iris_file), "--name", "iris", "--registry", registry,
            "--meta", "team=vision", "--meta", "ticket=ML-42", "--meta", "note=a=b", "--json",
        )
    )  # fmt: skip
    pushed = json.loads(out)
    assert pushed["name"] == "iris"
    assert pushed["version"] == 1
    assert pushed["format"] == "sklearn"
    assert pushed["metadata"] == {"team": "vision", "ticket": "ML-42", "note": "a=b"}
    assert pushed["source"] == "iris.skops"
    assert len(pushed["digest"]) == 64
    assert pushed["pickle"] is False
    shown = json.loads(ok(run("models", "show", "iris:1", "--json", "--registry", registry)))
    assert shown == {**pushed, "aliases": []}


@pytest.mark.parametrize("meta", ["novalue", "=value"])
def test_bad_meta(registry: str, iris_file: Path, meta: str) -> None:
    push = ["models", "push", str(iris_file), "--name", "iris", "--registry", registry]
    fails(run(*push, "--meta", meta), "--meta expects KEY=VALUE")


def test_python_model_needs_a_signature(registry: str, summer_file: Path, tmp_path: Path) -> None:
    push = ["models", "push", str(summer_file), "--name", "summer", "--registry", registry]
    fails(run(*push), "--trust-pickle")
    fails(run(*push, "--format", "python", "--trust-pickle"), "--signature")

    signature = tmp_path / "signature.json"
    signature.write_text(json.dumps(SIGNATURE))
    out = ok(run(*push, "--format", "python", "--trust-pickle", "--signature", str(signature)))
    assert out == "1\n"
    shown = json.loads(ok(run("models", "show", "summer", "--json", "--registry", registry)))
    assert shown["signature"] == SIGNATURE
    assert shown["format"] == "python"
    assert shown["pickle"] is True
    assert shown["trusted_pickle"] is True

    import modelport

    model = modelport.load("summer", registry=registry)
    try:
        total = model.predict(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))["total"]
    finally:
        model.close()
    assert total.tolist() == [6.0, 15.0]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ("--signature", "JSON")),
        ('{"inputs": []}', ("outputs",)),
        ('{"inputs": [{"name": "x"}], "outputs": []}', ("datatype",)),
    ],
)
def test_bad_signature_file(
    registry: str, summer_file: Path, tmp_path: Path, content: str, words: tuple[str, ...]
) -> None:
    signature = tmp_path / "signature.json"
    signature.write_text(content)
    push = ["models", "push", str(summer_file), "--name", "summer", "--registry", registry]
    fails(run(*push, "--format", "python", "--trust-pickle", "--signature", str(signature)), *words)


def test_list_table(demo_registry: Path) -> None:
    out = ok(run("models", "list", "--registry", str(demo_registry)))
    with Registry.open(demo_registry) as store:
        latest = store.latest()
    assert len(latest) == 5
    for mv in latest:
        (line,) = [row for row in out.splitlines() if f" {mv.name} " in row]
        assert mv.digest[:12] in line
        assert mv.format in line


def test_list_json(demo_registry: Path) -> None:
    rows = json.loads(ok(run("models", "list", "--json", "--registry", str(demo_registry))))
    assert sorted(r["name"] for r in rows) == [
        "diabetes-lightgbm",
        "greeting-language",
        "iris",
        "iris-onnx",
        "iris-xgboost",
    ]
    assert all(r["versions"] == 1 for r in rows)


def test_list_empty_registry(registry: str) -> None:
    Registry.open(registry).close()
    assert "no models registered" in ok(run("models", "list", "--registry", registry))


@pytest.mark.parametrize("command", [["models", "list"], ["models", "show", "iris"]])
def test_reading_a_missing_registry_creates_nothing(registry: str, command: list[str]) -> None:
    fails(run(*command, "--registry", registry), "no registry", "modelport demo")
    assert not Path(registry).exists()


def test_registry_from_the_environment(demo_registry: Path) -> None:
    out = ok(run("models", "list", "--json", env={"MODELPORT_REGISTRY": str(demo_registry)}))
    assert len(json.loads(out)) == 5


@pytest.mark.parametrize("ref", ["iris", "iris:1"])
def test_show_table(demo_registry: Path, ref: str) -> None:
    out = ok(run("models", "show", ref, "--registry", str(demo_registry)))
    with Registry.open(demo_registry) as store:
        mv = store.get("iris")
    assert "iris version 1" in out
    assert mv.digest in out
    assert "sklearn" in out
    assert "input-0" in out
    assert "predict_proba" in out
    assert "FP32" in out
    assert "meta dataset" in out
    # The demo compiles iris at push; show names the compiled artifact and its check.
    assert mv.compiled is not None
    assert mv.compiled.digest in out
    assert "outputs match" in out


def test_show_the_bytes_model(demo_registry: Path) -> None:
    out = ok(run("models", "show", "greeting-language", "--registry", str(demo_registry)))
    with Registry.open(demo_registry) as store:
        mv = store.get("greeting-language")
    assert mv.format == "onnx"
    assert mv.digest in out
    for word in ("text", "language", "BYTES", "meta labels", "en,fr,es,de"):
        assert word in out


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("nope", ("nope",)),
        ("iris:7", ("iris", "7")),
        ("iris:x", ("version",)),
        ("../etc", ("invalid model name",)),
    ],
)
def test_show_errors(demo_registry: Path, ref: str, words: tuple[str, ...]) -> None:
    message = fails(run("models", "show", ref, "--registry", str(demo_registry)), *words)
    assert str(demo_registry) not in message


def test_push_errors(registry: str, iris_file: Path, tmp_path: Path) -> None:
    push = ["models", "push", "--registry", registry]
    fails(run(*push, str(iris_file), "--name", "bad/name"), "invalid model name")
    fails(run(*push, str(iris_file), "--name", "iris", "--format", "tensorflow"), "tensorflow")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fails(run(*push, str(text), "--name", "notes"), "--format")
    with Registry.open(registry) as store:
        assert store.models() == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--help"], ["serve", "models", "demo"]),
        (["serve", "--help"], ["--registry", "--http-port", "--config", "--host", "--model"]),
        (["models", "--help"], ["push", "list", "show"]),
        (["models", "push", "--help"], ["--trust-pickle", "--signature", "--meta", "--json"]),
    ],
)
def test_help(args: list[str], words: list[str]) -> None:
    out = ok(run(*args))
    for word in words:
        assert word in out


def test_version() -> None:
    import modelport

    assert modelport.__version__ in ok(run("--version"))


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout


def test_serve_reports_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "modelport.toml"
    config.write_text("[serve]\nmax_body_bytes = 10\nflavour = 'x'\n")
    fails(run("serve", "--config", str(config), "--registry", str(tmp_path)), "flavour")
    config.write_text("[serve]\nmax_body_bytes = 10\n")
    fails(run("serve", "--config", str(config), "--registry", str(tmp_path)), "max_body_bytes")
    config.write_text("[serve\n")
    fails(run("serve", "--config", str(config), "--registry", str(tmp_path)), "TOML")
    config.write_text('[serve]\nlog_level = "verbose"\n')
    fails(run("serve", "--config", str(config), "--registry", str(tmp_path)), "log_level")
    config.write_text('[serve]\nhttp_port = "8080"\n')
    fails(run("serve", "--config", str(config), "--registry", str(tmp_path)), "http_port")


def test_serve_refuses_a_missing_registry(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    fails(run("serve", "--registry", str(missing), "--http-port", "0"), "no registry", "demo")
    assert not missing.exists()
