"""Which web pages may drive the REST API: the Host names it answers, the Origins it serves.

A browser lets any page it shows send a "simple" cross-site request (a POST with a
text/plain body needs no preflight), and a page whose name an attacker re-points at
127.0.0.1 (DNS rebinding) talks to the server as if it were its own. So a request is
answered only when its Host is one of the server's own names (loopback names, the address
it was reached on, the bound host, the `--allowed-host` values) and any Origin it carries is
the server's own or a `--cors-origin` value. Clients that are not browsers (tritonclient,
the kserve client, curl) send no Origin and a Host of the address they dial.

A request without an Origin whose Host was seen before costs one dictionary lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from modelport.config import BrowserSettings
from modelport.errors import Forbidden

ANY: Final = "*"
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
"""Names every server answers to (and every name under `.localhost`, which browsers keep on
the machine, RFC 6761)."""
ALLOWED_HEADERS: Final = (
    b"authorization, content-encoding, content-type, inference-header-content-length, "
    b"x-api-key, x-request-id"
)
"""The request headers the API reads, which a cross-origin page may send."""
EXPOSED_HEADERS: Final = b"x-request-id, inference-header-content-length, retry-after"
"""The response headers a cross-origin page may read beyond the CORS-safelisted ones."""
MAX_AGE: Final = b"600"
"""Seconds a browser may keep a preflight's answer."""
_KNOWN_HOSTS_LIMIT: Final = 256
"""Most Host values remembered as allowed (names under .localhost are endless)."""
_SHOWN: Final = 120
"""Most characters of a refused Host or Origin quoted back in the message."""

Header = tuple[bytes, bytes]


class BrowserPolicy:
    """The Host and Origin rules of one REST server, built once at start."""

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        cors_origins: Iterable[str] = (),
        bound_host: str = "",
    ) -> None:
        hosts = {host_name(h) for h in allowed_hosts}
        self._any_host = ANY in hosts
        self._names = frozenset(LOOPBACK_NAMES | hosts | _bound_names(bound_host))
        origins = {o.lower().rstrip("/") for o in cors_origins}
        self._any_origin = ANY in origins
        self._origins = frozenset(o.encode("latin-1") for o in origins)
        self._known: dict[bytes, None] = {}
        """Host header values already found allowed, as given."""

    @classmethod
    def from_settings(cls, settings: BrowserSettings, bound_host: str) -> BrowserPolicy:
        """The policy of `settings` for a server bound to `bound_host`."""
        return cls(settings.allowed_hosts, settings.cors_origins, bound_host)

    def check(self, host: bytes | None, origin: bytes | None, local_address: str) -> bytes | None:
        """The cross-origin Origin to answer with CORS headers (None: no Origin, or the
        server's own); Forbidden when the Host or the Origin is not allowed.

        `local_address` is the address the connection reached (a Host naming it is allowed).
        """
        if host and host not in self._known:
            self._check_host(host, local_address)
        if origin is None:
            return None
        if host and origin.partition(b"://")[2] == host.lower():
            # The page the server itself served (its /docs, say); the scheme is not compared
            # because a TLS proxy in front makes the browser say https where the server sees
            # http.
            return None
        if self._any_origin or origin in self._origins:
            return origin
        shown = _shown(origin)
        raise Forbidden(
            f"Origin {shown!r} may not call this server: a web page from it is refused; to let "
            f"it call the API, start the server with --cors-origin {shown}"
        )

    def _check_host(self, host: bytes, local_address: str) -> None:
        name = host_name(host.decode("latin-1"))
        if (
            self._any_host
            or name in self._names
            or name.endswith(".localhost")
            or name == host_name(local_address)
        ):
            if len(self._known) < _KNOWN_HOSTS_LIMIT:
                self._known[host] = None
            return
        shown = _shown(host)
        raise Forbidden(
            f"Host {shown!r} is not one of this server's names; to serve it under that name, "
            f"start it with --allowed-host {_shown(name.encode('latin-1'))}"
        )


def host_name(host: str) -> str:
    """The name in a Host value or setting, lowercase, without port or trailing dot; IPv6
    addresses in brackets, written the short way."""
    host = host.strip().lower()
    if host.startswith("["):
        inside, _, _ = host[1:].partition("]")
        return "[" + _ipv6(inside) + "]"
    if host.count(":") > 1:  # a bare IPv6 address (a setting, or the local address)
        return "[" + _ipv6(host) + "]"
    name = host.partition(":")[0]
    return name[:-1] if name.endswith(".") else name


def cors_headers(origin: bytes) -> list[Header]:
    """The headers an answer to an allowed cross-origin request carries."""
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", EXPOSED_HEADERS),
        (b"vary", b"origin"),
    ]


def preflight_headers(origin: bytes, methods: str) -> list[Header]:
    """The headers of the answer to a preflight from the allowed `origin` for a path that
    takes `methods`."""
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-methods", methods.encode("ascii")),
        (b"access-control-allow-headers", ALLOWED_HEADERS),
        (b"access-control-max-age", MAX_AGE),
        (b"vary", b"origin"),
    ]


def _bound_names(bound_host: str) -> set[str]:
    """The bound host as a name to answer to; none for a wildcard (every address)."""
    if not bound_host:
        return set()
    try:
        if ipaddress.ip_address(bound_host).is_unspecified:
            return set()
    except ValueError:
        pass
    return {host_name(bound_host)}


def _ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return text


def _shown(value: bytes) -> str:
    """A client-chosen value, printable and short, to quote in a message."""
    text = value.decode("latin-1")[:_SHOWN]
    return "".join(c if c.isprintable() else "?" for c in text)
