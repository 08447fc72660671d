"""Scale-out over Redis pub/sub (redis-py asyncio), compatible with Go neffos.

Channel names (docs/topics/protocol.md#bus): ``<prefix>.<namespace>.`` and
``<prefix>.<id>.`` (pattern subscriptions, as Go), and the bare ask token for
``Server.ask`` answers (plain subscription). Payloads are raw neffos frames.

One node holds two Redis connections whatever the number of WebSocket clients:
one subscriber (every subscription of the node) and one publisher (publications
are pipelined in order).

Redis delivers a node's own publications to its own subscriptions, and the node
has already delivered them to its local clients. The exchange recognises those
echoes: a publication sent on a channel whose subscription Redis has confirmed
is expected back exactly once, and that one arrival is dropped. Publications on
unconfirmed channels (a subscription still in flight) expect nothing, failed
ones are forgotten, and every expectation is dropped when the subscriber
reconnects, so a stale one can never swallow another node's identical message.
After a reconnection every pattern is unconfirmed again until Redis says so.
Only exact channel matches are delivered (a glob character in a name is taken
literally), so no client gets a message twice through two patterns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisStackExchange needs redis-py: pip install 'neffos[redis]'"
    ) from exc

import contextlib

from .base import Deliver, StackExchange

__all__ = ["RedisStackExchange"]

log = logging.getLogger("neffos.exchange")

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
#: how long an expected echo is awaited before it is forgotten
_ECHO_TTL = 10.0


def _address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, 6379
    return host.strip("[]"), int(port)


class RedisStackExchange(StackExchange):
    """A Redis pub/sub bus shared with other neffos nodes (Go or Python).

    Args:
        address: ``"host:port"`` of the Redis server (default ``127.0.0.1:6379``).
        url: a ``redis://``/``rediss://``/``unix://`` URL instead of ``address``.
        cluster_addresses: seed nodes of a Redis Cluster; classic pub/sub is
            cluster-wide, so the node talks to the first seed that answers (and
            moves on to the next one when it fails).
        password: the password of the Redis server or user.
        username: the Redis user (ACL), with ``password``.
        db: the database number.
        dial_timeout: seconds to connect (and to wait for a command).
        pool_size: connections allowed in the publishing pool.
        channel_prefix: the prefix every node of the application must share
            (Go's ``channel`` argument, e.g. ``"MyChatApp"``).
        max_reconnect_delay: cap of the exponential backoff between attempts to
            reach the broker again.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:6379",
        *,
        url: str | None = None,
        cluster_addresses: Sequence[str] | None = None,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        dial_timeout: float = 5.0,
        pool_size: int = 10,
        channel_prefix: str = "neffos",
        max_reconnect_delay: float = 5.0,
    ) -> None:
        super().__init__()
        self.prefix = channel_prefix
        self._url = url
        self._seeds = list(cluster_addresses or [address])
        self._auth: dict[str, Any] = {"password": password, "username": username, "db": db}
        self._timeout = dial_timeout
        self._pool_size = pool_size
        self._max_delay = max_reconnect_delay
        self._deliver: Deliver | None = None
        self._pub: aioredis.Redis | None = None
        self._sub_client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._patterns: set[str] = set()
        self._channels: set[str] = set()
        #: patterns whose subscription Redis confirmed on the current connection
        self._confirmed: set[str] = set()
        #: echoes of our own publications still expected: (channel, payload) -> [n, time]
        self._echoes: dict[tuple[str, bytes], list[float]] = {}
        #: channels with a (un)subscription Redis has not confirmed yet -> how many
        self._inflight: dict[str, int] = {}
        self._settled = asyncio.Event()
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._commands: deque[tuple[str, str]] = deque()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._command_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pub_down_until = 0.0
        self._pub_failures = 0
        self._connected = asyncio.Event()
        self._closing = False
        self._pub_seed = ""

    def __repr__(self) -> str:
        target = self._url or ",".join(self._seeds)
        return f"RedisStackExchange({target!r}, channel_prefix={self.prefix!r})"

    # -- names -------------------------------------------------------------------------

    def namespace_channel(self, namespace: str) -> str:
        return f"{self.prefix}.{namespace}."

    def id_channel(self, conn_id: str) -> str:
        return f"{self.prefix}.{conn_id}."

    @property
    def connections(self) -> int:
        return 2  # one subscriber, one publisher

    # -- lifecycle ---------------------------------------------------------------------

    def _client(self, seed: str) -> aioredis.Redis:
        options: dict[str, Any] = {
            "socket_connect_timeout": self._timeout,
            "socket_timeout": None,
            "max_connections": self._pool_size,
            # No hidden retries: a lost connection must surface here, so that it
            # is logged, counted and followed by a resubscription.
            "retry": Retry(NoBackoff(), 0),
            **self._auth,
        }
        if self._url:
            return aioredis.Redis.from_url(self._url, **options)
        host, port = _address(seed)
        return aioredis.Redis(host=host, port=port, **options)

    async def _connect(self) -> tuple[aioredis.Redis, Any]:
        """A subscriber connection to the first seed that answers."""
        error: BaseException | None = None
        for seed in self._seeds:
            client = self._client(seed)
            try:
                async with asyncio.timeout(self._timeout):
                    await client.ping()
                    pubsub = client.pubsub()
                    if self._patterns:
                        # Redis applies these before we read its confirmations:
                        # publications on them wait until then (see _publish_loop),
                        # or their echoes would not be expected and come back to
                        # our own clients a second time.
                        for pattern in self._patterns:
                            self._change(pattern)
                        await pubsub.psubscribe(*self._patterns)
                    if self._channels:
                        await pubsub.subscribe(*self._channels)
                    if not (self._patterns or self._channels):
                        # redis-py needs a subscription to hold the connection
                        await pubsub.subscribe(f"{self.prefix}.__neffos_node__")
                if self._pub is None or self._pub_seed != seed:
                    if self._pub is not None:
                        await self._pub.aclose()
                    self._pub = self._client(seed)
                    self._pub_seed = seed
                return client, pubsub
            except _ERRORS as exc:
                error = exc
                self._inflight.clear()  # nothing will confirm them on this client
                self._settled.set()
                await client.aclose()
        raise ConnectionError(f"cannot reach Redis ({', '.join(self._seeds)}): {error}")

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._sub_client, self._pubsub = await self._connect()
        self._connected.set()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read()),
            loop.create_task(self._publish_loop()),
            loop.create_task(self._command_loop()),
        ]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        if self._pubsub is not None:
            await self._pubsub.aclose()
        for client in (self._sub_client, self._pub):
            if client is not None:
                await client.aclose()

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, channel: str) -> None:
        self._patterns.add(channel)
        self._change(channel)
        self._commands.append(("psubscribe", channel))
        self._command_wake.set()

    def unsubscribe(self, channel: str) -> None:
        self._patterns.discard(channel)
        self._change(channel)
        self._commands.append(("punsubscribe", channel))
        self._command_wake.set()

    def _change(self, channel: str) -> None:
        # Until Redis confirms, nobody knows whether a publication on this
        # channel comes back to us: publications to it wait (see _publish_loop).
        self._inflight[channel] = self._inflight.get(channel, 0) + 1

    def _settle(self, channel: str) -> None:
        count = self._inflight.get(channel, 0) - 1
        if count > 0:
            self._inflight[channel] = count
        else:
            self._inflight.pop(channel, None)
            self._settled.set()

    async def subscribe_now(self, channel: str) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._confirm[channel] = fut
        self._channels.add(channel)
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(fut, self._timeout)
        except BaseException:
            self._channels.discard(channel)
            raise
        finally:
            self._confirm.pop(channel, None)

    def unsubscribe_now(self, channel: str) -> None:
        self._channels.discard(channel)
        self._commands.append(("unsubscribe", channel))
        self._command_wake.set()

    async def _command_loop(self) -> None:
        while True:
            await self._command_wake.wait()
            self._command_wake.clear()
            while self._commands:
                await self._connected.wait()
                command, channel = self._commands.popleft()
                try:
                    await getattr(self._pubsub, command)(channel)
                except _ERRORS as exc:
                    # The reader reconnects and subscribes to everything again.
                    log.debug("redis %s %r failed: %s", command, channel, exc)

    # -- receiving -----------------------------------------------------------------------

    async def _read(self) -> None:
        delay = 0.05
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except _ERRORS as exc:
                if self._closing:
                    return
                self._connected.clear()
                self._confirmed.clear()
                self._echoes.clear()
                self._inflight.clear()
                self._settled.set()
                log.warning("lost the Redis subscriber connection: %s; reconnecting", exc)
                await self._reconnect_subscriber(delay)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "pmessage":
                channel = _text(message["channel"])
                if _text(message["pattern"]) != channel:
                    continue  # only exact names, see the module docstring
                data = bytes(message["data"])
                echo = self._echoes.get((channel, data))
                if echo is not None:
                    echo[0] -= 1
                    if echo[0] <= 0:
                        del self._echoes[(channel, data)]
                    continue
            elif kind == "message":
                channel = _text(message["channel"])
                data = bytes(message["data"])
            else:
                name = _text(message["channel"])
                if kind == "psubscribe":
                    self._confirmed.add(name)
                    self._settle(name)
                elif kind == "punsubscribe":
                    self._confirmed.discard(name)
                    self._settle(name)
                    for key in [k for k in self._echoes if k[0] == name]:
                        del self._echoes[key]
                elif kind == "subscribe":
                    fut = self._confirm.get(name)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                continue
            assert self._deliver is not None
            self._deliver(channel, data)

    async def _reconnect_subscriber(self, delay: float) -> None:
        old, old_client = self._pubsub, self._sub_client
        with contextlib.suppress(*_ERRORS):
            if old is not None:
                await old.aclose()
            if old_client is not None:
                await old_client.aclose()
        while True:
            await asyncio.sleep(delay)
            try:
                self._sub_client, self._pubsub = await self._connect()
            except ConnectionError as exc:
                log.info("Redis still unreachable: %s", exc)
                delay = min(delay * 2, self._max_delay)
                continue
            self.stats.reconnects += 1
            self._pub_down_until = 0.0
            self._echoes.clear()
            if self._pub is not None:
                # its pooled connections died with the broker too
                await self._pub.connection_pool.disconnect()
            self._connected.set()
            log.warning("reconnected to Redis; %d subscriptions restored",
                        len(self._patterns) + len(self._channels))
            return

    # -- publishing -----------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> None:
        if self._pub_down_until and time.monotonic() < self._pub_down_until:
            self.stats.publish_failed += 1  # at-most-once: the broker is down
            return
        self._queue.append((channel, payload))
        self._wake.set()

    def _expect_echoes(self, batch: list[tuple[str, bytes]], sign: int) -> None:
        now = time.monotonic()
        for key in batch:
            if key[0] not in self._confirmed:
                continue
            entry = self._echoes.get(key)
            if entry is None:
                if sign > 0:
                    self._echoes[key] = [1, now]
            else:
                entry[0] += sign
                entry[1] = now
                if entry[0] <= 0:
                    del self._echoes[key]
        if len(self._echoes) > 1024:  # forget echoes that never came back
            for stale in [k for k, v in self._echoes.items() if now - v[1] > _ECHO_TTL]:
                del self._echoes[stale]

    async def _wait_settled(self, batch: list[tuple[str, bytes]]) -> None:
        """Wait (one round trip at most) for the subscription changes of the batch."""
        if not self._inflight:
            return
        try:
            async with asyncio.timeout(self._timeout):
                while any(channel in self._inflight for channel, _ in batch):
                    self._settled.clear()
                    await self._settled.wait()
        except TimeoutError:
            log.debug("Redis did not confirm a subscription in time")

    async def _send_batch(self, batch: list[tuple[str, bytes]]) -> None:
        assert self._pub is not None
        async with self._pub.pipeline(transaction=False) as pipe:
            for channel, payload in batch:
                pipe.publish(channel, payload)
            await pipe.execute()

    async def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 512))]
                await self._wait_settled(batch)
                # Expected before sending: the echo may be read before execute() returns.
                expected = [key for key in batch if key[0] in self._confirmed]
                self._expect_echoes(expected, +1)
                try:
                    try:
                        await self._send_batch(batch)
                    except (ConnectionError, OSError, RedisError):
                        # A pooled connection may have died with a restarted
                        # broker: one fresh attempt before counting a loss.
                        assert self._pub is not None
                        await self._pub.connection_pool.disconnect()
                        await self._send_batch(batch)
                except _ERRORS as exc:
                    self._expect_echoes(expected, -1)
                    lost = len(batch) + len(self._queue)
                    self._queue.clear()
                    self.stats.publish_failed += lost
                    self._pub_failures += 1
                    self._pub_down_until = time.monotonic() + delay
                    log.warning(
                        "Redis publish failed (%s): %d message(s) lost, %d in total",
                        exc, lost, self.stats.publish_failed,
                    )
                    delay = min(delay * 2, self._max_delay)
                    break
                self.stats.published += len(batch)
                delay = 0.05
                self._pub_down_until = 0.0


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
