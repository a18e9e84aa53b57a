"""The small contract every message broker fills: a source to consume, a sink to produce.

A stream consumer reads `Message`s from a `Source`, answers each with a `Record` it sends to a
`Sink` (the outputs, or the dead letters), and only then acknowledges the messages at the
source. Each broker implements both sides with its own client library in modules of its own
(`kafka_topics`, `redis_streams`, `nats_jetstream`, and their address and connection
modules); nothing else imports those libraries.

Errors: a broker module raises `BrokerUnavailable` for what a retry may cure (a connection
lost, a broker restarting, a timeout) and `InvalidInput` for what it will not (a bad URL, a
refused credential, a stream that does not exist and may not be created).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelport.errors import DeadlineExceeded, NotReady, Overloaded


class BrokerUnavailable(NotReady):
    """The broker cannot be reached or did not acknowledge; the same call may succeed later."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: the topic, stream or subject, its partition, its position."""

    source: str
    """Kafka topic, Redis stream key, or JetStream stream name."""
    partition: int | None
    """Kafka partition; None where the broker has none."""
    position: str
    """Kafka offset, Redis entry id, or JetStream stream sequence, as text."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message read from a source, with what is needed to acknowledge it."""

    value: bytes
    key: bytes | None
    headers: Mapping[str, bytes]
    origin: Origin
    attempt: int
    """How many times this message has been delivered, this delivery included (1 the first
    time). Kafka keeps no count: there it is 1 unless the source knows better."""
    token: Any = field(default=None, compare=False, repr=False)
    """What the source needs to acknowledge this message; opaque to everyone else."""
    timestamp: float | None = None
    """When the broker stored the message, as Unix time (for end-to-end latency); None
    where the broker does not say."""


@dataclass(frozen=True, slots=True)
class Record:
    """One message to produce: an output, or a dead letter."""

    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)


class Source(Protocol):
    """Messages of one consumer group, in order per partition (or per stream)."""

    async def open(self) -> None:
        """Connect and join the group (creating it, and the stream where the broker allows).

        InvalidInput for what no retry will change; BrokerUnavailable otherwise.
        """

    async def receive(self, limit: int, wait: float) -> Sequence[Message]:
        """Up to `limit` messages, waiting at most `wait` seconds for the first one.

        Includes messages delivered before and never acknowledged (this consumer's after a
        restart, a dead consumer's once they are reclaimed), with their attempt count.
        """

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge (commit) `messages`, whose outputs the sink has acknowledged.

        Called in the order the messages were received; after it returns, no consumer of the
        group receives them again.
        """

    async def lag(self) -> int | None:
        """Messages of the source the group has not received yet, as the broker counts them
        (None when it cannot tell). Asked every few seconds, for the lag metric."""

    async def close(self) -> None:
        """Leave the group and disconnect; messages not acknowledged will be delivered again."""


class Sink(Protocol):
    """Where outputs (or dead letters) go: a topic, stream or subject."""

    async def open(self) -> None:
        """Connect; InvalidInput for what no retry will change, BrokerUnavailable otherwise."""

    async def send(self, records: Sequence[Record]) -> None:
        """Produce `records` in order; returns once the broker acknowledged every one.

        BrokerUnavailable when it did not: some of them may have been produced, and the
        caller sends them all again (at least once).
        """

    async def close(self) -> None:
        """Flush and disconnect."""


def is_transient(error: BaseException) -> bool:
    """True for a failure the same call may not meet again: the broker or the model not ready."""
    return isinstance(error, NotReady | Overloaded | DeadlineExceeded)


def tls_refusal(error: BaseException) -> str | None:
    """Why a TLS handshake was refused (a certificate that does not verify, a protocol the
    server will not speak), found among `error`'s causes: a failure no retry cures. None for
    anything else, a connection cut in the middle of a handshake included."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(
            seen, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
        ):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
