"""A running server follows the registry: new versions, alias moves, rollbacks, failed loads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.demo import build_iris
from modelport.intake.push import push_artifact
from modelport.registry.store import PRODUCTION, Registry

from .conftest import (
    CREATED_BY,
    EVENTUALLY_SECONDS,
    ServerFactory,
    ServerProcess,
    eventually,
    write_iris_c001,
)

pytestmark = pytest.mark.integration

ROW = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def push_second(registry_dir: Path, tmp_path: Path) -> None:
    with Registry.open(registry_dir) as registry:
        push_artifact(registry, write_iris_c001(tmp_path), name="iris", created_by=CREATED_BY)


def infer(http: httpx.Client, path: str = "/v2/models/iris/infer") -> dict[str, Any]:
    response = http.post(path, json={"inputs": [ROW]})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def switched(server: ServerProcess, version: int) -> None:
    """Wait for the server's line saying iris requests now go to `version`."""
    server.wait_for(f"iris: requests now go to version {version}")


def replaced(server: ServerProcess, workers: int) -> None:
    """Wait for the lines saying each of the `workers` workers was replaced by a new one."""
    server.wait_for(f"replacing {workers} worker(s)")
    for _ in range(workers):
        server.wait_for("replaced by worker")


def serve(start_server: ServerFactory, registry_dir: Path, *args: str) -> ServerProcess:
    return start_server("--registry", str(registry_dir), *args)


