"""Drive a running modelport over gRPC with tritonclient; print one JSON report on stdout.

Runs in the clients' own venv (no modelport there): `python triton_grpc.py HOST:PORT`.
Every check records what it saw; the calling test decides pass or fail.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def rows(n: int) -> np.ndarray:
    # Deterministic iris-like rows; the report carries them so the test can recompute.
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) % 7) * 0.5 + 0.1


def infer_iris(client: grpcclient.InferenceServerClient, x: np.ndarray, version: str) -> Any:
    tensor = grpcclient.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [
        grpcclient.InferRequestedOutput("predict"),
        grpcclient.InferRequestedOutput("predict_proba"),
    ]
    return client.infer("iris", [tensor], model_version=version, outputs=outputs, request_id="rq-1")


def error_of(call: Any) -> dict[str, str]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message() or ""}
    return {"status": "OK", "message": ""}


def main(url: str) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(url)
    report: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "iris_ready": client.is_model_ready("iris"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "iris_metadata": client.get_model_metadata("iris", as_json=True),
        "unknown_ready": error_of(lambda: client.is_model_ready("nope")),
    }
    report["unknown_ready_value"] = (
        client.is_model_ready("nope") if report["unknown_ready"]["status"] == "OK" else None
    )
    infers = []
    for n, version in ((1, ""), (3, "1"), (64, "")):
        x = rows(n)
        result = infer_iris(client, x, version)
        response = result.get_response(as_json=True)
        infers.append(
            {
                "rows": x.tolist(),
                "predict": result.as_numpy("predict").tolist(),
                "predict_proba": result.as_numpy("predict_proba").tolist(),
                "model_version": response.get("model_version"),
                "id": response.get("id"),
                "parameters": response.get("parameters", {}),
            }
        )
    report["infers"] = infers

    text = np.array([b"bonjour", b"hola", b"nope"], dtype=object)
    tensor = grpcclient.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(text)
    report["greeting"] = [
        v.decode()
        for v in client.infer("greeting-language", [tensor]).as_numpy("language").tolist()
    ]

    bad = grpcclient.InferInput("input-0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    report["bad_shape"] = error_of(lambda: client.infer("iris", [bad]))
    report["unknown_model"] = error_of(lambda: client.infer("nope", [bad]))

    report["index"] = client.get_model_repository_index(as_json=True)
    client.unload_model("iris-onnx")
    report["after_unload_ready"] = client.is_model_ready("iris-onnx")
    client.load_model("iris-onnx")
    report["after_load_ready"] = client.is_model_ready("iris-onnx")

    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    good = grpcclient.InferInput("input-0", [2, 4], "FP32")
    good.set_data_from_numpy(rows(2))
    for request_id, inputs in (("s1", [good]), ("s2", [bad]), ("s3", [good])):
        client.async_stream_infer("iris", inputs, request_id=request_id)
    stream = []
    for _ in range(3):
        result, error = answers.get(timeout=30)
        if error is not None:
            stream.append({"error": str(error)})
        else:
            response = result.get_response(as_json=True)
            stream.append(
                {
                    "id": response.get("id"),
                    "rows": rows(2).tolist(),
                    "predict": result.as_numpy("predict").tolist(),
                }
            )
    client.stop_stream()
    report["stream"] = stream
    client.close()
    return report


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout)
