"""aiokafka's settings for a `KafkaAddress`, calls bounded by a timeout, errors translated once.

Used by `kafka_topics` and `kafka_cluster` only. Each call runs within `timeout` seconds (plus
the wait of a poll): a broker that is down, or stops answering, costs a BrokerUnavailable, never
a hang. aiokafka's own bootstrap logs why a server failed and raises a bare "unable to
bootstrap"; `reach` connects once itself first, so that a refused TLS certificate or SASL login
is an InvalidInput that says so. Connection errors, timeouts and the broker's retriable answers
are `BrokerUnavailable`; refusals (credentials, authorization, sizes, names) are `InvalidInput`;
no message shows the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any, Final

import aiokafka.errors as kx
from aiokafka.conn import create_conn

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable, tls_refusal
from modelport.jobs.streams.kafka_address import KafkaAddress

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds one call may take (a poll: beyond its wait) before BrokerUnavailable."""

_CREDENTIALS_REFUSED: Final = (
    kx.SaslAuthenticationFailed,
    kx.AuthenticationFailedError,
    kx.IllegalSaslStateError,
)
_MECHANISM_REFUSED: Final = (kx.UnsupportedSaslMechanismError, kx.AuthenticationMethodNotSupported)
_NOT_ALLOWED: Final = (
    kx.TopicAuthorizationFailedError,
    kx.GroupAuthorizationFailedError,
    kx.ClusterAuthorizationFailedError,
    kx.TransactionalIdAuthorizationFailed,
)
_TOO_LARGE: Final = (
    kx.MessageSizeTooLargeError,
    kx.RecordTooLargeError,
    kx.RecordListTooLargeError,
)
# Retriable in Kafka's sense, or a sign that the cluster is not there (yet): a later try may work.
_UNAVAILABLE: Final = (
    kx.KafkaConnectionError,
    kx.KafkaTimeoutError,
    kx.RequestTimedOutError,
    kx.NodeNotReadyError,
    kx.NotLeaderForPartitionError,
    kx.LeaderNotAvailableError,
    kx.NoBrokersAvailable,
    kx.KafkaUnavailableError,
    kx.CoordinatorNotAvailableError,
    kx.NotCoordinatorError,
    kx.CoordinatorLoadInProgressError,
    kx.NotEnoughReplicasError,
    kx.NotEnoughReplicasAfterAppendError,
    kx.BrokerNotAvailableError,
    kx.StaleMetadata,
)


