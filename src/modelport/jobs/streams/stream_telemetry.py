"""What a stream consumer reports about its work, as a small contract the composition root
fills in (the server's `Observer`), like the serving core's `Telemetry`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from modelport.serving.telemetry import Answered, Call


class StreamTelemetry(Protocol):
    """Hooks the consumer calls; each must be cheap and never raise."""

    def answered(self, answered: Answered) -> None:
        """Messages answered by one stacked inference (each its request id, caller and rows):
        counted, logged and recorded as requests; their inputs watched for drift together."""

    def refused(self, call: Call, code: str) -> None:
        """A message the model or validation refused (`code`: the error kind)."""

    def consumed(self, source: str, count: int) -> None:
        """`count` messages were received from `source`."""

    def committed(
        self, source: str, answered: int, dead_letters: Mapping[str, int], ages: Sequence[float]
    ) -> None:
        """Messages of `source` were acknowledged: `answered` answers produced, dead letters
        by stage, and each message's seconds from the broker storing it to its
        acknowledgement (where the broker gave a time)."""

    def state(self, source: str, lag: int | None, in_flight: int) -> None:
        """Every few seconds: the group's lag as the broker counts it, messages in flight."""


class NoStreamTelemetry:
    """Stream telemetry that records nothing."""

    def answered(self, answered: Answered) -> None:
        """Ignores the answers."""

    def refused(self, call: Call, code: str) -> None:
        """Ignores the call."""

    def consumed(self, source: str, count: int) -> None:
        """Ignores the count."""

    def committed(
        self, source: str, answered: int, dead_letters: Mapping[str, int], ages: Sequence[float]
    ) -> None:
        """Ignores the commit."""

    def state(self, source: str, lag: int | None, in_flight: int) -> None:
        """Ignores the state."""