def test_new_versions_and_alias_moves_are_followed(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    server = serve(start_server, registry_dir)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert infer(http)["model_version"] == "1"
        push_second(registry_dir, tmp_path)
        switched(server, 2)
        assert infer(http)["model_version"] == "2"
        server.wait_for("unloaded iris version 1")
        with Registry.open(registry_dir) as registry:
            registry.set_alias("iris", PRODUCTION, 1, actor="bob", reason="pin")
            digests = {mv.version: mv.digest for mv in registry.versions("iris")}
        switched(server, 1)
        assert infer(http)["model_version"] == "1"
        # Any alias by name, and version 2 (the newest) still by number.
        staged = infer(http, "/v2/models/iris/versions/production/infer")
        assert staged["model_version"] == "1"
        assert staged["parameters"]["modelport.sha256"] == digests[1]
        assert infer(http, "/v2/models/iris/versions/2/infer")["model_version"] == "2"
        meta = http.get("/v2/models/iris").json()
        assert meta["parameters"]["modelport.aliases"] == "production"
    with Registry.open(registry_dir) as registry:
        done = [(e.kind, e.to_version) for e in registry.history("iris") if e.actor == "server"]
    # Version 1 left once 2 was pushed (only the newest and alias targets are kept loaded),
    # and came back, loaded before traffic moved, when production named it.
    assert done == [("load", 1), ("load", 2), ("unload", 1), ("load", 1)]


def test_rollback_under_load_fails_no_request(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    push_second(registry_dir, tmp_path)
    with Registry.open(registry_dir) as registry:
        registry.set_alias("iris", PRODUCTION, 1, actor="bob")
        digests = {str(mv.version): mv.digest for mv in registry.versions("iris")}
    server = serve(start_server, registry_dir, "--workers", "2")
    answers: list[tuple[int, str, str]] = []
    answered = threading.Condition()
    """Notified on every answer, so the test waits on the answers themselves."""
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                response = http.post("/v2/models/iris/infer", json={"inputs": [ROW]})
                body = response.json()
                with answered:
                    answers.append(
                        (
                            response.status_code,
                            body.get("model_version", ""),
                            body.get("parameters", {}).get("modelport.sha256", ""),
                        )
                    )
                    answered.notify_all()

    def answers_until(condition: Callable[[], bool], what: str) -> None:
        with answered:
            assert answered.wait_for(condition, EVENTUALLY_SECONDS), f"no answers: {what}"

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with Registry.open(registry_dir) as registry:
            registry.set_alias("iris", PRODUCTION, 2, actor="bob")
            # The parent follows the registry, then replaces each worker by a fork of itself.
            switched(server, 2)
            replaced(server, 2)
            answers_until(lambda: bool(answers) and answers[-1][1] == "2", "from version 2")
            registry.rollback("iris", PRODUCTION, actor="carol", reason="drill")
            switched(server, 1)
            replaced(server, 2)
            answers_until(lambda: answers[-1][1] == "1", "from version 1 after the rollback")
            mark = len(answers)
            answers_until(lambda: len(answers) > mark + 50, "50 more after the rollback")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {status for status, _, _ in answers} == {200}
    # Every answer names exactly one version, and carries that version's digest.
    assert all(digests[version] == digest for _, version, digest in answers)
    assert {version for _, version, _ in answers} == {"1", "2"}


def test_a_version_that_fails_its_warm_up_never_takes_traffic(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    server = serve(start_server, registry_dir)
    with Registry.open(registry_dir) as registry:
        v1 = registry.get("iris", 1)
        broken = tmp_path / "broken.cloudpickle"
        write_broken_model(broken)
        push_artifact(
            registry,
            broken,
            name="iris",
            format="python",
            signature=v1.signature,
            trust_pickle=True,
            created_by=CREATED_BY,
        )

        def failed() -> bool:
            return any(e.kind == "load_failed" for e in registry.history("iris"))

        server.wait_for("could not load iris:2")
        # The server logs the failure just before it records it in the history, and says
        # nothing once recorded: a bounded poll, which usually passes at once.
        eventually(failed, "the failed warm-up is recorded")
        event = [e for e in registry.history("iris") if e.kind == "load_failed"][-1]
    assert event.to_version == 2
    assert "warm-up" in (event.detail or {}).get("error", "")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert infer(http)["model_version"] == "1"
        meta = http.get("/v2/models/iris").json()
        assert "warm-up" in meta["parameters"]["modelport.load_error"]
        assert (
            http.post("/v2/models/iris/versions/2/infer", json={"inputs": [ROW]}).status_code == 503
        )
    assert "warm-up" in server.log()


def write_broken_model(path: Path) -> None:
    """Cloudpickle an object whose predict always raises."""
    import cloudpickle

    class Broken:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("this model is broken")

    with path.open("wb") as fh:
        cloudpickle.dump(Broken(), fh)


def test_two_servers_on_one_postgresql_registry_both_follow_an_alias_move(
    start_server: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    shared = f"{database_url}?artifacts={tmp_path / 'artifacts'}"
    with Registry.open(shared) as registry:
        path, fmt, meta = build_iris(tmp_path)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
        push_artifact(registry, write_iris_c001(tmp_path), name="iris", created_by=CREATED_BY)
        registry.set_alias("iris", PRODUCTION, 1, actor="bob")
    replicas = [start_server("--registry", database_url) for _ in range(2)]
    clients = [httpx.Client(base_url=server.url, timeout=10) for server in replicas]
    try:
        assert [infer(http)["model_version"] for http in clients] == ["1", "1"]
        with Registry.open(database_url) as registry:
            registry.set_alias("iris", PRODUCTION, 2, actor="bob", reason="promote")
        for server, http in zip(replicas, clients, strict=True):
            switched(server, 2)
            assert infer(http)["model_version"] == "2"
    finally:
        for http in clients:
            http.close()
        # Before the database is dropped under them.
        assert [server.stop() for server in replicas] == [0, 0]


def test_an_unloaded_model_stays_unloaded_while_the_registry_changes(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    server = serve(start_server, registry_dir)
    advice = (
        "model 'iris' version 1 was unloaded; load it with POST /v2/repository/models/iris/load"
    )
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/v2/repository/models/iris/unload").status_code == 200
        # Another model arrives: the server syncs with the registry, and goes through iris
        # (its names in order) before it loads zeta; what an operator took away stays away.
        with Registry.open(registry_dir) as registry:
            path, fmt, _ = build_iris(tmp_path)
            push_artifact(registry, path, name="zeta", format=fmt, created_by=CREATED_BY)
        # Logged once its routes are in place ("loaded ..." comes a moment before).
        server.wait_for("zeta: requests now go to version 1")
        refused = http.post("/v2/models/iris/infer", json={"inputs": [ROW]})
        assert refused.status_code == 404
        assert refused.json() == {"error": advice, "code": "not_found"}
        assert infer(http, "/v2/models/zeta/infer")["model_version"] == "1"
        assert http.post("/v2/repository/models/iris/load").status_code == 200
        assert infer(http)["model_version"] == "1"
