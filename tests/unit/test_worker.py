"""How long a stopping server process may take."""

from __future__ import annotations

from modelport.transports.grpc import GRACE_SECONDS
from modelport.worker import DRAIN_SECONDS, GRACEFUL_SHUTDOWN_SECONDS

SAGEMAKER_STOP_SECONDS = 30.0
"""What SageMaker (like Kubernetes by default) allows between SIGTERM and SIGKILL."""


def test_a_stop_drains_within_the_time_platforms_allow() -> None:
    # Idle keep-alive connections, then in-flight REST requests, then gRPC calls, in turn;
    # at least 10 of the 30 s are left for the inference log's last records and the exit.
    worst = DRAIN_SECONDS + GRACEFUL_SHUTDOWN_SECONDS + GRACE_SECONDS
    assert worst <= SAGEMAKER_STOP_SECONDS - 10, worst
