"""What a Kafka cluster says about a topic before a source or sink uses it.

`open_admin` starts an admin client; `ensure_topic` makes sure the topic exists (creating it
when the URL says `partitions=N`, else letting a broker that creates topics on first use do so,
else refusing it with InvalidInput) and tells how many partitions it has; `session_bounds`
reads the session timeouts the brokers accept, where they tell (a consumer's session is
derived from its reclaim delay and must fall within them). Used by `kafka_topics` only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiokafka.errors as kx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from modelport.errors import InvalidInput
from modelport.jobs.streams.broker import BrokerUnavailable
from modelport.jobs.streams.kafka_connection import KafkaConnection, milliseconds

log = logging.getLogger(__name__)

SESSION_MIN: Final = "group.min.session.timeout.ms"
SESSION_MAX: Final = "group.max.session.timeout.ms"
_LOOKUP_PAUSE: Final = 0.1
"""Seconds between two looks at a topic that the cluster is still creating."""


@dataclass(frozen=True, slots=True)
class TopicFacts:
    """A topic as its metadata describes it."""

    partitions: int
    leader: int | None
    """A broker that leads one of its partitions (whose configuration tells the cluster's)."""


async def open_admin(connection: KafkaConnection, client_id: str) -> AIOKafkaAdminClient:
    """A started admin client for `connection`'s cluster; `close()` it when done."""
    admin = AIOKafkaAdminClient(**connection.settings(client_id))
    try:
        async with connection.bounded("connecting"):
            await admin.start()
    except BaseException:
        await close_admin(admin)
        raise
    return admin


async def close_admin(admin: AIOKafkaAdminClient) -> None:
    """Close `admin`, whatever state it is in."""
    try:
        await admin.close()
    except Exception as error:  # closing must not mask what happened before
        log.debug("closing a Kafka admin client: %r", error)


async def ensure_topic(admin: AIOKafkaAdminClient, connection: KafkaConnection) -> TopicFacts:
    """The topic's facts once it exists; it is created first when the URL says partitions=N.

    InvalidInput for a topic that is missing and not created, or that may not be created or
    read; BrokerUnavailable when the cluster does not answer within the timeout.
    """
    address = connection.address
    if address.partitions is not None:
        await _create(admin, connection)
    doing = f"looking up topic {address.topic!r}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + connection.timeout
    while True:
        async with connection.bounded(doing):
            # A metadata request for the topic: a broker that creates topics on first use
            # creates it now (and answers LEADER_NOT_AVAILABLE while it does).
            answer = await admin.describe_topics([address.topic])
        facts = topic_facts(answer, connection)
        if facts is not None:
            return facts
        if loop.time() >= deadline:
            raise BrokerUnavailable(
                f"the Kafka cluster of {connection.where} has not made topic "
                f"{address.topic!r} ready within {connection.timeout:g} s"
            )
        await asyncio.sleep(_LOOKUP_PAUSE)


async def _create(admin: AIOKafkaAdminClient, connection: KafkaConnection) -> None:
    address = connection.address
    topic = NewTopic(address.topic, address.partitions, address.replication)
    doing = f"creating topic {address.topic!r}"
    async with connection.bounded(doing):
        response = await admin.create_topics([topic], timeout_ms=milliseconds(connection.timeout))
    for name, code, message, *_ in response.topic_errors:
        error = kx.for_code(code)
        if name != address.topic or error in (kx.NoError, kx.TopicAlreadyExistsError):
            continue
        if error.retriable:
            raise BrokerUnavailable(
                f"the Kafka cluster of {connection.where} could not create topic {name!r} yet: "
                f"{message or error.__name__}"
            )
        if issubclass(
            error, (kx.ClusterAuthorizationFailedError, kx.TopicAuthorizationFailedError)
        ):
            raise connection.translated(error(message), doing)
        raise InvalidInput(
            f"the Kafka cluster of {connection.where} refused to create topic {name!r} with "
            f"{address.partitions} partitions of {address.replication} replicas: "
            f"{message or error.__name__} (change partitions= or replication=)"
        )


def topic_facts(
    answer: Sequence[Mapping[str, Any]], connection: KafkaConnection
) -> TopicFacts | None:
    """The facts in a topic metadata `answer` (`describe_topics`); None while it is being made.

    InvalidInput when the answer says the topic does not exist, is no valid name, or may not
    be described.
    """
    address = connection.address
    entry = next((t for t in answer if t.get("topic") == address.topic), None)
    if entry is None:
        return None
    error = kx.for_code(entry.get("error_code", 0))
    if error is kx.UnknownTopicOrPartitionError:
        raise InvalidInput(
            f"the Kafka cluster of {connection.where} has no topic {address.topic!r} and does "
            "not create topics on first use: create it, or add ?partitions=N to the URL to "
            "have it created with N partitions"
        )
    if error is not kx.NoError:
        if error.retriable:
            return None
        raise connection.translated(error(), f"looking up topic {address.topic!r}")
    partitions = entry.get("partitions") or []
    if not partitions:
        return None
    leaders = [p.get("leader") for p in partitions if isinstance(p.get("leader"), int)]
    return TopicFacts(len(partitions), next((n for n in leaders if n >= 0), None))


async def session_bounds(
    admin: AIOKafkaAdminClient, connection: KafkaConnection, broker: int | None
) -> tuple[int, int] | None:
    """The session timeouts (ms) the `broker` accepts, from its configuration; None when it
    does not tell (the request is refused, or unknown to it)."""
    if broker is None:
        return None
    resource = ConfigResource(
        ConfigResourceType.BROKER, str(broker), configs={SESSION_MIN: None, SESSION_MAX: None}
    )
    try:
        async with asyncio.timeout(connection.timeout):
            responses = await admin.describe_configs([resource])
    except (kx.KafkaError, OSError, TimeoutError) as error:
        log.debug("the broker's session timeouts are unknown (%r)", error)
        return None
    values: dict[str, str] = {}
    for response in responses:
        for resource_answer in response.resources:
            # (error_code, error_message, type, name, entries); each entry starts
            # (name, value, ...) in every version of the answer.
            for entry in resource_answer[4]:
                values[entry[0]] = entry[1]
    try:
        return int(values[SESSION_MIN]), int(values[SESSION_MAX])
    except (KeyError, TypeError, ValueError):
        return None
