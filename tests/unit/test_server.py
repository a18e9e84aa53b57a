"""The composition root's start-up checks: where the server may listen, and how."""

from __future__ import annotations

import pytest

from modelport.config import AuthSettings, MetricsSettings
from modelport.errors import InvalidInput
from modelport.server import check_exposure, check_metrics_exposure

PLAIN = MetricsSettings(port=9100, tls="plain")


def test_a_plain_metrics_port_beyond_loopback_needs_authentication() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_metrics_exposure("0.0.0.0", PLAIN, AuthSettings())
    message = caught.value.message
    assert message.startswith("refusing to serve the metrics port 9100 in plain text on 0.0.0.0")
    assert "--require-auth" in message
    assert "--allow-insecure" in message


@pytest.mark.parametrize(
    ("host", "metrics", "auth"),
    [
        ("0.0.0.0", PLAIN, AuthSettings(require_auth=True)),
        ("0.0.0.0", PLAIN, AuthSettings(allow_insecure=True)),
        ("127.0.0.1", PLAIN, AuthSettings()),
        ("localhost", PLAIN, AuthSettings()),
        ("::1", PLAIN, AuthSettings()),
        ("0.0.0.0", MetricsSettings(port=9100, tls="tls"), AuthSettings()),
        ("0.0.0.0", MetricsSettings(port=9100), AuthSettings()),
        ("0.0.0.0", MetricsSettings(enabled=False, port=9100, tls="plain"), AuthSettings()),
    ],
)
def test_the_metrics_port_check_lets_through_what_is_safe_or_asked_for(
    host: str, metrics: MetricsSettings, auth: AuthSettings
) -> None:
    check_metrics_exposure(host, metrics, auth)


def test_the_api_check_still_covers_every_port_beyond_loopback() -> None:
    # A TLS (not plain) metrics port passes its own check; the API's refuses the address.
    with pytest.raises(InvalidInput) as caught:
        check_exposure("0.0.0.0", AuthSettings())
    assert caught.value.message.startswith("refusing to listen on 0.0.0.0 without authentication")
