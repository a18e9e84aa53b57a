"""One gRPC call as the inference service sees it: request id, caller, permission, status.

ErrorKind is mapped to a gRPC status code here, once. `unary` wraps an RPC body so that every
call gets its request id, its permission check, its status code and its telemetry record the
same way. The helpers below it read what a call carries (metadata, parameters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import DecodeError

from modelport.errors import ErrorKind, InvalidInput, ModelportError, Overloaded
from modelport.serving import requests
from modelport.serving.endpoint import Endpoint
from modelport.serving.guard import Action, Guard
from modelport.serving.requests import REQUEST_ID_PATTERN, internal_error, retry_after
from modelport.serving.telemetry import Call, Telemetry, new_request_id
from modelport.transports.grpc_wire import CallContext, GrpcError, Trailers

log = logging.getLogger("modelport.grpc")

STATUS: Final[dict[ErrorKind, grpc.StatusCode]] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNTRUSTED_ARTIFACT: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    # What gRPC itself answers for a message over the size limit.
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}

REQUEST_ID: Final = "x-request-id"
_SAFE_ID: Final = re.compile(REQUEST_ID_PATTERN)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a call presents to the guard, read from its metadata."""

    authorization: str | None = None
    api_key: str | None = None


def unary(
    body: Callable[[Req, Call], Awaitable[Resp]],
    endpoint: Endpoint,
    action: Action,
    telemetry: Telemetry,
    guard: Guard,
) -> Callable[[Req, CallContext], Awaitable[Resp]]:
    """Wrap an RPC body: request id in, the permission check, then the body;
    ModelportError -> GrpcError with its status code, faults logged."""

    async def handle(request: Req, context: CallContext) -> Resp:
        rid = request_id(context)
        call = Call("grpc", rid, caller=context.peer, endpoint=endpoint)
        call.time_left = context.timeout
        try:
            parsed(request)
            if action is not Action.HEALTH:
                admit(guard, action, credentials_of(context), call)
            response = await body(request, call)
        except ModelportError as exc:
            raise refusal(call, exc, telemetry, trailers(rid, exc)) from None
        except Exception:
            log.exception("internal error handling request %s", rid)
            raise refusal(call, internal_error(rid), telemetry, ((REQUEST_ID, rid),)) from None
        telemetry.finished(call, grpc.StatusCode.OK.name)
        context.trailers = ((REQUEST_ID, rid),)
        return response

    return handle


def refusal(call: Call, exc: ModelportError, telemetry: Telemetry, trailing: Trailers) -> GrpcError:
    """Record on `call` and in the telemetry how it failed; the error that ends it."""
    failed(call, exc)
    code = STATUS[exc.kind]
    telemetry.finished(call, code.name)
    return GrpcError(code, exc.message, trailing)


class Malformed:
    """Bytes that did not parse as the RPC's request message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def lenient(message_type: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: what does not parse becomes `Malformed`.

    gRPC answers a deserializer's exception with UNKNOWN; a client's bad bytes are its own
    mistake, which `parsed` turns into INVALID_ARGUMENT like every other.
    """
    name = message_type.DESCRIPTOR.name

    def parse(raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError:
            return Malformed(name)

    return parse


def parsed(request: Any) -> None:
    """InvalidInput when the request did not parse (see `lenient`)."""
    if isinstance(request, Malformed):
        raise InvalidInput(
            f"the request is not a valid {request.message} protobuf message; send the "
            "message from proto/inference.proto"
        )


def trailers(rid: str, exc: ModelportError) -> Trailers:
    """The request id, and for shed or rate-limited calls the seconds to wait (`retry-after`)."""
    if isinstance(exc, Overloaded):
        return ((REQUEST_ID, rid), ("retry-after", retry_after(exc)))
    return ((REQUEST_ID, rid),)


def credentials_of(context: CallContext) -> Credentials:
    """The `authorization` and `x-api-key` metadata a call carries."""
    authorization = api_key = None
    for key, value in context.metadata:
        if key == "authorization":
            authorization = value
        elif key == "x-api-key":
            api_key = value
    return Credentials(authorization, api_key)


def admit(guard: Guard, action: Action, credentials: Credentials, call: Call) -> None:
    """Let the call do `action` with `credentials` or raise (on the event loop: the guard's
    rate limits and caches are the loop's)."""
    requests.admit(guard, action, credentials.authorization, credentials.api_key, call)


def failed(call: Call, exc: ModelportError) -> None:
    """Record on the call how it failed."""
    call.kind = exc.kind.value
    call.error = exc.message


def request_id(context: CallContext) -> str:
    """The client's `x-request-id` when it is a valid one, else a fresh id."""
    for key, value in context.metadata:
        if key == REQUEST_ID and _SAFE_ID.fullmatch(value):
            return value
    return new_request_id()


def model_name(name: str) -> str:
    """The model name a request gives; InvalidInput when it is empty."""
    if not name:
        raise InvalidInput("the model name is empty; name the model to use")
    return name


def version_parameter(params: Any) -> str | None:
    """parameters["version"] of a repository request, as a string (None when absent)."""
    if "version" not in params:
        return None
    slot = params["version"]
    choice = slot.WhichOneof("parameter_choice")
    if choice == "string_param":
        return str(slot.string_param)
    if choice == "int64_param":
        return str(slot.int64_param)
    raise InvalidInput('parameters["version"] must be a version number such as "2"')
