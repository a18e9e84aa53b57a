"""`models alias|rollback|history|verify`, `push --meta-file` and `show` by alias, via the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelport.demo import build_iris
from modelport.registry.store import Registry

from ...conftest import write_iris_c001
from .conftest import fails, ok, run


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """A registry holding iris versions 1 (the demo's model) and 2 (C=0.01)."""
    location = str(tmp_path / "registry")
    first, _, _ = build_iris(tmp_path)
    meta = tmp_path / "meta.json"
    for n, artifact in enumerate((first, write_iris_c001(tmp_path)), start=1):
        meta.write_text(
            json.dumps({"git_commit": "3f2c1a", "metrics": {"accuracy": 0.9 + n / 100}})
        )
        pushed = run(
            "models",
            "push",
            str(artifact),
            "--name",
            "m",
            "--meta-file",
            str(meta),
            "--meta",
            "git_commit=override",
            "--registry",
            location,
        )
        assert ok(pushed).strip() == str(n)
    return location


def test_alias_rollback_and_history(registry: str) -> None:
    assert ok(run("models", "alias", "m", "production", "1", "--registry", registry)) == (
        "m: production -> version 1 (new)\n"
    )
    moved = run(
        "models", "alias", "m", "production", "2", "--reason", "better", "--registry", registry
    )
    assert ok(moved) == "m: production -> version 2 (was 1)\n"
    assert ok(run("models", "rollback", "m", "--registry", registry)) == (
        "m: production -> version 1 (was 2)\n"
    )
    events = json.loads(ok(run("models", "history", "m", "--json", "--registry", registry)))
    assert [(e["kind"], e["from_version"], e["to_version"]) for e in events] == [
        ("push", None, 1),
        ("push", None, 2),
        ("alias", None, 1),
        ("alias", 1, 2),
        ("rollback", 2, 1),
    ]
    assert events[3]["reason"] == "better"
    table = ok(run("models", "history", "m", "--registry", registry))
    assert "rollback" in table
    assert "better" in table
    shown = json.loads(ok(run("models", "show", "m", "--json", "--registry", registry)))
    assert (shown["version"], shown["aliases"]) == (1, ["production"])
    assert ok(run("models", "alias", "m", "production", "--remove", "--registry", registry))
    assert (
        json.loads(ok(run("models", "show", "m", "--json", "--registry", registry)))["version"] == 2
    )


def test_meta_file_and_provenance_in_show(registry: str) -> None:
    shown = json.loads(ok(run("models", "show", "m:1", "--json", "--registry", registry)))
    assert shown["metadata"] == {"git_commit": "override", "metrics": {"accuracy": 0.91}}
    assert shown["created_host"]
    table = ok(run("models", "show", "m:latest", "--registry", registry))
    assert "created on" in table
    assert "meta metrics" in table


def test_lifecycle_mistakes_are_clear_errors(registry: str, tmp_path: Path) -> None:
    fails(run("models", "alias", "m", "production", "9", "--registry", registry), "no version 9")
    fails(run("models", "alias", "m", "42", "1", "--registry", registry), "invalid alias")
    fails(run("models", "alias", "m", "production", "--registry", registry), "--remove")
    fails(run("models", "rollback", "m", "--registry", registry), "no alias 'production'")
    fails(run("models", "show", "m:canary", "--registry", registry), "no version or alias")
    fails(run("models", "history", "nope", "--registry", registry), "unknown")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    (tmp_path / "again").mkdir()
    artifact, _, _ = build_iris(tmp_path / "again")
    pushed = run(
        "models",
        "push",
        str(artifact),
        "--name",
        "m",
        "--meta-file",
        str(bad),
        "--registry",
        registry,
    )
    fails(pushed, "must hold a JSON object")


def test_verify_reports_a_tampered_artifact(registry: str) -> None:
    assert ok(run("models", "verify", "--registry", registry)).splitlines() == [
        "ok    m:1 artifact",
        "ok    m:2 artifact",
    ]
    with Registry.open(registry, create=False) as store:
        path = store.artifact_path(store.get("m", 2))
        expected = store.get("m", 2).digest
    os.chmod(path, 0o600)
    path.write_bytes(b"tampered")
    result = run("models", "verify", "m", "--registry", registry)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "ok    m:1 artifact"
    assert result.stdout.splitlines()[1].startswith("FAIL  m:2 artifact")
    assert expected in result.stdout
    assert "1 artifact(s) failed verification" in result.stderr
