"""Safe defaults of a real server: where it may listen, and who changed what (the audit trail)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modelport.registry.store import Registry

from .conftest import ServerFactory

pytestmark = pytest.mark.integration


def test_refuses_a_reachable_address_without_authentication(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server("--registry", str(registry_dir), "--host", "0.0.0.0", ready=False)
    assert server.wait() == 1
    output = server.log()
    assert "refusing to listen on 0.0.0.0 without authentication" in output
    assert "--require-auth" in output
    assert "--allow-insecure" in output


def test_allow_insecure_listens_beyond_loopback_on_purpose(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server("--registry", str(registry_dir), "--host", "0.0.0.0", "--allow-insecure")
    port = server.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as http:
        assert http.get("/v2/health/ready").status_code == 200


def test_admin_actions_are_audited_with_who_and_from_where(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server("--registry", str(registry_dir), "--log-format", "json")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.post("/v2/repository/models/iris/unload").status_code == 200
        assert http.post("/v2/repository/models/iris/load").status_code == 200
        missing = http.post("/v2/repository/models/nope/load")
        assert missing.status_code == 404
    assert server.stop() == 0
    audit = [
        json.loads(line)["message"]
        for line in server.log().splitlines()
        if line.startswith("{") and '"modelport.audit"' in line
    ]
    assert audit == [
        "unload iris version 1 by 127.0.0.1: done",
        "load iris version 1 by 127.0.0.1: done",
        "load nope version newest by 127.0.0.1: " + missing.json()["error"],
    ]
    with Registry.open(registry_dir) as registry:
        history = registry.history("iris")
    api = [
        (e.kind, e.actor) for e in history if e.actor != "server" and e.kind in ("load", "unload")
    ]
    assert api == [("unload", "127.0.0.1"), ("load", "127.0.0.1")]
