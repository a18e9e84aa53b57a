"""A `--source`, `--sink` or `--dead-letter` URL as the broker module that serves it.

Each broker's module (and its client library, an optional extra) is imported only when a URL
names it, so a consumer of one broker needs only that broker's extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import Sink, Source


@dataclass(frozen=True, slots=True)
class ConsumerIdentity:
    """Who consumes: the group that shares the work, this process's name in it, and how long
    a message may stay unacknowledged before another consumer of the group takes it over."""

    group: str
    consumer: str
    reclaim_after: float


def _kafka_source(url: str, who: ConsumerIdentity) -> Source:
    from modelport.jobs.streams.kafka_topics import kafka_source

    return kafka_source(
        url, group=who.group, consumer=who.consumer, reclaim_after=who.reclaim_after
    )


def _kafka_sink(url: str, flag: str) -> Sink:
    from modelport.jobs.streams.kafka_topics import kafka_sink

    return kafka_sink(url, option=flag)


def _redis_source(url: str, who: ConsumerIdentity) -> Source:
    from modelport.jobs.streams.redis_streams import redis_source

    return redis_source(
        url, group=who.group, consumer=who.consumer, reclaim_after=who.reclaim_after
    )


def _redis_sink(url: str, flag: str) -> Sink:
    from modelport.jobs.streams.redis_streams import redis_sink

    return redis_sink(url, option=flag)


def _nats_source(url: str, who: ConsumerIdentity) -> Source:
    from modelport.jobs.streams.nats_jetstream import nats_source

    return nats_source(url, group=who.group, consumer=who.consumer, reclaim_after=who.reclaim_after)


def _nats_sink(url: str, flag: str) -> Sink:
    from modelport.jobs.streams.nats_jetstream import nats_sink

    return nats_sink(url)


@dataclass(frozen=True, slots=True)
class _Broker:
    source: Callable[[str, ConsumerIdentity], Source]
    sink: Callable[[str, str], Sink]
    extra: str
    client: str
    """The import name of the client library, to tell a missing extra from a bug."""
    example: str


_BROKERS = {
    "kafka": _Broker(_kafka_source, _kafka_sink, "kafka", "aiokafka", "kafka://HOST:9092/TOPIC"),
    "redis": _Broker(
        _redis_source, _redis_sink, "redis", "redis", "redis://HOST:6379/0?stream=NAME"
    ),
    "nats": _Broker(
        _nats_source, _nats_sink, "nats", "nats", "nats://HOST:4222?stream=S&subject=X"
    ),
}
_SCHEMES = {
    "kafka": "kafka",
    "kafka+ssl": "kafka",
    "redis": "redis",
    "rediss": "redis",
    "nats": "nats",
    "tls": "nats",
}


def source_for(url: str, identity: ConsumerIdentity) -> Source:
    """The source `url` names (`--source`); InvalidInput for an unknown scheme, a malformed
    address or a missing extra. Nothing connects until the source is opened."""
    broker = _BROKERS[broker_name(url, "--source")]
    with _extra(broker, url, "--source"):
        return broker.source(url, identity)


def sink_for(url: str, flag: str = "--sink") -> Sink:
    """The sink `url` names (`--sink` or `--dead-letter`); InvalidInput as for sources."""
    broker = _BROKERS[broker_name(url, flag)]
    with _extra(broker, url, flag):
        return broker.sink(url, flag)


def broker_name(url: str, flag: str) -> str:
    """`kafka`, `redis` or `nats` for `url`; InvalidInput naming the schemes offered."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        offered = "; ".join(b.example for b in _BROKERS.values())
        raise InvalidInput(f"{flag} {shown_url(url)}: not a broker URL; give one of: {offered}")
    return _SCHEMES[scheme]


@contextmanager
def _extra(broker: _Broker, url: str, flag: str) -> Iterator[None]:
    """Turn the import error of a missing client library into what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != broker.client:
            raise
        raise InvalidInput(
            f"{flag} {shown_url(url)} needs the {broker.extra} extra: "
            f"pip install 'modelport[{broker.extra}]'"
        ) from None


def shown_url(url: str) -> str:
    """`url` without its credentials, fit for a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: leave it out
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else repr(url)
