"""Rules every transport applies to a request the same way, stated once.

Which request ids a client may choose, how the guard's answer joins the caller, which load
options are refused, how long a shed client is told to wait, and what a genuine fault says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from modelport.errors import InternalError, Overloaded, Unsupported
from modelport.serving.guard import Action, Guard
from modelport.serving.telemetry import Call

REQUEST_ID_PATTERN: Final = r"[A-Za-z0-9._:-]{1,128}"
"""A request id a client may choose (`x-request-id`); any other gets a fresh one instead."""


def admit(
    guard: Guard, action: Action, authorization: str | None, api_key: str | None, call: Call
) -> None:
    """Let the call do `action` or raise; who asked joins the caller's address."""
    who = guard.check(action, authorization, api_key, call.caller)
    if who:
        call.caller = f"{who}@{call.caller}"


def refuse_load_options(keys: Iterable[str]) -> None:
    """Unsupported when a repository load asks for a config or files (only pushed models load)."""
    if any(key == "config" or key.startswith("file:") for key in keys):
        raise Unsupported(
            "loading with a config or files is not offered; register the artifact with "
            "`modelport models push` and load it by name"
        )


def retry_after(exc: Overloaded) -> str:
    """The `retry-after` value for a shed request: whole seconds, at least one (RFC 9110)."""
    return str(max(1, math.ceil(exc.retry_after)))


def internal_error(request_id: str) -> InternalError:
    """What a genuine fault answers: no internals, only where the server log has them."""
    return InternalError(f"internal error; the server log has details under {request_id}")
