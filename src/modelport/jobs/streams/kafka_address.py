"""A Kafka URL, parsed and checked: `kafka[+ssl]://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/TOPIC`.

The servers are the bootstrap servers (port 9092 by default); the path is the topic. Query
options:

- `security_protocol=PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL`. By default `kafka://` is
  PLAINTEXT and `kafka+ssl://` is SSL; with `USER:PASSWORD@` they become SASL_PLAINTEXT and
  SASL_SSL.
- `ca=PATH` (the CA that signed the brokers' certificates; default the system's), `cert=PATH`
  and `key=PATH` (a client certificate; the key may be in the certificate's file): TLS only.
- `sasl_mechanism=PLAIN|SCRAM-SHA-256|SCRAM-SHA-512` (PLAIN by default, as in Kafka's own
  clients): SASL only, with the user and password of the URL.
- `partitions=N`: create the topic with N partitions when it does not exist (`replication=N`
  replicas each, 1 by default). Without it, a missing topic is refused, unless the broker
  creates topics on first use.

Pure: no I/O, no client library. The password is kept out of `repr` and of every message:
`redacted` is the URL to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

from modelport.errors import InvalidInput

DEFAULT_PORT: Final = 9092
PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_OPTIONS: Final = (
    "security_protocol",
    "ca",
    "cert",
    "key",
    "sasl_mechanism",
    "partitions",
    "replication",
)
_TLS_OPTIONS: Final = ("ca", "cert", "key")
# What Kafka takes as a topic name (kafka.common.internals.Topic): at most 249 of these.
_TOPIC: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_EXAMPLE: Final = "kafka://HOST:9092/TOPIC"


@dataclass(frozen=True, slots=True)
class KafkaAddress:
    """Where a topic lives: the bootstrap servers, the topic, TLS, SASL, and how to create it."""

    servers: tuple[str, ...]
    """Bootstrap servers as `host:port` (an IPv6 host in brackets)."""
    topic: str
    security_protocol: str = "PLAINTEXT"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    """The SASL mechanism under SASL_PLAINTEXT or SASL_SSL; None otherwise."""
    ca: str | None = None
    """PEM file of the CA that signed the brokers' certificates; None for the system's CAs."""
    cert: str | None = None
    """PEM file of the client certificate (with its key, unless `key` is given)."""
    key: str | None = None
    partitions: int | None = None
    """Create the topic with this many partitions when it is missing; None never creates it."""
    replication: int = 1
    """Replicas of each partition of a topic created for `partitions`."""

    @property
    def tls(self) -> bool:
        """True when the connections are TLS (SSL or SASL_SSL)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """True when the connections authenticate with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def endpoints(self) -> str:
        """The bootstrap servers joined by commas, as Kafka clients take them."""
        return ",".join(self.servers)

    @property
    def redacted(self) -> str:
        """The URL to show in logs and errors: the password replaced by `***`."""
        credentials = f"{quote(self.username or '', safe='')}:***@" if self.sasl else ""
        scheme = "kafka+ssl" if self.tls else "kafka"
        options = [f"{name}={value}" for name, value in self._options() if value is not None]
        query = f"?{'&'.join(options)}" if options else ""
        return f"{scheme}://{credentials}{self.endpoints}/{self.topic}{query}"

    def _options(self) -> list[tuple[str, str | None]]:
        # The scheme and the credentials already say which security protocol it is.
        return [
            ("sasl_mechanism", self.sasl_mechanism if self.sasl_mechanism != "PLAIN" else None),
            ("ca", self.ca),
            ("cert", self.cert),
            ("key", self.key),
            ("partitions", None if self.partitions is None else str(self.partitions)),
            ("replication", None if self.replication == 1 else str(self.replication)),
        ]


def parse_kafka_url(url: str, option: str) -> KafkaAddress:
    """The address `url` names; InvalidInput, naming `option` (`--source`...), when it is wrong."""
    split = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme not in ("kafka", "kafka+ssl"):
        raise InvalidInput(f"{option} must be a kafka:// or kafka+ssl:// URL, such as {_EXAMPLE}")
    userinfo, _, hosts = split.netloc.rpartition("@")
    shown = _shown(url, userinfo)
    servers = tuple(_server(host, option, shown) for host in hosts.split(","))
    topic = unquote(split.path.removeprefix("/"))
    if not topic:
        raise InvalidInput(
            f"{option} {shown} names no topic: add /TOPIC after the servers ({_EXAMPLE})"
        )
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise InvalidInput(
            f"{option} {shown}: {topic!r} is not a Kafka topic name (up to 249 letters, digits, "
            "'.', '_' and '-')"
        )
    options = _query(split.query, option, shown)
    username, password = _credentials(userinfo, option, shown)
    protocol = _protocol(scheme, options.get("security_protocol"), username, option, shown)
    tls = protocol in ("SSL", "SASL_SSL")
    if not tls and (used := [name for name in _TLS_OPTIONS if name in options]):
        raise InvalidInput(
            f"{option} {shown}: {', '.join(n + '=' for n in used)} apply to TLS: use "
            "kafka+ssl:// or security_protocol=SSL (or SASL_SSL)"
        )
    if "key" in options and "cert" not in options:
        raise InvalidInput(f"{option} {shown}: key= needs cert=, the client certificate")
    partitions = _count(options.get("partitions"), "partitions", option, shown)
    replication = _count(options.get("replication"), "replication", option, shown)
    if replication is not None and partitions is None:
        raise InvalidInput(
            f"{option} {shown}: replication= applies to a topic created for partitions=N: "
            "add partitions= or remove replication="
        )
    return KafkaAddress(
        servers=servers,
        topic=topic,
        security_protocol=protocol,
        username=username,
        password=password,
        sasl_mechanism=_mechanism(options.get("sasl_mechanism"), protocol, option, shown),
        ca=options.get("ca") or None,
        cert=options.get("cert") or None,
        key=options.get("key") or None,
        partitions=partitions,
        replication=replication or 1,
    )


def _shown(url: str, userinfo: str) -> str:
    """`url` with its password masked, for messages about a URL not yet parsed."""
    if not userinfo:
        return url
    head, sep, tail = url.partition("://")
    user = userinfo.partition(":")[0]
    return f"{head}{sep}{user}:***@{tail.rpartition('@')[2]}"


def _server(host: str, option: str, shown: str) -> str:
    try:
        parts = urlsplit(f"//{host}")
        hostname, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        hostname = None
    if not hostname or parts.username is not None:
        raise InvalidInput(
            f"{option} {shown}: name the brokers as HOST:PORT, several joined by commas "
            "(kafka://host-a:9092,host-b:9092/TOPIC)"
        )
    return f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"


def _query(query: str, option: str, shown: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidInput(f"{option} {shown}: the query must be NAME=VALUE pairs") from None
    options: dict[str, str] = {}
    for name, values in parsed.items():
        if name not in _OPTIONS:
            raise InvalidInput(
                f"{option} {shown}: unknown option {name}=; the options are "
                f"{', '.join(n + '=' for n in _OPTIONS)}"
            )
        if len(values) > 1:
            raise InvalidInput(f"{option} {shown}: {name}= is given {len(values)} times")
        options[name] = values[0]
    return options


def _credentials(userinfo: str, option: str, shown: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    if not user or not colon:
        raise InvalidInput(
            f"{option} {shown}: SASL takes a user and a password: kafka://USER:PASSWORD@HOST:PORT/"
            "TOPIC (percent-encode ':', '@' and '/' in them)"
        )
    return unquote(user), unquote(password)


def _protocol(scheme: str, given: str | None, username: str | None, option: str, shown: str) -> str:
    tls = scheme == "kafka+ssl"
    if given is None:
        if username is None:
            return "SSL" if tls else "PLAINTEXT"
        return "SASL_SSL" if tls else "SASL_PLAINTEXT"
    protocol = given.upper()
    if protocol not in PROTOCOLS:
        raise InvalidInput(
            f"{option} {shown}: security_protocol= is one of {', '.join(PROTOCOLS)}, not {given!r}"
        )
    if tls and protocol not in ("SSL", "SASL_SSL"):
        raise InvalidInput(
            f"{option} {shown}: kafka+ssl:// is TLS, and security_protocol={protocol} is not: "
            "use kafka:// for it, or SSL or SASL_SSL"
        )
    if protocol.startswith("SASL_") and username is None:
        raise InvalidInput(
            f"{option} {shown}: security_protocol={protocol} needs the SASL user and password: "
            "kafka://USER:PASSWORD@HOST:PORT/TOPIC"
        )
    if not protocol.startswith("SASL_") and username is not None:
        raise InvalidInput(
            f"{option} {shown}: a user and password are for SASL, and security_protocol="
            f"{protocol} has none: use SASL_PLAINTEXT or SASL_SSL, or remove them"
        )
    return protocol


def _mechanism(given: str | None, protocol: str, option: str, shown: str) -> str | None:
    if not protocol.startswith("SASL_"):
        if given is not None:
            raise InvalidInput(
                f"{option} {shown}: sasl_mechanism= applies to SASL: add USER:PASSWORD@ before "
                "the servers (or security_protocol=SASL_PLAINTEXT or SASL_SSL)"
            )
        return None
    mechanism = (given or "PLAIN").upper()
    if mechanism not in MECHANISMS:
        raise InvalidInput(
            f"{option} {shown}: sasl_mechanism= is one of {', '.join(MECHANISMS)}, not {given!r}"
        )
    return mechanism


def _count(text: str | None, name: str, option: str, shown: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"{option} {shown}: {name}= must be a whole number, >= 1")
    return int(text)
