"""How much one inference may ask for: its size, its time, and its place in a model's queue."""

from __future__ import annotations

import time

from modelport.config import LimitSettings
from modelport.errors import InvalidInput, Overloaded, TooLarge
from modelport.protocol.types import InferRequest
from modelport.serving.catalog import LoadedModel
from modelport.serving.telemetry import Call


def check_size(request: InferRequest, limits: LimitSettings) -> None:
    """TooLarge past the element or row limits (the body size alone allows too much)."""
    elements = 0
    for tensor in request.inputs:
        rows = tensor.shape[0] if tensor.shape else 1
        if rows > limits.max_batch:
            raise TooLarge(
                f"input {tensor.name!r} has {rows} rows, more than the limit of "
                f"{limits.max_batch} (--max-batch); split the request"
            )
        elements += tensor.data.size
    if elements > limits.max_elements:
        raise TooLarge(
            f"the request holds {elements} tensor elements, more than the limit of "
            f"{limits.max_elements} (--max-elements); split the request"
        )


def time_limit(request: InferRequest, call: Call | None, limits: LimitSettings) -> float | None:
    """Seconds the inference may take: the server's limit, or the client's if shorter.

    The client's is the `timeout` parameter (microseconds, as tritonclient sends it) or what is
    left of a gRPC deadline. None: no limit.
    """
    seconds = [limits.request_timeout] if limits.request_timeout else []
    given = request.parameters.get("timeout")
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | float) or given <= 0:
            raise InvalidInput(
                f"parameters.timeout must be a positive number of microseconds, got {given!r}"
            )
        seconds.append(given / 1e6)
    if call is not None and call.time_left is not None:
        seconds.append(call.time_left - (time.perf_counter() - call.started))
    return max(min(seconds), 0.0) if seconds else None


def check_queue(model: LoadedModel) -> None:
    """Overloaded when `model` already has its limit of requests in flight (max_queue).

    The limit holds across all of the server's workers together.
    """
    if model.waiting() >= model.max_queue:
        # Rare: worth making sure no dead worker's requests are still counted.
        waiting = model.recount()
        if waiting >= model.max_queue:
            raise Overloaded(
                f"model {model.name!r} has {waiting} requests waiting, its limit (max_queue, "
                "counted across all of the server's workers); retry in a moment"
            )
