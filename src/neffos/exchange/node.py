"""The node side of scale-out: one BusNode per Server, over one or more exchanges.

What it does (docs/topics/protocol.md#bus), and how it differs from Go neffos:

* **Subscriptions per node, not per connection.** A node subscribes once to the
  channel of every namespace that has local connections and of every local
  connection ID (reference counted), instead of one broker connection per
  WebSocket client. A namespace's message reaches the node once.
* **Local delivery first.** ``broadcast`` delivers to local connections directly
  and publishes for the other nodes; an exchange never hands a node its own
  publications (NATS: a no-echo connection; Redis: the exchange recognises its
  echoes, see :mod:`neffos.exchange.redis`).
* **Exclusion.** Excluding a connection puts its server-conn-id in field 1 of the
  payload, as Go does. Excluding an ID — which Go cannot do over a bus — uses a
  server-conn-id whose node part is all ``f``: Go nodes never match it (they
  deliver as before), Python nodes skip every connection with that ID.
* **Ask across nodes.** The asking node uses a Go-shaped ``R…`` token and
  subscribes to it; a node that forwards a tokened bus frame to its client
  remembers the token and publishes the client's answer to it. Only tokens the
  node forwarded itself are ever published (a client cannot make a node publish).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from ..protocol import SERVER_CONN_ID_PREFIX, Message, parse, serialize
from .base import Deliver, StackExchange

if TYPE_CHECKING:
    from ..conn import Conn
    from ..handlers import ConnHandler

__all__ = ["AnswerSink", "BusNode", "LocalTargets", "exclude_id_marker"]

log = logging.getLogger("neffos.exchange")

#: the node part of a server-conn-id that means "every connection with this ID"
_ANY_NODE = "ffffffff-ffff-ffff-ffff-ffffffffffff"
_EXCLUDE_ID_PREFIX = f"{SERVER_CONN_ID_PREFIX}{_ANY_NODE}("
#: how long a forwarded ask token may be answered, and own echoes are awaited
_TTL = 60.0


def exclude_id_marker(conn_id: str) -> str:
    """The ``from_explicit`` value that excludes every connection with ``conn_id``."""
    return f"{_EXCLUDE_ID_PREFIX}{conn_id}))"


class LocalTargets(Protocol):
    """Where a node sends what it receives: the server's local connections."""

    def write_to_targets(
        self,
        msg: Message,
        ex_conn: Conn | None,
        ex_id: str | None,
        wait: str,
        seen: set[Conn] | None = None,
    ) -> int:
        """Write ``msg`` to its local targets (see :meth:`neffos.registry.Registry`)."""
        ...

    def with_id(self, conn_id: str) -> Collection[Conn]:
        """The local connections with this ID."""
        ...


class AnswerSink(Protocol):
    """Where the answers of the server's own asks go (the server's pending asks)."""

    def resolve(self, msg: Message) -> bool:
        """Deliver an answer; ``True`` if its token was the server's."""
        ...


class _Route:
    """What one subscription of one exchange stands for."""

    __slots__ = ("conn_id", "namespace")

    def __init__(self) -> None:
        self.namespace: str | None = None
        self.conn_id: str | None = None


class _Link:
    """One exchange and the subscriptions the node holds on it."""

    __slots__ = ("asks", "exchange", "routes")

    def __init__(self, exchange: StackExchange) -> None:
        self.exchange = exchange
        self.routes: dict[str, _Route] = {}
        self.asks: set[str] = set()


