"""Shared test helpers: the test environment, event recorders and scaled timeouts.

* :func:`environment` gives a test its servers and clients on one transport
  (the in-memory pair or a real WebSocket library on 127.0.0.1, port 0) and
  closes them all at the end.
* :class:`Recorder` collects what handlers saw and lets a test wait for it.
* Timeouts are multiples of :data:`UNIT` (env ``NEFFOS_TEST_UNIT``, default
  1 s) so a slow machine can scale them; nothing synchronises with sleeps.

Submodules: :mod:`helpers.raw` (a raw WebSocket peer), :mod:`helpers.brokers`
(redis-server and nats-server processes), :mod:`helpers.node_proc` (a server
node process for scale-out tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import neffos
from neffos.client import ClientConn
from neffos.listener import Listener

from . import asgi
from .asgi import AsgiHost

__all__ = [
    "ALL_TRANSPORTS",
    "NETWORK_TRANSPORTS",
    "SERVER_TRANSPORTS",
    "TEST_TIMEOUT",
    "UNIT",
    "Env",
    "Recorder",
    "environment",
    "loop_factory",
]

UNIT = float(os.environ.get("NEFFOS_TEST_UNIT", "1"))
TEST_TIMEOUT = 60 * UNIT

#: WebSocket libraries with both sides (neffos listeners and clients)
NETWORK_TRANSPORTS = ["picows", "websockets", "aiohttp"]
#: "asgi": the server as an ASGI app under uvicorn, its clients on picows
ALL_TRANSPORTS = ["memory", *NETWORK_TRANSPORTS, "asgi"]
#: every server side that a real network client reaches
SERVER_TRANSPORTS = [*NETWORK_TRANSPORTS, "asgi"]


class Env:
    """Servers and clients of one test, all on one transport; closed at the end."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.servers: list[neffos.Server] = []
        self.listeners: dict[neffos.Server, Listener | AsgiHost] = {}
        self.clients: list[ClientConn] = []

    async def server(self, handler: Any, **options: Any) -> neffos.Server:
        options.setdefault("ping_interval", None)
        server = neffos.Server(handler, **options)
        self.servers.append(server)
        if self.transport != "memory":
            await self.listen(server)
        return server

    async def listen(self, server: neffos.Server, port: int = 0) -> None:
        """Serve ``server`` on ``port`` (another server's, after a restart)."""
        if server not in self.servers:
            self.servers.append(server)
        if self.transport == "asgi":
            app = neffos.ASGIApp(server, path="/echo")
            self.listeners[server] = await asgi.host(app, port=port)
        else:
            self.listeners[server] = await server.listen(
                "127.0.0.1", port, path="/echo", transport=self.transport
            )

    @property
    def client_transport(self) -> str:
        """The transport of clients: the same, or picows for servers on "asgi"."""
        return "picows" if self.transport == "asgi" else self.transport

    def url(self, server: neffos.Server) -> str:
        if self.transport == "memory":
            return "memory://neffos/echo"
        return self.listeners[server].url

    async def dial(self, server: neffos.Server, handler: Any, **options: Any) -> ClientConn:
        options.setdefault("timeout", 5 * UNIT)
        options.setdefault("ping_interval", None)
        if self.transport == "memory":
            client = await neffos.testing.dial_memory(
                server, handler, url=self.url(server), **options
            )
        else:
            client = await neffos.dial(
                self.url(server), handler, transport=self.client_transport, **options
            )
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        for server in self.servers:
            listener = self.listeners.get(server)
            if listener is not None:
                await listener.close()
            await server.close()


@contextlib.asynccontextmanager
async def environment(transport: str) -> AsyncIterator[Env]:
    env = Env(transport)
    try:
        yield env
    finally:
        await env.aclose()


class Recorder:
    """Collects events from handlers and lets a test wait for them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 5 * UNIT) -> list[Any]:
        """Wait until ``predicate(items)`` is true; return the items."""
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()
        return self.items

    async def wait_len(self, n: int, timeout: float = 5 * UNIT) -> list[Any]:
        return await self.wait_for(lambda items: len(items) >= n, timeout)

    def clear(self) -> None:
        self.items.clear()


def loop_factory() -> object:
    """``NEFFOS_TEST_LOOP=uvloop`` runs the whole suite on uvloop."""
    if os.environ.get("NEFFOS_TEST_LOOP") == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None
