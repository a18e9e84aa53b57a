"""What a request asked for, as one name both transports, the guard and telemetry share."""

from __future__ import annotations

import enum


class Endpoint(enum.StrEnum):
    """The endpoint a request is counted under; the values are metric labels and log fields."""

    UNKNOWN = ""
    """The request named no endpoint (an unknown path)."""
    HEALTH = "health"
    SERVER_METADATA = "server_metadata"
    METADATA = "metadata"
    READY = "ready"
    INFER = "infer"
    DRIFT = "drift"
    FEEDBACK = "feedback"
    REPOSITORY = "repository"
    METRICS = "metrics"
    DOCS = "docs"
