"""Safe defaults of a real server: where it may listen, and who changed what (the audit trail)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.registry.store import Registry

from .conftest import ServerFactory
from .workers import children, holder

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


# -- authentication and scopes: one policy over REST and gRPC -----------------------------------


ROW = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def make_keys(registry_dir: Path) -> dict[str, str]:
    """A key per scope, by scope."""
    from modelport.registry.keys import KeyStore

    with KeyStore.open(registry_dir) as keys:
        return {
            scope: keys.create(scope, name=f"{scope}-key", created_by="tests")[0]
            for scope in ("infer", "read", "admin")
        }


def test_require_auth_enforces_scopes_on_rest(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    keys = make_keys(registry_dir)
    server = start_server("--registry", str(registry_dir), "--require-auth")
    infer = "/v2/models/iris/infer"
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.get("/v2/health/ready").status_code == 200
        anonymous = http.post(infer, json={"inputs": [ROW]})
        assert anonymous.status_code == 401
        assert "x-api-key" in anonymous.json()["error"]
        wrong = http.post(infer, json={"inputs": [ROW]}, headers={"x-api-key": "mp_nope"})
        assert wrong.status_code == 401
        by_header = http.post(infer, json={"inputs": [ROW]}, headers={"x-api-key": keys["infer"]})
        assert by_header.status_code == 200
        bearer = {"authorization": f"Bearer {keys['infer']}"}
        assert http.post(infer, json={"inputs": [ROW]}, headers=bearer).status_code == 200
        assert http.get("/metrics", headers=bearer).status_code == 403
        read = {"x-api-key": keys["read"]}
        assert http.get("/metrics", headers=read).status_code == 200
        assert http.get("/v2/models/iris", headers=read).status_code == 200
        refused = http.post(infer, json={"inputs": [ROW]}, headers=read)
        assert refused.status_code == 403
        assert "infer" in refused.json()["error"]
        unload = "/v2/repository/models/iris/unload"
        assert http.post(unload, headers=bearer).status_code == 403
        admin = {"x-api-key": keys["admin"]}
        assert http.post(unload, headers=admin).status_code == 200
    assert server.stop() == 0
    assert "unload iris version 1 by admin-key@127.0.0.1: done" in server.log()


def test_require_auth_enforces_the_same_scopes_on_grpc(
    start_server: ServerFactory, registry_dir: Path
) -> None:
    import grpc

    from modelport.transports.grpc_gen import inference_pb2 as pb
    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    from .conftest import free_port

    keys = make_keys(registry_dir)
    server = start_server(
        "--registry", str(registry_dir), "--require-auth", "--grpc-port", str(free_port())
    )
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.ModelInfer(request, timeout=30)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as read:
            stub.ModelInfer(request, timeout=30, metadata=(("x-api-key", keys["read"]),))
        assert read.value.code() == grpc.StatusCode.PERMISSION_DENIED
        answer = stub.ModelInfer(
            request, timeout=30, metadata=(("authorization", f"Bearer {keys['infer']}"),)
        )
        assert answer.model_name == "iris"


def test_jwt_bearer_tokens_and_rate_limits(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "jwt.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = jwt.encode(
        {"sub": "app-7", "scope": "infer", "aud": "modelport", "exp": int(time.time()) + 600},
        private,
        algorithm="ES256",
    )
    server = start_server(
        "--registry", str(registry_dir), "--require-auth",
        "--jwt-public-key", str(public), "--jwt-audience", "modelport",
        "--rate-limit", "0.01", "--rate-burst", "3",
    )  # fmt: skip
    bearer = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        codes = [
            http.post("/v2/models/iris/infer", json={"inputs": [ROW]}, headers=bearer)
            for _ in range(4)
        ]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert int(codes[-1].headers["retry-after"]) >= 1
        assert "app-7" in codes[-1].json()["error"]
        # The limit is per caller: the health check and others are not held back.
        assert http.get("/v2/health/live").status_code == 200


def test_a_rate_limit_holds_across_workers(start_server: ServerFactory, registry_dir: Path) -> None:
    """With 2 workers a caller still gets its burst once: both spend from one bucket."""
    server = start_server(
        "--registry", str(registry_dir), "--workers", "2",
        "--rate-limit", "0.01", "--rate-burst", "3",  # refill: one request in 100 s
    )  # fmt: skip
    workers = children(server.pid)
    assert len(workers) == 2
    answers: list[tuple[int, str | None]] = []
    by_worker = dict.fromkeys(workers, 0)
    # Fresh connections until each worker has answered more than the burst, which per-worker
    # buckets would each admit in full (6 in all). The kernel spreads new connections over the
    # workers (SO_REUSEPORT), so this takes a few dozen; the bound only stops a broken spread.
    while min(by_worker.values()) <= 3:
        assert len(answers) < 400, f"connections never reached both workers: {by_worker}"
        status, retry_after, worker = _infer_on_a_new_connection(server.url, workers)
        answers.append((status, retry_after))
        by_worker[worker] += 1
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == 3, f"{statuses} (answers per worker: {by_worker})"
    assert statuses.count(429) == len(answers) - 3, statuses
    assert all(after and int(after) >= 1 for status, after in answers if status == 429), answers


def _infer_on_a_new_connection(url: str, workers: set[int]) -> tuple[int, str | None, int]:
    """One inference on a connection of its own: (status, Retry-After, pid of the worker)."""
    import http.client

    address = httpx.URL(url)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=30)
    try:
        body = json.dumps({"inputs": [ROW]})
        connection.request(
            "POST", "/v2/models/iris/infer", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        # Still open (keep-alive): the worker that answered holds the other end.
        assert connection.sock is not None
        return response.status, response.getheader("retry-after"), holder(connection.sock, workers)
    finally:
        connection.close()


# -- faults: a model that raises or hangs harms only its own requests ---------------------------


def write_moody_model(path: Path) -> Path:
    """A python model: x > 100 raises, x < 0 sleeps 3 s, else echoes x as y."""
    import cloudpickle

    class Moody:
        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            import time

            x = inputs["x"]
            if (x > 100).any():
                raise RuntimeError("the model broke on purpose")
            if (x < 0).any():
                time.sleep(3)
            return {"y": x}

    with path.open("wb") as fh:
        cloudpickle.dump(Moody(), fh)
    return path


@pytest.fixture
def moody_registry(registry_dir: Path, tmp_path: Path) -> Path:
    from modelport.intake.push import push_artifact
    from modelport.protocol.signature import Signature, TensorSpec

    from .conftest import CREATED_BY

    with Registry.open(registry_dir) as registry:
        push_artifact(
            registry,
            write_moody_model(tmp_path / "moody.cloudpickle"),
            name="moody",
            format="python",
            signature=Signature(
                (TensorSpec("x", "FP32", (-1, 1)),), (TensorSpec("y", "FP32", (-1, 1)),)
            ),
            trust_pickle=True,
            created_by=CREATED_BY,
        )
    return registry_dir


def moody(http: httpx.Client, value: float, **parameters: Any) -> httpx.Response:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}],
        "parameters": parameters,
    }
    return http.post("/v2/models/moody/infer", json=body)


def test_a_model_that_raises_fails_only_that_request(
    start_server: ServerFactory, moody_registry: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    server = start_server("--registry", str(moody_registry), "--inference-log", "off")
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert moody(http, 1.0).status_code == 200
        broken = moody(http, 101.0)
        assert broken.status_code == 500
        assert "the server log has details" in broken.json()["error"]
        assert moody(http, 2.0).json()["outputs"][0]["data"] == [2.0]
        assert http.post("/v2/models/iris/infer", json={"inputs": [ROW]}).status_code == 200
        text = http.get("/metrics").text
    failures = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "modelport_requests_total"
        and s.labels["model"] == "moody"
        and s.labels["code"] == "500"
    ]
    assert failures == [1.0]


def test_a_model_that_hangs_hits_its_deadline_without_blocking_others(
    start_server: ServerFactory, moody_registry: Path
) -> None:
    import time

    server = start_server(
        "--registry", str(moody_registry), "--inference-log", "off", "--request-timeout", "1"
    )
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        started = time.monotonic()
        hung = moody(http, -1.0, timeout=200_000)  # microseconds, as tritonclient sends it
        assert hung.status_code == 504
        assert time.monotonic() - started < 2.5
        assert "did not answer within 0.2 s" in hung.json()["error"]
        # While moody's call still sleeps, other models answer at once.
        assert http.post("/v2/models/iris/infer", json={"inputs": [ROW]}).status_code == 200
        # The server's own limit applies when the client gives none.
        default = moody(http, -1.0)
        assert default.status_code == 504
        assert "within 1 s" in default.json()["error"]
        bad = moody(http, 1.0, timeout="soon")
        assert bad.status_code == 400
        assert "microseconds" in bad.json()["error"]


def test_a_full_model_queue_sheds_with_retry_after(
    start_server: ServerFactory, moody_registry: Path, tmp_path: Path
) -> None:
    import threading

    from .conftest import eventually

    config = tmp_path / "modelport.toml"
    config.write_text("[models.moody]\nmax_queue = 1\n")
    server = start_server(
        "--registry", str(moody_registry), "--inference-log", "off", "--config", str(config)
    )
    with httpx.Client(base_url=server.url, timeout=30.0) as http:

        def occupy() -> None:
            # Shed itself if a probe below was in flight when it arrived: then it tries again.
            while moody(http, -1.0).status_code == 503:
                pass

        slow = threading.Thread(target=occupy)
        slow.start()
        try:
            # Polled: only the server's answers tell when the occupying request holds the
            # queue (it logs nothing for a queued request).
            eventually(lambda: moody(http, 1.0).status_code == 503, "moody's queue full")
            shed = moody(http, 1.0)
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert "max_queue" in shed.json()["error"]
            # Other models have queues of their own.
            assert http.post("/v2/models/iris/infer", json={"inputs": [ROW]}).status_code == 200
        finally:
            slow.join()
        assert moody(http, 1.0).status_code == 200


def test_element_and_row_limits_answer_413(start_server: ServerFactory, registry_dir: Path) -> None:
    server = start_server(
        "--registry", str(registry_dir), "--inference-log", "off",
        "--max-batch", "8", "--max-elements", "20",
    )  # fmt: skip
    infer = "/v2/models/iris/infer"

    def rows(n: int) -> dict[str, Any]:
        return {"inputs": [dict(ROW, shape=[n, 4], data=[5.1, 3.5, 1.4, 0.2] * n)]}

    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        assert http.post(infer, json=rows(5)).status_code == 200
        elements = http.post(infer, json=rows(6))
        assert elements.status_code == 413
        assert "24 tensor elements" in elements.json()["error"]
        assert "--max-elements" in elements.json()["error"]
        batch = http.post(infer, json=rows(9))
        assert batch.status_code == 413
        assert "9 rows" in batch.json()["error"]


def test_loaded_models_keep_serving_while_the_registry_database_is_unreachable(
    start_server: ServerFactory, log_database: tuple[str, Any, str], tmp_path: Path
) -> None:
    from modelport.demo import build_iris
    from modelport.intake.push import push_artifact

    from .conftest import CREATED_BY, refuse_connections

    database_url, admin, name = log_database
    with Registry.open(f"{database_url}?artifacts={tmp_path / 'artifacts'}") as registry:
        path, fmt, meta = build_iris(tmp_path)
        push_artifact(registry, path, name="iris", format=fmt, metadata=meta, created_by=CREATED_BY)
    server = start_server(
        "--registry", database_url, "--inference-log-journal", str(tmp_path / "journal")
    )
    refuse_connections(admin, name, refuse=True)
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        for _ in range(5):
            assert http.post("/v2/models/iris/infer", json={"inputs": [ROW]}).status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/models/iris").status_code == 200
        index = http.post("/v2/repository/index", json={})
        assert index.status_code == 503, index.text
        assert "registry" in index.json()["error"]


def test_grpc_speaks_tls_on_a_real_server(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    import grpc
    import trustme

    from modelport.transports.grpc_gen import inference_pb2 as pb
    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    from .conftest import free_port

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    server = start_server(
        "--registry", str(registry_dir), "--grpc-port", str(free_port()),
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
    )  # fmt: skip
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    with grpc.secure_channel(server.grpc_address, credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    with grpc.insecure_channel(server.grpc_address) as plain:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GRPCInferenceServiceStub(plain).ServerReady(pb.ServerReadyRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
