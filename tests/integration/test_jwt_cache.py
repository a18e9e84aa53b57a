"""A real server remembers accepted JWTs: repeated tokens pass, lookalikes are still refused."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import ServerFactory, free_port

pytestmark = pytest.mark.integration

ROW = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def test_a_remembered_token_is_accepted_and_a_forged_twin_refused_on_rest_and_grpc(
    start_server: ServerFactory, registry_dir: Path, tmp_path: Path
) -> None:
    import grpc

    from modelport.transports.grpc_gen import inference_pb2 as pb
    from modelport.transports.grpc_gen import inference_pb2_grpc as pb_grpc

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "issuer.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    now = int(time.time())
    token = jwt.encode(
        {"sub": "app-9", "scope": "infer", "aud": "modelport", "exp": now + 600},
        private,
        algorithm="RS256",
    )
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.{'A' * 342}"  # the same claims under another signature
    other_audience = jwt.encode(
        {"sub": "app-9", "scope": "infer", "aud": "elsewhere", "exp": now + 600},
        private,
        algorithm="RS256",
    )
    server = start_server(
        "--registry", str(registry_dir), "--require-auth", "--grpc-port", str(free_port()),
        "--jwt-public-key", str(public), "--jwt-audience", "modelport",
    )  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        for _ in range(3):
            answer = http.post(
                "/v2/models/iris/infer",
                json={"inputs": [ROW]},
                headers={"authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
        for bad, words in ((forged, "signature"), (other_audience, "audience")):
            for _ in range(2):
                refused = http.post(
                    "/v2/models/iris/infer",
                    json={"inputs": [ROW]},
                    headers={"authorization": f"Bearer {bad}"},
                )
                assert refused.status_code == 401
                assert words in refused.json()["error"]
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([5.1, 3.5, 1.4, 0.2])
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            reply = stub.ModelInfer(
                request, timeout=30, metadata=(("authorization", f"Bearer {token}"),)
            )
            assert reply.model_name == "iris"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30, metadata=(("authorization", f"Bearer {forged}"),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
