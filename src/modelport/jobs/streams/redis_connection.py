"""A redis-py asyncio client for a `RedisAddress`, and its errors translated into modelport's.

Used by `redis_streams` only. Each call runs within `timeout` seconds (plus the wait of a
blocking read) instead of a socket timeout, so that a server that stops answering is noticed
even in the middle of a long blocking read. Connection errors, timeouts and a server still
loading its data are `BrokerUnavailable`; refused credentials or permissions, a key that is no
stream and TLS that does not verify are `InvalidInput`; no message shows the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable, tls_refusal
from modelport.jobs.streams.redis_address import RedisAddress

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds one command may take (a blocking read: beyond its wait) before BrokerUnavailable."""
# Errors the server answers with that a later try may not meet: a replica promoted, memory
# freed by trimming, a server starting up (LOADING is a BusyLoadingError, a ConnectionError).
_TRANSIENT_REPLIES: Final = (rx.ReadOnlyError, rx.OutOfMemoryError, rx.TryAgainError)
_TRANSIENT_REPLY_CODES: Final = ("MASTERDOWN", "CLUSTERDOWN")


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis, in C, into the same bytes as redis-py's asyncio client,
    which packs them in Python: that took a tenth of a stream consumer's time. What hiredis
    cannot pack (a memoryview) goes to redis-py's packer."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        try:
            return [hiredis.pack_command(_named(args))]
        except TypeError:
            return super().pack_command(*args)

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        listed = [tuple(command) for command in commands]
        try:
            return [b"".join([hiredis.pack_command(_named(command)) for command in listed])]
        except TypeError:
            return super().pack_commands(listed)


def _named(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`args` with a command name of several words (b"XGROUP CREATE") split, as redis-py
    sends it."""
    name = args[0].encode() if isinstance(args[0], str) else args[0]
    return (*name.split(), *args[1:]) if b" " in name else args


class _PackedConnection(_HiredisPacking, aioredis.Connection):
    pass


class _PackedSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


class GroupGone(ModelportError):
    """The consumer group no longer exists; the source makes it again."""


class RedisConnection:
    """A client for one address, and the translation of its errors into modelport's."""

    def __init__(self, address: RedisAddress, timeout: float, option: str) -> None:
        self.address = address
        self.timeout = timeout
        self.option = option
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError(f"{self.address.redacted} is not open: call open() first")
        return self._client

    def connect(self) -> None:
        """Make the client (it connects on its first command); InvalidInput for bad TLS files."""
        if self._client is not None:
            return
        a = self.address
        tls: dict[str, Any] = {}
        if a.tls:
            _check_tls_files(a, self.option)
            tls = {
                "ssl": True,
                "ssl_ca_certs": a.ca,
                "ssl_certfile": a.cert,
                "ssl_keyfile": a.key,
                "ssl_cert_reqs": "required" if a.verify else "none",
                "ssl_check_hostname": a.verify,
            }
        self._client = aioredis.Redis(
            host=a.host,
            port=a.port,
            db=a.db,
            username=a.username,
            password=a.password,
            # Each call is bounded by asyncio.timeout instead (a blocking read waits longer).
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
            # One quick reconnect heals a pooled connection the server closed (a restart);
            # beyond that the caller decides how to back off.
            retry=Retry(NoBackoff(), 1),
            protocol=2,
            **tls,
        )
        if HIREDIS_AVAILABLE:
            pool = self._client.connection_pool
            pool.connection_class = _PackedSSLConnection if a.tls else _PackedConnection

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(rx.RedisError, OSError):
                await client.aclose()

    @contextlib.contextmanager
    def errors(self, command: str) -> Iterator[None]:
        """Raise what `command` failed with as BrokerUnavailable, InvalidInput or ModelportError."""
        try:
            yield
        except ModelportError:
            raise
        except (rx.RedisError, OSError) as error:
            raise self.translated(error, command) from None

    def translated(self, error: BaseException, command: str) -> ModelportError:
        """The modelport error for `error`, raised by `command`; its text free of the password."""
        a, where = self.address, f"{self.option} {self.address.redacted}"
        detail = self._scrubbed(str(error) or type(error).__name__)
        if isinstance(error, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError):
            return InvalidInput(
                f"the Redis server refused the credentials in {where}: check the user name and "
                "password (redis://USER:PASSWORD@HOST:PORT/DB)"
            )
        if isinstance(error, rx.NoPermissionError | rx.AuthorizationError):
            return InvalidInput(
                f"the Redis user of {where} may not run {command} on {a.stream!r}: grant it in "
                f"the server's ACL ({detail})"
            )
        if (tls := tls_refusal(error)) is not None:
            return InvalidInput(
                f"the TLS handshake with the Redis server of {where} failed ({tls}): check ca=, "
                "cert= and key=, and that the port serves TLS"
            )
        if isinstance(error, (rx.ConnectionError, rx.TimeoutError, OSError, *_TRANSIENT_REPLIES)):
            # A TLS server that demands a client certificate resets the connection of a
            # client without one, which looks like any dropped connection.
            hint = (
                "; if the server demands a client certificate, give cert= and key="
                if a.tls and a.cert is None and "reset by peer" in detail
                else ""
            )
            return BrokerUnavailable(
                f"the Redis server at {a.endpoint} ({self.option}) did not answer {command}: "
                f"{detail}{hint}"
            )
        if isinstance(error, rx.ResponseError) and detail.startswith(_TRANSIENT_REPLY_CODES):
            return BrokerUnavailable(f"the Redis server at {a.endpoint} is not ready: {detail}")
        if isinstance(error, rx.ResponseError) and detail.startswith("NOGROUP"):
            return GroupGone(
                f"the consumer group of {where} is gone (the stream was deleted, or the server "
                "lost its data)"
            )
        if isinstance(error, rx.ResponseError) and detail.startswith("WRONGTYPE"):
            return InvalidInput(
                f"the Redis key {a.stream!r} of {where} holds no stream: name another with "
                "stream=, or delete the key"
            )
        return ModelportError(f"the Redis server of {where} refused {command}: {detail}")

    def _scrubbed(self, text: str) -> str:
        password = self.address.password
        return text.replace(password, "***") if password else text

    @contextlib.asynccontextmanager
    async def bounded(self, command: str, extra: float = 0.0) -> AsyncIterator[None]:
        """Run the body as `command`, within `timeout + extra` seconds, errors translated."""
        with self.errors(command):
            try:
                async with asyncio.timeout(self.timeout + extra):
                    yield
            except TimeoutError:
                raise BrokerUnavailable(
                    f"the Redis server at {self.address.endpoint} ({self.option}) did not answer "
                    f"{command} within {self.timeout + extra:g} s"
                ) from None


def _check_tls_files(address: RedisAddress, option: str) -> None:
    """InvalidInput when the CA or client certificate files of `address` cannot be loaded."""
    context = ssl.create_default_context()
    try:
        if address.ca is not None:
            context.load_verify_locations(cafile=address.ca)
        if address.cert is not None:
            context.load_cert_chain(address.cert, address.key)
    except (OSError, ssl.SSLError) as error:
        raise InvalidInput(
            f"{option} {address.redacted}: cannot load the TLS files given by ca=, cert= and "
            f"key= ({getattr(error, 'strerror', None) or error})"
        ) from None
