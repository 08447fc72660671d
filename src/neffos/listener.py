"""A listening socket that serves one endpoint through one transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conn import ServerAPI
    from .transports.base import Endpoint

__all__ = ["Listener"]


class Listener:
    """A listening socket of a server (from :meth:`neffos.Server.listen`)."""

    def __init__(
        self,
        endpoint: Endpoint,
        transport: str,
        aio_server: asyncio.Server,
        on_close: Callable[[Listener], None] | None = None,
        server: ServerAPI | None = None,
        *,
        tls: bool = False,
    ) -> None:
        #: the server it serves
        self.server = server
        #: what the listener serves (the server's HTTP rules and connections)
        self.endpoint = endpoint
        #: the name of the transport, e.g. ``"picows"``
        self.transport = transport
        #: whether connections are TLS (``listen(..., ssl=context)``): ``wss://`` URLs
        self.tls = tls
        self._aio_server: asyncio.Server | None = aio_server
        self._on_close = on_close
        address = aio_server.sockets[0].getsockname()
        #: the bound address
        self.host: str = str(address[0])
        #: the bound port (useful with ``port=0``)
        self.port: int = int(address[1])

    @property
    def path(self) -> str | None:
        """The URL path of the endpoint (``None``: every path)."""
        return self.endpoint.path

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._aio_server.sockets) if self._aio_server else ()

    @property
    def url(self) -> str:
        """``ws://host:port/path`` of this listener (``wss://`` with TLS)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host}:{self.port}{self.path or '/'}"

    async def serve_forever(self) -> None:
        """Wait until the listener is closed (or the task is cancelled)."""
        aio_server = self._aio_server
        if aio_server is not None:
            await aio_server.serve_forever()

    async def close(self) -> None:
        """Stop accepting connections (open connections are not closed)."""
        aio_server, self._aio_server = self._aio_server, None
        if aio_server is not None:
            aio_server.close()
            await aio_server.wait_closed()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
