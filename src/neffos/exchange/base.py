"""The StackExchange interface: a message bus shared by several server processes.

A StackExchange is a thin adapter over one broker connection (or a small fixed
number of them); all the neffos logic — which channels a node needs, routing
received frames to local connections, exclusions, asks across nodes — lives in
:class:`neffos.exchange.node.BusNode`, once for every broker.

Channel names and payloads are those of Go neffos (docs/topics/protocol.md#bus), so Go and
Python nodes can share a bus.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable

__all__ = ["ExchangeStats", "StackExchange"]

log = logging.getLogger("neffos.exchange")

#: ``deliver(subscription, payload)``: called by an exchange for every message
#: received on one of its subscriptions (the channel, pattern or subject string
#: exactly as it was subscribed).
Deliver = Callable[[str, bytes], None]


@dataclasses.dataclass
class ExchangeStats:
    """Counters of one exchange (pub/sub is at-most-once: losses are counted here)."""

    published: int = 0
    #: publications that could not be sent (broker down, buffer full); lost
    publish_failed: int = 0
    received: int = 0
    #: received payloads that were not neffos frames; dropped
    malformed: int = 0
    #: messages the broker client dropped before we saw them (slow consumer)
    receive_dropped: int = 0
    reconnects: int = 0


class StackExchange(abc.ABC):
    """Base class of the Redis and NATS exchanges.

    Subclasses implement the broker side; every method except :meth:`start`,
    :meth:`close` and :meth:`subscribe_now` must return at once (work is queued
    and applied in order by the exchange's own task). ``deliver`` must never be
    called for the node's own publications: the node delivered them locally.
    """

    def __init__(self) -> None:
        self.stats = ExchangeStats()

    # -- names (docs/topics/protocol.md#bus) ------------------------------------------

    @abc.abstractmethod
    def namespace_channel(self, namespace: str) -> str | None:
        """The channel of a namespace (``None`` if the broker cannot name it)."""

    @abc.abstractmethod
    def id_channel(self, conn_id: str) -> str | None:
        """The channel of a connection ID (messages with ``to``)."""

    def ask_channel(self, token: str) -> str:
        """The channel where the answers of a ``Server.ask`` arrive: the token itself."""
        return token

    # -- lifecycle -----------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect. Raises if the broker cannot be reached at all."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop every task of the exchange."""

    @property
    @abc.abstractmethod
    def connections(self) -> int:
        """How many broker connections this exchange holds (a small constant)."""

    # -- subscriptions and publishing ----------------------------------------------------

    @abc.abstractmethod
    def subscribe(self, channel: str) -> None:
        """Subscribe the node to a namespace or ID channel (Go's kind of subscription)."""

    @abc.abstractmethod
    def unsubscribe(self, channel: str) -> None:
        """Undo :meth:`subscribe`."""

    @abc.abstractmethod
    async def subscribe_now(self, channel: str) -> None:
        """Subscribe to an ask-answer channel and wait until the broker confirmed it."""

    @abc.abstractmethod
    def unsubscribe_now(self, channel: str) -> None:
        """Undo :meth:`subscribe_now` (in the background)."""

    @abc.abstractmethod
    def publish(self, channel: str, payload: bytes) -> None:
        """Publish a frame; publications of one node keep their order."""
