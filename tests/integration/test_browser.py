"""Web pages against a real server: cross-site requests and DNS rebinding are refused, OIP
clients are unaffected, and a browser app from an allowed origin gets CORS."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .conftest import ServerFactory, ServerProcess
from .test_security import ROW, make_keys

pytestmark = pytest.mark.integration

UNLOAD = "/v2/repository/models/iris/unload"
LOAD = "/v2/repository/models/iris/load"
APP = "http://app.example:3000"
# What any page in the user's browser can send: a "simple" request needs no preflight.
CROSS_SITE = {"origin": "http://evil.example", "content-type": "text/plain"}


def rebound(server: ServerProcess) -> dict[str, str]:
    """The Host a page under an attacker's name sends once the name points at the server."""
    return {"host": f"evil.example:{server.url.rsplit(':', 1)[1]}"}


def assert_attacks_refused(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        cross_site = http.post(UNLOAD, headers=CROSS_SITE, content=b"{}")
        assert cross_site.status_code == 403, cross_site.text
        assert cross_site.json()["code"] == "forbidden"
        assert "--cors-origin http://evil.example" in cross_site.json()["error"]
        rebinding = http.post(LOAD, headers=rebound(server), content=b"{}")
        assert rebinding.status_code == 403, rebinding.text
        assert rebinding.json() == {
            "error": f"Host '{rebound(server)['host']}' is not one of this server's names; to "
            "serve it under that name, start it with --allowed-host evil.example",
            "code": "forbidden",
        }
        assert http.get("/v2/models/iris/ready").status_code in (200, 401)
    assert "unload iris" not in server.log()
    assert "load iris" not in server.log()


def test_a_default_server_refuses_both_attacks(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server("--registry", str(registry_dir))
    assert_attacks_refused(server)
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.get("/v2/models/iris/ready").status_code == 200
        # The same requests without the browser's headers are what they were.
        assert http.post(UNLOAD, content=b"{}").status_code == 200
        assert http.post(LOAD, content=b"{}").status_code == 200


def test_with_auth_the_attacks_are_refused_before_the_credential_check(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    keys = make_keys(registry_dir)
    server = start_server("--registry", str(registry_dir), "--require-auth")
    assert_attacks_refused(server)
    admin = {"x-api-key": keys["admin"]}
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        # 403, not 401: nothing about the credential is checked or told.
        assert http.post(UNLOAD, headers={**CROSS_SITE, **admin}).status_code == 403
        assert http.post(LOAD, headers={**rebound(server), **admin}).status_code == 403
        assert http.post(UNLOAD).status_code == 401
        assert http.post(UNLOAD, headers=admin).status_code == 200


def test_tritonclient_sends_no_origin_and_is_unaffected(server: ServerProcess) -> None:
    client = triton.InferenceServerClient(server.hostport)
    try:
        assert client.is_server_ready()
        tensor = triton.InferInput("input-0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
        result = client.infer("iris", [tensor])
        assert result.as_numpy("predict").tolist() == [0]
    finally:
        client.close()


def test_a_browser_app_from_an_allowed_origin_gets_cors(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    server = start_server(
        "--registry", str(registry_dir), "--cors-origin", APP, "--allowed-host", "models.example"
    )
    infer = "/v2/models/iris/infer"
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        preflight = http.options(
            infer,
            headers={
                "origin": APP,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, x-request-id",
            },
        )
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        assert preflight.headers["access-control-allow-methods"] == "POST"
        allowed = preflight.headers["access-control-allow-headers"]
        assert "content-type" in allowed
        assert "x-request-id" in allowed
        answer = http.post(
            infer, json={"inputs": [ROW]}, headers={"origin": APP, "x-request-id": "page-1"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == APP
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        assert answer.json()["parameters"]["modelport.request_id"] == "page-1"
        # The name the server was given is answered; another origin still is not.
        named = http.get("/v2/health/ready", headers={"host": "models.example:8443"})
        assert named.status_code == 200
        other = http.post(infer, json={"inputs": [ROW]}, headers={"origin": "http://evil.example"})
        assert other.status_code == 403
