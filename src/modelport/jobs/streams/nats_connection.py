"""One nats-py connection for a stream source or sink: bounded calls, errors mapped once.

nats-py reconnects by itself, for ever; while it is disconnected every call raises
BrokerUnavailable at once (`check_connected`), and every call is bounded by `timeout` seconds.
The server's refusals (credentials, permissions) become InvalidInput, without the secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import ssl
from collections.abc import Iterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from modelport.errors import InvalidInput, ModelportError
from modelport.jobs.streams.broker import BrokerUnavailable
from modelport.jobs.streams.nats_address import NatsAddress

log = logging.getLogger(__name__)


class NatsConnection:
    """One nats-py connection with bounded calls and nats errors mapped to modelport's."""

    def __init__(self, address: NatsAddress, name: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._name = name
        self._client: Client | None = None
        self._refusal: str | None = None
        self._refused = asyncio.Event()

    @property
    def refusal(self) -> str | None:
        """What the server refused (credentials, a permission) since the last `calls` began."""
        return self._refusal

    @property
    def client(self) -> Client:
        """The connected client; InvalidInput before `open`."""
        if self._client is None:
            raise InvalidInput(f"open the NATS connection to {self.address} before using it")
        return self._client

    def check_connected(self, doing: str) -> None:
        """BrokerUnavailable at once while the connection is lost (nats-py is reconnecting)."""
        if not self.client.is_connected:
            raise BrokerUnavailable(
                f"lost the connection to NATS at {self.address} while {doing}; reconnecting"
            )

    async def open(self) -> JetStreamContext:
        """Connect within `timeout`; InvalidInput when the server refuses the credentials."""
        client = Client()
        self._client = client
        options = self._options()
        connecting = asyncio.ensure_future(client.connect(**options))
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {connecting, refused}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            refused.cancel()
        if connecting.done() and connecting.exception() is None:
            return client.jetstream(timeout=self.timeout)
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        await self.close()
        if self._refusal is not None:
            raise InvalidInput(self._refusal)
        raise BrokerUnavailable(f"could not connect to NATS at {self.address} in {self.timeout} s")

    def _options(self) -> dict[str, Any]:
        address = self.address
        options: dict[str, Any] = {
            "servers": list(address.servers),
            "name": self._name,
            "user": address.user,
            "password": address.password,
            "token": address.token,
            "connect_timeout": max(1, math.ceil(min(self.timeout, 2.0))),
            # Never give up reconnecting: the caller's calls fail fast meanwhile.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            # A server gone without closing the socket is noticed within ~3 pings.
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if address.tls:
            options["tls"] = self._tls_context()
        if address.creds:
            if importlib.util.find_spec("nkeys") is None:
                raise InvalidInput(
                    "creds= in a NATS URL needs the nkeys package: pip install 'nats-py[nkeys]'"
                )
            options["user_credentials"] = address.creds
        return options

    def _tls_context(self) -> ssl.SSLContext:
        address = self.address
        try:
            context = ssl.create_default_context(cafile=address.ca)
            if address.cert:
                context.load_cert_chain(address.cert, address.key)
        except (OSError, ssl.SSLError):
            raise InvalidInput(
                "cannot read the TLS files of the NATS URL (ca=, cert=, key=): "
                "check that they exist and are PEM"
            ) from None
        return context

    async def _on_error(self, error: Exception) -> None:
        text = str(error).lower()
        if isinstance(error, nats.errors.AuthorizationError) or (
            "authorization" in text or "authentication" in text
        ):
            self._refusal = (
                f"NATS at {self.address} refused the credentials of the URL: "
                "check the user and password, the token or the creds file"
            )
            self._refused.set()
        elif isinstance(error, ssl.SSLCertVerificationError):
            self._refusal = (
                f"the TLS certificate of NATS at {self.address} is not trusted here: "
                "give the CA that signed it as ca=PATH"
            )
            self._refused.set()
        elif "permissions violation" in text:
            # The server names the subject it refused; no credential is in that text.
            self._refusal = f"NATS at {self.address} refused: {str(error).removeprefix('nats: ')}"
            self._refused.set()
        else:
            log.debug("NATS connection to %s: %s", self.address, type(error).__name__)

    async def _on_disconnected(self) -> None:
        log.info("lost the connection to NATS at %s; reconnecting", self.address)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS at %s", self.address)

    @contextlib.contextmanager
    def calls(self, doing: str) -> Iterator[None]:
        """Map what nats-py raises inside the block to InvalidInput or BrokerUnavailable."""
        self._refusal = None
        self._refused.clear()
        try:
            yield
        except ModelportError:
            raise
        except nats.js.errors.ServiceUnavailableError as error:
            raise BrokerUnavailable(f"JetStream at {self.address} is unavailable") from error
        except (nats.js.errors.BadRequestError, nats.js.errors.NotFoundError) as error:
            raise InvalidInput(
                f"JetStream at {self.address} refused {doing}: {error.description}"
            ) from error
        except nats.errors.MaxPayloadError as error:
            raise InvalidInput(
                f"a record is larger than NATS at {self.address} takes "
                f"({self.client.max_payload} bytes)"
            ) from error
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError) as error:
            raise BrokerUnavailable(
                f"no JetStream stream at {self.address} answered while {doing}: is the "
                "server restarting, JetStream enabled, and a stream bound to the subject?"
            ) from error
        except (nats.errors.Error, OSError, TimeoutError) as error:
            if self._refusal is not None:
                raise InvalidInput(self._refusal) from error
            raise BrokerUnavailable(
                f"NATS at {self.address} failed while {doing} ({type(error).__name__})"
            ) from error

    async def close(self) -> None:
        """Flush what was written (within `timeout`), then close the connection."""
        client, self._client = self._client, None
        if client is None or client.is_closed:
            return
        # Not drain(): it waits on a pull subscription's queue, which fetch never marks done,
        # for the whole drain timeout.
        if client.is_connected:
            with contextlib.suppress(Exception):
                await client.flush(timeout=self.timeout)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await client.close()
