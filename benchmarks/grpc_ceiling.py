"""The gRPC ceiling: a bare grpc.aio servicer answering every ModelInfer with a fixed response.

`python grpc_ceiling.py --port P` serves on 127.0.0.1:P on uvloop (as modelport's gRPC does)
until SIGTERM or SIGINT. No model, no validation: what grpcio and protobuf alone cost, the most
any grpc.aio-based server can reach on this core.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import numpy as np
import uvloop

from modelport.transports.grpc_gen import inference_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def fixed_response() -> pb.ModelInferResponse:
    """What modelport answers for one iris row: `predict` INT64 [1], raw."""
    response = pb.ModelInferResponse(model_name="iris", model_version="1")
    response.outputs.add(name="predict", datatype="INT64", shape=[1])
    response.raw_output_contents.append(np.zeros(1, dtype="<i8").tobytes())
    return response


async def serve(port: int) -> None:
    answer = fixed_response()

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server = grpc.aio.server()
    handlers = {"ModelInfer": handler}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))
