"""Scale-out over Redis pub/sub (redis-py asyncio), compatible with Go neffos.

Channel names (PROTOCOL.md §10.2): ``<prefix>.<namespace>.`` and
``<prefix>.<id>.`` (pattern subscriptions, as Go), and the bare ask token for
``Server.ask`` answers (plain subscription). Payloads are raw neffos frames.

One node holds two Redis connections whatever the number of WebSocket clients:
one subscriber (every subscription of the node) and one publisher (publications
are pipelined in order).
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
        password, username, db: authentication and database.
        dial_timeout: seconds to connect (and to wait for a command).
        pool_size: connections allowed in the publishing pool.
        channel_prefix: the prefix every node of the application must share
            (Go's ``channel`` argument, e.g. ``"MyChatApp"``).
        max_reconnect_delay: cap of the exponential backoff between attempts to
            reach the broker again.
    """

    echoes_own = True

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
            "retry_on_timeout": False,
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
        self._commands.append(("psubscribe", channel))
        self._command_wake.set()

    def unsubscribe(self, channel: str) -> None:
        self._patterns.discard(channel)
        self._commands.append(("punsubscribe", channel))
        self._command_wake.set()

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
                log.warning("lost the Redis subscriber connection: %s; reconnecting", exc)
                await self._reconnect_subscriber(delay)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "pmessage":
                key = message["pattern"]
            elif kind == "message":
                key = message["channel"]
            else:
                if kind == "subscribe":
                    fut = self._confirm.get(_text(message["channel"]))
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                continue
            assert self._deliver is not None
            self._deliver(_text(key), bytes(message["data"]))

    async def _reconnect_subscriber(self, delay: float) -> None:
        old = self._pubsub
        if old is not None:
            with contextlib.suppress(*_ERRORS):
                await old.aclose()
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

    async def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 512))]
                assert self._pub is not None
                try:
                    async with self._pub.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                except _ERRORS as exc:
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
