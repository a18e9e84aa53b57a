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


def test_tls_and_mutual_tls_on_a_real_server(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = start_server(
        "--registry", str(registry_dir),
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
    )  # fmt: skip
    assert server.url.startswith("https://")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with httpx.Client(base_url=server.url, verify=trusting, timeout=30.0) as https:
        assert https.get("/v2/health/ready").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/v2/health/ready", timeout=5.0)

    client_ca = trustme.CA()
    client = client_ca.issue_cert("client@example.com")
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    mutual = start_server(
        "--registry", str(registry_dir),
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
        "--tls-client-ca", str(tmp_path / "client-ca.pem"),
    )  # fmt: skip
    with pytest.raises(httpx.HTTPError):
        httpx.get(mutual.url + "/v2/health/ready", verify=trusting, timeout=5.0)
    presenting = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    client.configure_cert(presenting)
    with httpx.Client(base_url=mutual.url, verify=presenting, timeout=30.0) as https:
        assert https.get("/v2/health/ready").status_code == 200


def test_a_key_that_does_not_match_the_certificate_fails_the_start(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    import trustme

    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "other.key"))
    server = start_server(
        "--registry", str(registry_dir),
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "other.key"),
        ready=False,
    )  # fmt: skip
    assert server.wait() == 1
    assert "--tls-key" in server.log()
