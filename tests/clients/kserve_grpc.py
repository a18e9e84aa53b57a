"""Drive a running modelport over gRPC with the kserve client; print one JSON report on stdout.

Runs in the clients' own venv (no modelport there): `python kserve_grpc.py HOST:PORT`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


def rows(n: int) -> np.ndarray:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) % 7) * 0.5 + 0.1


async def main(url: str) -> dict[str, Any]:
    client = InferenceGRPCClient(url)
    report: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "iris_ready": await client.is_model_ready("iris"),
    }
    infers = []
    for n, binary in ((1, True), (5, False)):
        x = rows(n)
        tensor = InferInput("input-0", list(x.shape), "FP32")
        # binary_data=True sends raw_input_contents; False sends typed fp32_contents.
        tensor.set_data_from_numpy(x, binary_data=binary)
        response = await client.infer(InferRequest(model_name="iris", infer_inputs=[tensor]))
        outputs = {o.name: o.as_numpy().tolist() for o in response.outputs}
        infers.append({"rows": x.tolist(), "raw": binary, "outputs": outputs})
    report["infers"] = infers
    bad = InferInput("input-0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    try:
        await client.infer(InferRequest(model_name="iris", infer_inputs=[bad]))
        report["bad_shape"] = "accepted"
    except Exception as exc:  # the kserve client raises grpc errors as they come
        report["bad_shape"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    return report


if __name__ == "__main__":
    json.dump(asyncio.run(main(sys.argv[1])), sys.stdout)