class KafkaConnection:
    """aiokafka's client settings for one address, and its errors translated into modelport's."""

    def __init__(self, address: KafkaAddress, timeout: float, option: str) -> None:
        if timeout <= 0:
            raise InvalidInput(f"{option}: the Kafka timeout must be positive, not {timeout}")
        self.address = address
        self.timeout = timeout
        self.option = option
        self._ssl: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        """`--option URL` for messages, without the password."""
        return f"{self.option} {self.address.redacted}"

    def settings(self, client_id: str) -> dict[str, Any]:
        """Keyword arguments every aiokafka client of this address takes; InvalidInput for bad
        TLS files."""
        a = self.address
        settings: dict[str, Any] = {
            "bootstrap_servers": list(a.servers),
            "client_id": client_id,
            "request_timeout_ms": milliseconds(self.timeout),
            "security_protocol": a.security_protocol,
        }
        if a.tls:
            settings["ssl_context"] = self.ssl_context()
        if a.sasl:
            settings["sasl_mechanism"] = a.sasl_mechanism
            settings["sasl_plain_username"] = a.username
            settings["sasl_plain_password"] = a.password
        return settings

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of the address: its CA (or the system's), its client certificate."""
        if self._ssl is None:
            a = self.address
            try:
                context = ssl.create_default_context(cafile=a.ca)
                if a.cert is not None:
                    context.load_cert_chain(a.cert, a.key)
            except (OSError, ssl.SSLError) as error:
                raise InvalidInput(
                    f"{self.where}: cannot load the TLS files given by ca=, cert= and key= "
                    f"({getattr(error, 'strerror', None) or error})"
                ) from None
            self._ssl = context
        return self._ssl

    async def reach(self) -> None:
        """Connect to the bootstrap servers in turn, each within `timeout`, until one answers.

        InvalidInput when a server refuses the TLS handshake or the SASL login; BrokerUnavailable
        when none answers.
        """
        settings = self.settings("modelport-probe")
        failures: list[str] = []
        for server in self.address.servers:
            host, _, port = server.rpartition(":")
            try:
                async with asyncio.timeout(self.timeout):
                    connection = await create_conn(
                        host.strip("[]"),
                        int(port),
                        client_id=settings["client_id"],
                        request_timeout_ms=settings["request_timeout_ms"],
                        ssl_context=settings.get("ssl_context"),
                        security_protocol=settings["security_protocol"],
                        sasl_mechanism=settings.get("sasl_mechanism"),
                        sasl_plain_username=settings.get("sasl_plain_username"),
                        sasl_plain_password=settings.get("sasl_plain_password"),
                    )
            except TimeoutError:
                failures.append(f"{server}: no answer within {self.timeout:g} s")
                continue
            except Exception as error:
                if (refusal := self._refusal(error, server)) is not None:
                    raise refusal from None
                failures.append(f"{server}: {self._detail(error)}")
                continue
            connection.close()
            return
        hint = ""
        if self.address.tls and any("no answer" in failure for failure in failures):
            # A plaintext listener waits for the rest of what it takes for a request.
            hint = "; if the port does not serve TLS, use kafka:// (security_protocol=PLAINTEXT)"
        raise BrokerUnavailable(
            f"no Kafka broker of {self.where} answered: {'; '.join(failures)}{hint}"
        )

    def _refusal(self, error: BaseException, server: str) -> InvalidInput | None:
        """The InvalidInput for a handshake that a retry will not get through; else None."""
        a = self.address
        if isinstance(error, _CREDENTIALS_REFUSED) or (
            # aiokafka's SCRAM client reads the server's last message for its proof (`v=`)
            # and fails on the error (`e=`) a broker sends instead when it refuses the login.
            a.sasl and isinstance(error, KeyError | ValueError)
        ):
            return InvalidInput(
                f"the Kafka broker at {server} refused the SASL login ({a.sasl_mechanism}) of "
                f"{self.where}: check the user name and password (kafka://USER:PASSWORD@...)"
            )
        if isinstance(error, _MECHANISM_REFUSED):
            return InvalidInput(
                f"the Kafka broker at {server} does not take SASL {a.sasl_mechanism} "
                f"({self.where}): check sasl_mechanism=, and that this listener takes SASL at all"
            )
        if (reason := tls_refusal(error)) is not None:
            return InvalidInput(
                f"the TLS handshake with the Kafka broker at {server} failed ({reason}) for "
                f"{self.where}: check ca=, cert= and key=, and that the port serves TLS"
            )
        return None

    @contextlib.asynccontextmanager
    async def bounded(self, doing: str, extra: float = 0.0) -> AsyncIterator[None]:
        """Run the body within `timeout + extra` seconds; raise what it failed with translated."""
        limit = self.timeout + max(extra, 0.0)
        try:
            async with asyncio.timeout(limit):
                yield
        except TimeoutError:
            raise BrokerUnavailable(
                f"the Kafka cluster of {self.where} did not finish {doing} within {limit:g} s"
            ) from None
        except ModelportError:
            raise
        except (kx.KafkaError, OSError) as error:
            raise self.translated(error, doing) from None

    def translated(self, error: BaseException, doing: str) -> ModelportError:
        """The modelport error for `error`, met while `doing`; its text free of the password."""
        a, where = self.address, self.where
        detail = self._detail(error)
        if isinstance(error, _CREDENTIALS_REFUSED):
            return InvalidInput(
                f"the Kafka cluster refused the SASL login of {where}: check the user and password"
            )
        if isinstance(error, _MECHANISM_REFUSED):
            return InvalidInput(
                f"the Kafka cluster does not take SASL {a.sasl_mechanism} ({where}): check "
                "sasl_mechanism="
            )
        if isinstance(error, _NOT_ALLOWED):
            return InvalidInput(
                f"the Kafka cluster does not allow {doing} for {where} ({detail}): grant the "
                "user the ACLs for the topic and the consumer group"
            )
        if isinstance(error, _TOO_LARGE):
            return InvalidInput(
                f"a record is larger than the Kafka cluster of {where} takes ({detail}): make "
                "it smaller, or raise the topic's max.message.bytes"
            )
        if isinstance(error, kx.UnknownTopicOrPartitionError):
            return InvalidInput(
                f"the Kafka cluster of {where} has no topic {a.topic!r}: create it, or add "
                "?partitions=N to the URL to have it created"
            )
        if isinstance(error, kx.InvalidTopicError):
            return InvalidInput(f"the Kafka cluster of {where} refuses the topic name {a.topic!r}")
        if isinstance(error, kx.InvalidSessionTimeoutError):
            return InvalidInput(
                f"the Kafka cluster of {where} refuses the consumer's session timeout (the "
                "reclaim delay): choose one within the brokers' group.min.session.timeout.ms and "
                "group.max.session.timeout.ms (6 s and 30 min by default)"
            )
        if (reason := tls_refusal(error)) is not None:
            return InvalidInput(
                f"the TLS handshake with the Kafka cluster of {where} failed ({reason}): check "
                "ca=, cert= and key="
            )
        if isinstance(error, (*_UNAVAILABLE, OSError)) or getattr(error, "retriable", False):
            return BrokerUnavailable(
                f"the Kafka cluster at {a.endpoints} ({self.option}) failed while {doing}: {detail}"
            )
        return ModelportError(f"the Kafka cluster of {where} refused {doing}: {detail}")

    def _detail(self, error: BaseException) -> str:
        text = str(error) or type(error).__name__
        password = self.address.password
        return text.replace(password, "***") if password else text


def milliseconds(seconds: float) -> int:
    """`seconds` as whole milliseconds, at least 1."""
    return max(1, round(seconds * 1000))
