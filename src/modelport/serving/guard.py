"""Who may do what: the small contract the transports call before they act on a request.

Both transports name what a request does with the same `Action`s and ask the one `Guard` the
server hands them, so REST and gRPC are governed by one policy. `OpenGuard` lets everything
through (a server without --require-auth); the real one lives in `modelport.security`.
"""

from __future__ import annotations

import enum
from typing import Protocol


class Action(enum.Enum):
    """What a request does, as far as permissions go."""

    HEALTH = "health"
    """Liveness and readiness: always open (orchestrators probe without credentials)."""
    INFER = "infer"
    """Inference, and feedback on inferences."""
    METADATA = "metadata"
    """Server and model metadata, readiness of a model, the repository index."""
    METRICS = "metrics"
    """Prometheus metrics."""
    LOGS = "logs"
    """What the server recorded: drift reports."""
    ADMIN = "admin"
    """Changing what is served: repository load and unload."""


class Guard(Protocol):
    """Decides whether a request may do `action`, from the credentials it presented."""

    def check(
        self, action: Action, authorization: str | None, api_key: str | None, address: str
    ) -> str:
        """Who is asking ("" when anonymous); Unauthenticated, Forbidden or RateLimited when
        the request may not go on.

        `authorization` is the Authorization header (or gRPC metadata) as sent, `api_key` the
        x-api-key one, `address` the client's.
        """


class OpenGuard:
    """Lets every request through, anonymously."""

    def check(
        self, action: Action, authorization: str | None, api_key: str | None, address: str
    ) -> str:
        """Anyone may do anything."""
        return ""
