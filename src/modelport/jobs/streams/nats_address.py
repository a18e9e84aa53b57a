"""A NATS URL: its servers, credentials, TLS files, JetStream stream and subject.

``nats://[user:password@|token@]HOST[:PORT][,HOST[:PORT]...]?stream=S&subject=X``, or
``tls://...`` for TLS. Query parameters:

- ``stream``: the JetStream stream; a source needs it, a sink may name it (the broker then
  refuses a publish whose subject another stream stores).
- ``subject``: the source's filter subject, the sink's publish subject; both need it.
- ``create=true``: create the stream (``subjects=[subject]``, file storage) when it is missing.
- ``ca=PATH``, ``cert=PATH``, ``key=PATH``: TLS trust and client certificate (any of them turns
  TLS on); ``creds=PATH``: a ``.creds`` file (user JWT and NKey seed; needs the `nkeys` package).

Parsing does no I/O; the credentials are kept out of `repr`, `str` and every error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from modelport.errors import InvalidInput

DEFAULT_PORT = 4222
_QUERY = ("stream", "subject", "create", "ca", "cert", "key", "creds")
# JetStream names (streams, durable consumers) exclude the subject separators and wildcards.
_NAME = re.compile(r"[^.*>\s/\\]+")


@dataclass(frozen=True, slots=True)
class NatsAddress:
    """A parsed NATS URL: servers, credentials, TLS files, stream and subject."""

    servers: tuple[str, ...]
    """``nats://HOST:PORT`` or ``tls://HOST:PORT``, without credentials."""
    stream: str | None
    subject: str | None
    create: bool = False
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    creds: str | None = None
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def required(self, part: str, side: str, example: str) -> str:
        """The stream or subject; InvalidInput saying what to add to a `side` URL without it."""
        value: str | None = getattr(self, part)
        if value is None:
            raise InvalidInput(f"a NATS {side} URL needs {part}=: add ?{example} to {self}")
        return value

    def __str__(self) -> str:
        """The servers and the stream and subject, never a credential."""
        named = [("stream", self.stream), ("subject", self.subject)]
        return " ".join([",".join(self.servers)] + [f"{n}={v}" for n, v in named if v])


def parse_nats_url(url: str) -> NatsAddress:
    """`url` as a NatsAddress; InvalidInput (never quoting a credential) when it is malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("nats", "tls"):
        raise InvalidInput(
            f"a NATS URL starts with nats:// or tls://, not {scheme or 'nothing'}://"
        )
    userinfo, _, hosts = parts.netloc.rpartition("@")
    query = _query(parts.query)
    tls = scheme == "tls" or any(query.get(name) for name in ("ca", "cert", "key"))
    if bool(query.get("cert")) != bool(query.get("key")):
        raise InvalidInput("a NATS client certificate needs both cert=PATH and key=PATH")
    user = password = token = None
    if userinfo:
        name, colon, secret = userinfo.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        else:
            token = unquote(name)
    create = query.get("create", "false").lower()
    if create not in ("true", "false"):
        raise InvalidInput(f"create= in a NATS URL is true or false, not {create!r}")
    return NatsAddress(
        servers=tuple(_server("tls" if tls else "nats", host) for host in hosts.split(",")),
        stream=query.get("stream") or None,
        subject=query.get("subject") or None,
        create=create == "true",
        tls=tls,
        ca=query.get("ca") or None,
        cert=query.get("cert") or None,
        key=query.get("key") or None,
        creds=query.get("creds") or None,
        user=user,
        password=password,
        token=token,
    )


def _query(text: str) -> dict[str, str]:
    try:
        values = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise InvalidInput("the query of a NATS URL is name=value pairs joined by &") from None
    unknown = sorted(set(values) - set(_QUERY))
    if unknown:
        raise InvalidInput(
            f"a NATS URL takes {', '.join(n + '=' for n in _QUERY)}; not {', '.join(unknown)}"
        )
    return {name: found[-1] for name, found in values.items()}


def _server(scheme: str, host: str) -> str:
    try:
        parts = urlsplit(f"//{host}")
        hostname, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        hostname = None
    if not hostname or parts.path or parts.username is not None:
        raise InvalidInput(
            "a NATS URL names its servers as HOST:PORT, several joined by commas "
            "(nats://host-a:4222,host-b:4222?...)"
        )
    if ":" in hostname:
        hostname = f"[{hostname}]"
    return f"{scheme}://{hostname}:{port}"


def check_jetstream_name(what: str, name: str) -> str:
    """`name` when JetStream takes it as a stream or consumer name; InvalidInput otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"a JetStream {what} has no '.', '*', '>', '/' or spaces: {name!r}")
    return name
