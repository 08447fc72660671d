"""Faults of the exchanges against real brokers: restarts, a Redis Cluster losing a node."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest
from helpers import UNIT, Recorder
from helpers.brokers import WatchedStats, redis_cluster, running

import neffos
from neffos.exchange.redis import RedisStackExchange

pytestmark = pytest.mark.broker


class _OnLog(logging.Handler):
    """Calls ``action`` once, when a record with ``text`` is logged."""

    def __init__(self, text: str, action: Callable[[], None]) -> None:
        super().__init__()
        self.text = text
        self.action: Callable[[], None] | None = action

    def emit(self, record: logging.LogRecord) -> None:
        if self.action is not None and self.text in record.getMessage():
            action, self.action = self.action, None
            action()


async def _until_heard(got: Recorder, publish: Callable[[], Any], item: Any) -> None:
    """Publish a probe until it arrives (subscriptions travel through the broker)."""
    async with asyncio.timeout(10 * UNIT):
        while item not in got.items:
            await publish()
            try:
                await got.wait_for(lambda items: item in items, 0.1 * UNIT)
            except TimeoutError:
                continue


async def test_redis_never_echoes_a_publication_made_right_after_reconnecting() -> None:
    """The first publication after a broker restart is not delivered back to its node.

    It is made the moment the subscriber has resubscribed, before Redis's
    confirmations are read: without care its echo would not be expected, and
    the node's own clients would get the message a second time.
    """
    import redis.asyncio as aioredis

    async with running("redis") as broker:
        got = Recorder()
        exchange = RedisStackExchange(broker.address, channel_prefix="E", dial_timeout=2 * UNIT)
        exchange.stats = stats = WatchedStats()
        await exchange.start(lambda channel, data: got.add(data))
        hook = _OnLog("reconnected to Redis", lambda: exchange.publish("E.chat.", b"mine"))
        logging.getLogger("neffos.exchange").addHandler(hook)
        other = aioredis.Redis(host="127.0.0.1", port=broker.port)
        try:
            exchange.subscribe("E.chat.")
            await _until_heard(got, lambda: other.publish("E.chat.", b"probe"), b"probe")
            await broker.stop()
            await broker.start()
            await stats.wait("published", 1)  # "mine", published by the hook
            # Anything Redis sent us before "marker" has arrived once "marker" has.
            await _until_heard(got, lambda: other.publish("E.chat.", b"marker"), b"marker")
            assert b"mine" not in got.items
            assert stats.reconnects == 1 and stats.publish_failed == 0
        finally:
            logging.getLogger("neffos.exchange").removeHandler(hook)
            await other.aclose()
            await exchange.close()


async def test_chat_over_a_redis_cluster_survives_a_killed_node() -> None:
    """Two servers, every cluster node on both seed lists; the node they use dies mid-chat."""
    async with redis_cluster() as cluster:
        servers: list[neffos.Server] = []
        listeners: list[neffos.Listener] = []
        clients: list[neffos.Conn] = []
        got = {"kim": Recorder(), "lee": Recorder()}
        try:
            urls = []
            for _ in range(2):
                server = neffos.Server({"chat": {"say": _relay}}, ping_interval=None)
                server.use_stack_exchange(RedisStackExchange(
                    cluster_addresses=cluster.addresses, channel_prefix="C",
                    dial_timeout=1 * UNIT, max_reconnect_delay=0.2 * UNIT,
                ))
                servers.append(server)
                listeners.append(await server.listen())
                urls.append(listeners[-1].url)
            for name, url in zip(got, urls, strict=True):
                client = await neffos.dial(url, {"chat": {
                    "say": lambda ns, m, rec=got[name]: rec.add(m.text),
                }})
                clients.append(client)
                ns = await client.connect("chat")
                await ns.join_room("lobby")

            async def say(sender: int, text: str) -> None:
                ns = clients[sender].namespace("chat")
                assert ns is not None
                room = ns.room("lobby")
                assert room is not None
                room.emit("say", text)

            receiver = got["lee"]
            await _until_heard(receiver, lambda: say(0, "probe"), "probe")
            await say(0, "before")
            await receiver.wait_for(lambda items: "before" in items)

            watched = []
            for server in servers:
                exchange = server.stack_exchanges[0]
                exchange.stats = WatchedStats(**dataclasses.asdict(exchange.stats))
                watched.append(exchange.stats)
            await cluster.nodes[0].stop()  # the first seed: both servers talk to it
            for stats in watched:
                await stats.wait("reconnects", 1)
            await _until_heard(receiver, lambda: say(0, "probe after"), "probe after")
            await say(0, "after")
            await say(1, "back")
            await receiver.wait_for(lambda items: "after" in items)
            await got["kim"].wait_for(lambda items: "back" in items)
            texts = [t for t in receiver.items if not t.startswith("probe")]
            assert texts == ["before", "after"]  # in order, never twice
        finally:
            for client in clients:
                await client.aclose()
            for listener in listeners:
                await listener.close()
            for server in servers:
                await server.close()


def _relay(ns: neffos.NSConn, msg: neffos.Message) -> None:
    server = ns.conn.server
    assert server is not None
    server.broadcast(ns, msg)
