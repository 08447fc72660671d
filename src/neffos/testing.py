"""Testing helpers: connect clients to a server without any network.

    server = neffos.Server(events)
    client = await neffos.testing.dial_memory(server, events, headers={"X-Username": "kim"})

The in-memory transport runs the real engine on both sides (handshake, ordering,
close frames), so application tests need neither ports nor a WebSocket library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ssl import SSLContext
from typing import Any
from urllib.parse import urlsplit

from ._http import Headers, Request
from .client import ClientConn, Dialing, dial
from .errors import DialError
from .handlers import HandlerSpec
from .server import Server
from .transports import Connector
from .transports.base import Receiver, Socket
from .transports.memory import MemorySocket, socket_pair

__all__ = ["ClientConn", "MemorySocket", "dial_memory", "memory_transport", "socket_pair"]


class _MemoryConnector:
    NAME = "memory"

    def __init__(self, server: Server) -> None:
        self.server = server

    async def connect(
        self,
        receiver: Receiver,
        url: str,
        headers: list[tuple[str, str]],
        *,
        timeout: float | None,
        max_message_size: int,
        ssl: SSLContext | None = None,  # nothing to encrypt in memory
    ) -> Socket:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        server_request = Request("GET", target, Headers(headers), ("memory", 0))
        endpoint = self.server.endpoint()
        answer = endpoint.route(server_request)
        if answer is not None:
            raise DialError(f"cannot connect to {url}: HTTP {answer[0]}")
        client_request = Request("GET", target, Headers(headers))
        client_end, server_end = socket_pair(client_request, server_request)
        client_end.receiver = receiver
        await self.server.start()
        endpoint.accept(server_end)
        return client_end


def memory_transport(server: Server) -> Connector:
    """A connector for ``neffos.dial(..., transport=memory_transport(server))``."""
    return _MemoryConnector(server)


def dial_memory(
    server: Server,
    handler: HandlerSpec,
    *,
    url: str = "memory://neffos/",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    **options: Any,
) -> Dialing:
    """Dial ``server`` over the in-memory transport (same options as :func:`neffos.dial`).

    Like :func:`neffos.dial`: await it, or use ``async with dial_memory(...) as conn``.
    """
    return dial(url, handler, headers=headers, transport=memory_transport(server), **options)
