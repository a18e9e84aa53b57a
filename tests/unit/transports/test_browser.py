"""The Host and Origin rules on their own: which names and origins pass, what a refusal says."""

from __future__ import annotations

import pytest

from modelport.config import BrowserSettings
from modelport.errors import Forbidden
from modelport.transports.browser import BrowserPolicy, host_name


@pytest.mark.parametrize(
    "host",
    [
        b"localhost",
        b"localhost:8080",
        b"LOCALHOST:1",
        b"localhost.:8080",
        b"127.0.0.1:8080",
        b"[::1]:8080",
        b"[0:0::1]",
        b"app.localhost:3000",
    ],
)
def test_loopback_names_are_always_answered(host: bytes) -> None:
    assert BrowserPolicy().check(host, None, "127.0.0.1") is None


def test_a_missing_or_empty_host_is_answered() -> None:
    # HTTP/1.0 clients send none; browsers always do.
    assert BrowserPolicy().check(None, None, "127.0.0.1") is None
    assert BrowserPolicy().check(b"", None, "127.0.0.1") is None


def test_another_name_is_refused_with_the_flag_to_set() -> None:
    with pytest.raises(Forbidden) as refused:
        BrowserPolicy().check(b"evil.example:8080", None, "127.0.0.1")
    assert refused.value.message == (
        "Host 'evil.example:8080' is not one of this server's names; to serve it under that "
        "name, start it with --allowed-host evil.example"
    )


def test_a_refused_value_is_quoted_short_and_printable() -> None:
    with pytest.raises(Forbidden) as refused:
        BrowserPolicy().check(b"e\x01vil" + b"x" * 500, None, "127.0.0.1")
    assert "e?vil" in refused.value.message
    assert len(refused.value.message) < 400


def test_names_the_server_was_given_or_reached_by() -> None:
    policy = BrowserPolicy(["Models.Example.com", "::2"], bound_host="10.1.2.3")
    for host in (b"models.example.com", b"MODELS.example.com:443", b"[::2]:80", b"10.1.2.3:9"):
        assert policy.check(host, None, "127.0.0.1") is None
    # The address the connection arrived on, for a server bound to every address.
    assert (
        BrowserPolicy(bound_host="0.0.0.0").check(b"192.168.1.5:8080", None, "192.168.1.5") is None
    )
    with pytest.raises(Forbidden):
        BrowserPolicy(bound_host="0.0.0.0").check(b"0.0.0.0:8080", None, "192.168.1.5")
    with pytest.raises(Forbidden):
        policy.check(b"example.com", None, "127.0.0.1")


def test_a_star_answers_any_name() -> None:
    assert BrowserPolicy(["*"]).check(b"evil.example:8080", None, "127.0.0.1") is None


def test_the_port_is_not_compared() -> None:
    # Proxies and port mappings change it; the name is what DNS rebinding forges.
    assert BrowserPolicy(["models.example"]).check(b"models.example:1", None, "::1") is None


def test_no_origin_or_the_servers_own_needs_no_cors() -> None:
    policy = BrowserPolicy()
    assert policy.check(b"localhost:8080", None, "127.0.0.1") is None
    assert policy.check(b"localhost:8080", b"http://localhost:8080", "127.0.0.1") is None
    # Behind a TLS proxy the browser says https where the server sees http.
    assert policy.check(b"localhost:8080", b"https://localhost:8080", "127.0.0.1") is None


def test_another_origin_is_refused_with_the_flag_to_set() -> None:
    policy = BrowserPolicy()
    for origin in (b"http://evil.example", b"http://localhost:9999", b"null"):
        with pytest.raises(Forbidden) as refused:
            policy.check(b"localhost:8080", origin, "127.0.0.1")
        assert f"--cors-origin {origin.decode()}" in refused.value.message


def test_configured_origins_are_answered_with_cors() -> None:
    policy = BrowserPolicy(cors_origins=["https://App.example:8443/"])
    origin = b"https://app.example:8443"
    assert policy.check(b"localhost:8080", origin, "127.0.0.1") == origin
    with pytest.raises(Forbidden):
        policy.check(b"localhost:8080", b"https://app.example", "127.0.0.1")
    anyone = BrowserPolicy(cors_origins=["*"])
    assert anyone.check(b"localhost", b"http://evil.example", "127.0.0.1") == b"http://evil.example"


def test_the_host_is_checked_before_the_origin() -> None:
    # DNS rebinding: the page's own origin, under a name that is not the server's.
    with pytest.raises(Forbidden, match="--allowed-host"):
        BrowserPolicy().check(b"evil.example:8080", b"http://evil.example:8080", "127.0.0.1")


def test_a_repeated_host_is_refused() -> None:
    with pytest.raises(Forbidden):
        BrowserPolicy().check(b"localhost, evil.example", None, "127.0.0.1")


def test_built_from_the_settings() -> None:
    settings = BrowserSettings(allowed_hosts=("models.example",), cors_origins=("*",))
    policy = BrowserPolicy.from_settings(settings, "127.0.0.1")
    assert policy.check(b"models.example", b"http://a.example", "127.0.0.1") == b"http://a.example"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Example.COM:80", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("::1", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("10.0.0.1:5", "10.0.0.1"),
    ],
)
def test_host_names_are_compared_in_one_form(text: str, name: str) -> None:
    assert host_name(text) == name
