"""What the server can be asked about what it recorded, as a small contract the server fills in.

`Telemetry` hooks only write; these queries read back what they gathered: the metrics page,
drift against a version's reference profile, and live scores from feedback. Transports ask
them through the dataplane, which resolves the model first. `NoReports` answers that each is
off. The real one is the server's observer (`modelport.observability`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from modelport.errors import Unsupported
from modelport.registry.manifest import ModelVersion


class Reports(Protocol):
    """Queries about what the telemetry recorded; each may raise a ModelportError."""

    def metrics_page(self, in_flight: Mapping[tuple[str, int], int]) -> bytes | None:
        """The Prometheus text exposition of every server process; None when metrics are off.

        `in_flight`: (model, version) -> inference requests in flight in the whole server now.
        """

    def drift(self, version: ModelVersion) -> dict[str, Any]:
        """Drift of this process's recent inputs from the version's reference profile."""

    async def feedback(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record true labels for logged predictions; the live accuracy they give per version.

        `body` is `{"request_ids": [...], "labels": [...]}` as the client sent it.
        """


class NoReports:
    """Reports of a server that records nothing."""

    def metrics_page(self, in_flight: Mapping[tuple[str, int], int]) -> bytes | None:
        """Metrics are off."""
        return None

    def drift(self, version: ModelVersion) -> dict[str, Any]:
        """Drift monitoring is off."""
        raise Unsupported("drift monitoring is off on this server")

    async def feedback(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Feedback needs the inference log."""
        raise Unsupported("feedback needs the inference log, which is off on this server")
