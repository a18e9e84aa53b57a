"""Every platform protocol is behind the server's guard: credentials and scopes on inference
and metadata, open health routes, and each refusal in the protocol's own error shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ServerFactory
from .test_security import make_keys

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]
# (method, path, body, the error shape's message field): one inference surface per protocol.
INFERENCE: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/models/iris:predict", {"instances": [ROW]}, "error"),
    ("/vertex/models/iris:predict", {"instances": [ROW]}, "error"),
    ("/score", {"input_data": {"data": [ROW]}}, "error"),
    ("/invocations", {"dataframe_split": {"data": [ROW]}}, "message"),
]
OPEN = ["/vertex/health", "/", "/ready", "/ping", "/v2/health/ready"]


def test_each_protocol_needs_the_infer_scope_and_health_stays_open(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    keys = make_keys(registry_dir)
    server = start_server("--registry", str(registry_dir), "--require-auth", "--model", "iris")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        for path in OPEN:
            assert http.get(path).status_code == 200, path
        for path, body, field in INFERENCE:
            anonymous = http.post(path, json=body)
            assert anonymous.status_code == 401, (path, anonymous.text)
            assert "x-api-key" in anonymous.json()[field], path
            reader = http.post(path, json=body, headers={"x-api-key": keys["read"]})
            assert reader.status_code == 403, (path, reader.text)
            answer = http.post(path, json=body, headers={"x-api-key": keys["infer"]})
            assert answer.status_code == 200, (path, answer.text)
            assert answer.headers["x-model-version"] == "1", path
        status = http.get("/v1/models/iris")
        assert status.status_code == 401
        read = http.get("/v1/models/iris/metadata", headers={"x-api-key": keys["read"]})
        assert read.status_code == 200, read.text
    assert server.stop() == 0
