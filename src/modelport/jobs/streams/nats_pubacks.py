"""The PubAcks of a connection's JetStream publishes, awaited together (the NATS sink's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header

# The status header of the reply when no stream stores the subject, or JetStream is down.
_NO_RESPONDERS = "503"


class PubAcks:
    """The PubAcks of one connection's publishes, matched by reply subject on one subscription.

    nats-py's own publish_async loses a refusal (its reply handler raises the API error instead
    of setting it on the future, which then waits out its timeout) and costs a task per record
    when bounded; this keeps the refusal and leaves the bound to the caller.
    """

    def __init__(self) -> None:
        self._prefix = ""
        self._sent = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def open(self, client: Client) -> None:
        """Subscribe to the replies (nats-py subscribes again after a reconnect)."""
        self._prefix = client.new_inbox() + "."
        await client.subscribe(self._prefix + "*", cb=self._on_reply)

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A reply subject for the next publish, and the future its PubAck resolves."""
        self._sent += 1
        reply = f"{self._prefix}{self._sent}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[reply] = future
        return reply, future

    def forget(self, replies: Sequence[str]) -> None:
        """Stop waiting for these PubAcks (answered, or given up on)."""
        for reply in replies:
            future = self._waiting.pop(reply, None)
            if future is not None:
                future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(Header.STATUS) == _NO_RESPONDERS:
            future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            answer = json.loads(msg.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises it
        except nats.js.errors.APIError as error:
            future.set_exception(error)
        except ValueError:
            future.set_exception(nats.errors.Error("an unreadable PubAck"))
        else:
            future.set_result(None)
