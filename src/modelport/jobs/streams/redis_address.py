"""A Redis Streams URL, parsed and checked: `redis[s]://[user:password@]HOST:PORT/DB?stream=NAME`.

Query options: `stream=NAME` (required), `maxlen=N` (a sink trims its stream to about N
entries; default no trimming) and, for `rediss://` only, `ca=PATH` (the CA that signed the
server's certificate; default the system's), `cert=PATH` and `key=PATH` (a client
certificate) and `verify=false` (no verification of the server's certificate; only when
stated). Pure: no I/O, no client library; `redis_streams` turns an address into a client.

The password is kept out of `repr` and of every message: `redacted` is the URL to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modelport.errors import InvalidInput

DEFAULT_PORT: Final = 6379
_TLS_OPTIONS: Final = ("ca", "cert", "key", "verify")
_SOURCE_OPTIONS: Final = ("stream", *_TLS_OPTIONS)
_SINK_OPTIONS: Final = (*_SOURCE_OPTIONS, "maxlen")
_BOOLEANS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where a stream lives: the server, the credentials, the stream key, TLS, trimming."""

    host: str
    port: int
    db: int
    stream: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None
    """PEM file of the CA that signed the server's certificate; None for the system's CAs."""
    cert: str | None = None
    """PEM file of the client certificate (with its key, unless `key` is given)."""
    key: str | None = None
    verify: bool = True
    """False only when the URL says `verify=false`: the server's certificate is not checked."""
    maxlen: int | None = None
    """A sink trims its stream to about this many entries (XADD MAXLEN ~); None never trims."""

    @property
    def endpoint(self) -> str:
        """`host:port`, with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def redacted(self) -> str:
        """The URL to show in logs and errors: the password replaced by `***`."""
        credentials = ""
        if self.username is not None or self.password is not None:
            user = quote(self.username or "", safe="")
            credentials = f"{user}:***@" if self.password is not None else f"{user}@"
        options = [f"stream={quote(self.stream, safe='')}"]
        options += [f"{name}={value}" for name, value in self._options() if value is not None]
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{credentials}{self.endpoint}/{self.db}?{'&'.join(options)}"

    def _options(self) -> list[tuple[str, str | None]]:
        return [
            ("ca", self.ca),
            ("cert", self.cert),
            ("key", self.key),
            ("verify", None if self.verify else "false"),
            ("maxlen", None if self.maxlen is None else str(self.maxlen)),
        ]


def parse_redis_url(url: str, option: str, *, sink: bool) -> RedisAddress:
    """The address `url` names; InvalidInput, naming `option` (`--source`...), when it is wrong.

    `sink` allows `maxlen=`, which only a producer can apply.
    """
    split = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise InvalidInput(f"{option} must be a redis:// or rediss:// URL for a Redis stream")
    shown = _shown(url, split.password)
    try:
        port = split.port or DEFAULT_PORT
    except ValueError:
        raise InvalidInput(f"{option} {shown}: the port must be a number") from None
    if not split.hostname:
        raise InvalidInput(f"{option} {shown}: give the Redis server as HOST:PORT")
    db_text = split.path.strip("/") or "0"
    if not db_text.isdigit():
        raise InvalidInput(f"{option} {shown}: the path must be a database number, such as /0")

    options = _query(split.query, option, shown, _SINK_OPTIONS if sink else _SOURCE_OPTIONS)
    stream = options.get("stream", "")
    if not stream:
        raise InvalidInput(
            f"{option} {shown} names no stream: add ?stream=NAME (the key of the Redis stream)"
        )
    tls = scheme == "rediss"
    if not tls and (used := [name for name in _TLS_OPTIONS if name in options]):
        raise InvalidInput(
            f"{option} {shown}: {', '.join(used)} apply to TLS: use rediss:// instead of redis://"
        )
    if "key" in options and "cert" not in options:
        raise InvalidInput(f"{option} {shown}: key= needs cert=, the client certificate")
    return RedisAddress(
        host=split.hostname,
        port=port,
        db=int(db_text),
        stream=stream,
        username=unquote(split.username) if split.username else None,
        password=unquote(split.password) if split.password is not None else None,
        tls=tls,
        ca=options.get("ca"),
        cert=options.get("cert"),
        key=options.get("key"),
        verify=_boolean(options.get("verify", "true"), "verify", option, shown),
        maxlen=_maxlen(options.get("maxlen"), option, shown),
    )


def _shown(url: str, password: str | None) -> str:
    """`url` with its password masked, for messages about a URL not yet parsed."""
    if not password:
        return url
    head, sep, tail = url.partition("://")
    credentials, at, rest = tail.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{head}{sep}{user}:***{at}{rest}"


def _query(query: str, option: str, shown: str, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidInput(f"{option} {shown}: the query must be NAME=VALUE pairs") from None
    options: dict[str, str] = {}
    for name, values in parsed.items():
        if name not in allowed:
            which = "maxlen= applies to a sink only; " if name == "maxlen" else ""
            raise InvalidInput(
                f"{option} {shown}: unknown option {name}=; {which}"
                f"the options are {', '.join(n + '=' for n in allowed)}"
            )
        if len(values) > 1:
            raise InvalidInput(f"{option} {shown}: {name}= is given {len(values)} times")
        options[name] = values[0]
    return options


def _boolean(text: str, name: str, option: str, shown: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise InvalidInput(f"{option} {shown}: {name}= must be true or false") from None


def _maxlen(text: str | None, option: str, shown: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"{option} {shown}: maxlen= must be a whole number of entries, >= 1")
    return int(text)
