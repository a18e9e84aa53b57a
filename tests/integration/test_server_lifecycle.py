"""Starting and stopping `modelport serve`: ready lines, clean exits, clear start-up errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.registry.store import Registry

pytestmark = pytest.mark.integration


def test_empty_registry_then_ctrl_c(start_server: Callable[..., Any], tmp_path: Path) -> None:
    Registry.open(tmp_path / "new-registry").close()
    server = start_server("--registry", str(tmp_path / "new-registry"))
    assert server.ready_line.startswith("modelport ready: 0 model version(s) loaded")
    assert server.output[0].startswith("modelport ")
    assert "serving REST at http://127.0.0.1:" in server.output[0]
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.post("/v2/repository/index").json() == []
    assert server.stop(signal.SIGINT) == 0
    log = server.log()
    assert "Traceback" not in log


def test_only_the_selected_models_load(
    start_server: Callable[..., Any], demo_registry: Path
) -> None:
    server = start_server(
        "--registry", str(demo_registry), "--model", "iris-onnx", "--model", "iris:1"
    )
    assert server.ready_line == ("modelport ready: 2 model version(s) loaded (iris-onnx:1, iris:1)")
    with httpx.Client(base_url=server.url) as http:
        index = {e["name"]: e["state"] for e in http.post("/v2/repository/index").json()}
        assert index["iris"] == index["iris-onnx"] == "READY"
        assert index["iris-xgboost"] == "UNAVAILABLE"
    assert server.stop() == 0


def test_a_busy_port_is_a_clear_error(server: Any, tmp_path: Path) -> None:
    port = server.url.rpartition(":")[2]
    done = subprocess.run(
        [sys.executable, "-m", "modelport", "serve", "--registry", str(tmp_path / "r"),
         "--http-port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "--http-port" in done.stderr
    assert "Traceback" not in done.stderr
