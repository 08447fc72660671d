"""Scale-out over NATS (nats-py), compatible with Go neffos.

Subjects (docs/topics/protocol.md#bus): ``<prefix>.<namespace>`` and ``<prefix>.<id>``
(default prefix ``neffos``), and the bare ask token for ``Server.ask`` answers.
Payloads are raw neffos frames.

One node holds one NATS connection whatever the number of WebSocket clients,
opened with *no echo*: the node never receives its own publications (it delivers
to its local clients directly). nats-py reconnects on its own and restores the
subscriptions. Publications made while the connection is down are dropped and
counted in ``stats.publish_failed`` (pub/sub is at-most-once): handing them to
nats-py's reconnect buffer would only replay them later to whichever nodes
happen to have resubscribed by then, without anyone knowing what was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

try:
    from nats.aio.client import Client as NatsClient
    from nats.errors import Error as NatsError
    from nats.errors import SlowConsumerError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "NatsStackExchange needs nats-py: pip install 'neffos[nats]'"
    ) from exc

import contextlib

from .base import Deliver, StackExchange

__all__ = ["NatsStackExchange"]

log = logging.getLogger("neffos.exchange")

_ERRORS = (NatsError, OSError, asyncio.TimeoutError)


class NatsStackExchange(StackExchange):
    """A NATS bus shared with other neffos nodes (Go or Python).

    Args:
        url: one or more server URLs, comma-separated
            (``"nats://127.0.0.1:4222,nats://10.0.0.2:4222"``).
        subject_prefix: the prefix every node of the application must share
            (Go's ``SubjectPrefix``, default ``neffos``).
        options: extra keyword arguments for ``nats.connect`` (credentials,
            TLS, ``reconnect_time_wait``...).
        dial_timeout: seconds to reach a server at start; past it, ``start``
            (and so ``Server.listen``) raises ``ConnectionError``.
    """

    echoes_own = False

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        subject_prefix: str = "neffos",
        options: dict[str, Any] | None = None,
        dial_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.prefix = subject_prefix
        self.dial_timeout = dial_timeout
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self._options = dict(options or {})
        self._nc: Any = None
        self._deliver: Deliver | None = None
        self._subs: dict[str, Any] = {}
        self._commands: deque[tuple[bool, str]] = deque()
        self._command_wake = asyncio.Event()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[str] = set()
        self._closing = False
        self._lost_in_outage = 0  # publications dropped since the connection went down

    def __repr__(self) -> str:
        return f"NatsStackExchange({','.join(self.servers)!r}, subject_prefix={self.prefix!r})"

    # -- names -------------------------------------------------------------------------

    def _subject(self, name: str) -> str | None:
        if not name:
            # "<prefix>." is not a valid subject: Go ignores the error and never
            # delivers; we say it once (docs/topics/protocol.md#bus).
            if "" not in self._warned:
                self._warned.add("")
                log.warning("NATS cannot carry messages of the namespace or ID \"\"")
            return None
        return f"{self.prefix}.{name}"

    def namespace_channel(self, namespace: str) -> str | None:
        return self._subject(namespace)

    def id_channel(self, conn_id: str) -> str | None:
        return self._subject(conn_id)

    @property
    def connections(self) -> int:
        return 1

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                # nats-py dropped a message because we did not keep up
                dropped = self.stats.receive_dropped = self.stats.receive_dropped + 1
                if dropped in (1, 10, 100) or not dropped % 1000:
                    log.warning("NATS slow consumer: %d message(s) dropped in total", dropped)
                return
            log.debug("NATS: %s", exc)

        async def on_disconnect() -> None:
            if not self._closing and self._nc is not None:  # not a failed first attempt
                log.warning("lost the NATS connection; reconnecting")

        async def on_reconnect() -> None:
            self.stats.reconnects += 1
            lost, self._lost_in_outage = self._lost_in_outage, 0
            log.warning(
                "reconnected to NATS; %d subscriptions restored, %d publication(s) lost meanwhile",
                len(self._subs), lost,
            )

        options: dict[str, Any] = {
            "servers": self.servers,
            "no_echo": True,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 5,
            "error_cb": on_error,
            "disconnected_cb": on_disconnect,
            "reconnected_cb": on_reconnect,
        }
        options.update(self._options)
        nc = NatsClient()
        try:
            # nats-py retries an unreachable server forever (we allow it to
            # reconnect forever later): the first connection has a deadline.
            async with asyncio.timeout(self.dial_timeout):
                await nc.connect(**options)
        except (*_ERRORS, TimeoutError) as exc:
            reason = nc.last_error or exc
            with contextlib.suppress(*_ERRORS):
                await nc.close()
            raise ConnectionError(
                f"cannot reach NATS ({', '.join(self.servers)}) within {self.dial_timeout}s: "
                f"{reason or type(exc).__name__}"
            ) from exc
        self._nc = nc
        loop = asyncio.get_running_loop()
        self._tasks = [
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
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except _ERRORS:
                await self._nc.close()

    # -- subscriptions -------------------------------------------------------------------

    def _callback(self, key: str) -> Any:
        deliver = self._deliver

        async def on_message(msg: Any) -> None:
            assert deliver is not None
            deliver(key, msg.data)

        return on_message

    def subscribe(self, channel: str) -> None:
        self._commands.append((True, channel))
        self._command_wake.set()

    def unsubscribe(self, channel: str) -> None:
        self._commands.append((False, channel))
        self._command_wake.set()

    async def _apply(self, add: bool, channel: str) -> None:
        if add:
            if channel not in self._subs:
                self._subs[channel] = await self._nc.subscribe(
                    channel, cb=self._callback(channel)
                )
        else:
            sub = self._subs.pop(channel, None)
            if sub is not None:
                await sub.unsubscribe()

    async def _command_loop(self) -> None:
        while True:
            await self._command_wake.wait()
            self._command_wake.clear()
            while self._commands:
                add, channel = self._commands.popleft()
                try:
                    await self._apply(add, channel)
                except _ERRORS as exc:
                    log.warning("NATS %s %r failed: %s",
                                "subscribe" if add else "unsubscribe", channel, exc)

    async def subscribe_now(self, channel: str) -> None:
        await self._apply(True, channel)
        await self._nc.flush(timeout=5)  # the server has the subscription

    def unsubscribe_now(self, channel: str) -> None:
        self.unsubscribe(channel)

    # -- publishing -----------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> None:
        self._queue.append((channel, payload))
        self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self._nc
            while self._queue:
                channel, payload = self._queue.popleft()
                if not nc.is_connected:
                    self._lost()
                    continue
                try:
                    # Buffered by nats-py (also while it reconnects); rarely awaits.
                    await nc.publish(channel, payload)
                except _ERRORS as exc:
                    log.debug("NATS publish failed: %s", exc)
                    self._lost()
                    continue
                self.stats.published += 1

    def _lost(self) -> None:
        self.stats.publish_failed += 1
        self._lost_in_outage += 1
        total = self.stats.publish_failed
        if self._lost_in_outage == 1 or not total % 1000:
            log.warning("NATS is unreachable: publications are lost (%d in total)", total)