class BusNode:
    """Connects a server's local connections to its stack exchanges."""

    def __init__(
        self,
        exchanges: list[StackExchange],
        *,
        local: LocalTargets,
        answers: AnswerSink,
        handler: ConnHandler,
    ) -> None:
        self.local = local  # the server's connections (its Registry)
        self.answers = answers  # the server's pending asks
        self.handler = handler  # how frames are parsed (native messages)
        self.links = [_Link(e) for e in exchanges]
        #: this node's part of its connections' server-conn-ids
        self.node_id = str(uuid.uuid4())
        self.sid_prefix = f"{SERVER_CONN_ID_PREFIX}{self.node_id}("
        self._ns_refs: dict[str, int] = {}
        self._id_refs: dict[str, int] = {}
        #: ask tokens this node forwarded -> (expiry, the connections that got it)
        self._forwarded: dict[str, tuple[float, set[Conn]]] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        started: list[_Link] = []
        try:
            for index, link in enumerate(self.links):
                await link.exchange.start(self._deliverer(index))
                started.append(link)
        except BaseException:
            for link in started:
                await link.exchange.close()
            raise
        self._started = True
        self._janitor = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            self._janitor = None
        if self._started:
            self._started = False
            for link in self.links:
                await link.exchange.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_TTL / 4)
            now = time.monotonic()
            for token, (expiry, _) in list(self._forwarded.items()):
                if expiry < now:
                    del self._forwarded[token]

    def server_conn_id(self, conn: Conn) -> str:
        """Go's server-conn-id: ``neffos(0x<node>(<id>0x<address>))``.

        Wire protocol: docs/topics/protocol.md#ids.
        """
        return f"{SERVER_CONN_ID_PREFIX}{self.node_id}({conn.id}{id(conn):#x}))"

    def _local_conn(self, sid: str) -> Conn | None:
        """The local connection a server-conn-id of this node names, if any."""
        if not sid.startswith(self.sid_prefix) or not sid.endswith("))"):
            return None
        conn_id, _, address = sid[len(self.sid_prefix) : -2].rpartition("0x")
        for conn in self.local.with_id(conn_id):
            if f"{id(conn):x}" == address:
                return conn
        return None

    # -- interest (reference counted) ---------------------------------------------------

    def add_namespace(self, namespace: str) -> None:
        self._acquire(self._ns_refs, "namespace", namespace)

    def remove_namespace(self, namespace: str) -> None:
        self._drop(self._ns_refs, "namespace", namespace)

    def add_id(self, conn_id: str) -> None:
        self._acquire(self._id_refs, "conn_id", conn_id)

    def remove_id(self, conn_id: str) -> None:
        self._drop(self._id_refs, "conn_id", conn_id)

    def _channel(self, link: _Link, kind: str, name: str) -> str | None:
        exchange = link.exchange
        if kind == "namespace":
            return exchange.namespace_channel(name)
        return exchange.id_channel(name)

    def _acquire(self, refs: dict[str, int], kind: str, name: str) -> None:
        count = refs.get(name, 0)
        refs[name] = count + 1
        if not count:
            for link in self.links:
                self._route(link, self._channel(link, kind, name), kind, name)

    def _drop(self, refs: dict[str, int], kind: str, name: str) -> None:
        count = refs.get(name, 0) - 1
        if count > 0:
            refs[name] = count
            return
        refs.pop(name, None)
        for link in self.links:
            self._unroute(link, self._channel(link, kind, name), kind)

    def _route(self, link: _Link, channel: str | None, kind: str, name: str) -> None:
        if channel is None:
            return
        route = link.routes.get(channel)
        if route is None:
            route = link.routes[channel] = _Route()
            link.exchange.subscribe(channel)
        setattr(route, kind, name)

    def _unroute(self, link: _Link, channel: str | None, kind: str) -> None:
        if channel is None:
            return
        route = link.routes.get(channel)
        if route is None:
            return
        setattr(route, kind, None)
        if route.namespace is None and route.conn_id is None:
            del link.routes[channel]
            link.exchange.unsubscribe(channel)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self, msg: Message, ex_conn: Conn | None, ex_id: str | None, wait: str
    ) -> None:
        """Publish one broadcast message for the other nodes.

        ``ex_conn`` is a connection of this node's server to exclude (its
        server-conn-id rides in field 1), ``ex_id`` an ID to exclude.
        """
        if ex_conn is not None:
            from_explicit = self.server_conn_id(ex_conn)
        elif ex_id is not None:
            from_explicit = exclude_id_marker(ex_id)
        else:
            from_explicit = ""
        if wait:
            # a tokened frame cannot carry an exclusion (docs/topics/protocol.md#encoding)
            from_explicit = ""
        payload = serialize(msg.copy(wait=wait, from_explicit=from_explicit, set_binary=False))
        for link in self.links:
            exchange = link.exchange
            channel = exchange.id_channel(msg.to) if msg.to else exchange.namespace_channel(
                msg.namespace
            )
            if channel is not None:
                exchange.publish(channel, payload)

    # -- asks across nodes ----------------------------------------------------------------

    async def watch_answers(self, token: str) -> None:
        """Subscribe to the answers of ``token`` (first exchange that works)."""
        error: BaseException | None = None
        for link in self.links:
            channel = link.exchange.ask_channel(token)
            try:
                await link.exchange.subscribe_now(channel)
            except Exception as exc:  # fall back to the next exchange (as Go)
                error = exc
                continue
            link.asks.add(channel)
            return
        if error is not None:
            log.warning("cannot subscribe to ask answers: %s", error)

    def unwatch_answers(self, token: str) -> None:
        for link in self.links:
            channel = link.exchange.ask_channel(token)
            if channel in link.asks:
                link.asks.discard(channel)
                link.exchange.unsubscribe_now(channel)

    def answer_forwarded(self, msg: Message, conn: Conn) -> bool:
        """Publish ``conn``'s answer to a bus ask this node forwarded to it.

        Wire protocol: docs/topics/protocol.md#bus-asks.

        Each connection that received the request answers once; anything else
        with that token is an ordinary message.
        """
        token = msg.wait
        entry = self._forwarded.get(token)
        if entry is None or conn not in entry[1]:
            return False
        expiry, conns = entry
        conns.discard(conn)
        if not conns:
            del self._forwarded[token]
        if expiry < time.monotonic():
            return False
        payload = serialize(msg.copy(wait="", from_explicit="", set_binary=False))
        for link in self.links:
            try:
                link.exchange.publish(link.exchange.ask_channel(token), payload)
            except Exception as exc:  # try the next exchange
                log.warning("cannot publish an ask answer: %s", exc)
                continue
            break
        return True

    # -- receiving ------------------------------------------------------------------------

    def _deliverer(self, index: int) -> Deliver:
        link = self.links[index]

        def deliver(subscription: str, payload: bytes) -> None:
            try:
                self._on_message(index, link, subscription, payload)
            except Exception:
                log.exception("dropped a bus message on %r", subscription)

        return deliver

    def _on_message(self, index: int, link: _Link, key: str, payload: bytes) -> None:
        exchange = link.exchange
        exchange.stats.received += 1
        if key in link.asks:
            answer = parse(payload, False)
            if answer.is_invalid:
                exchange.stats.malformed += 1
                log.warning("dropped a malformed bus message on %r: %r", key, payload[:80])
                return
            answer.wait = key
            self.answers.resolve(answer)
            return
        route = link.routes.get(key)
        if route is None:
            return  # unsubscribed meanwhile
        handler = self.handler
        msg = parse(
            payload, False, allow_native=handler.allow_native, only_native=handler.only_native
        )
        if msg.is_invalid:
            exchange.stats.malformed += 1
            log.warning("dropped a malformed bus message on %r: %r", key, payload[:80])
            return
        ex_sid = msg.from_explicit
        msg.from_explicit = ""
        msg.from_stack_exchange = True
        ex_id = None
        if ex_sid.startswith(_EXCLUDE_ID_PREFIX) and ex_sid.endswith("))"):
            ex_id = ex_sid[len(_EXCLUDE_ID_PREFIX) : -2]
            ex_sid = ""
        reached: set[Conn] = set()
        ex_conn = self._local_conn(ex_sid) if ex_sid else None
        self._to_local_connections(msg, route, ex_conn, ex_id, reached)
        if msg.wait and reached:
            self._forwarded[msg.wait] = (time.monotonic() + _TTL, reached)

    def _to_local_connections(
        self,
        msg: Message,
        route: _Route,
        ex_conn: Conn | None,
        ex_id: str | None,
        seen: set[Conn],
    ) -> None:
        """Deliver a bus message to the local audience of the subscription it came on."""
        local = self.local
        if route.namespace is not None:
            local.write_to_targets(msg, ex_conn, ex_id, msg.wait, seen)
        if route.conn_id is not None:
            # An ID that equals a namespace name shares its channel (docs/topics/protocol.md#bus):
            # the union is reached once, not each connection twice as Go does.
            msg.to = route.conn_id
            local.write_to_targets(msg, ex_conn, ex_id, msg.wait, seen)
