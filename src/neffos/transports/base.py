"""The small Socket interface between the neffos engine and a WebSocket library.

A transport module provides

* a :class:`Socket` subclass: ``send``, ``ping``, ``close`` and ``remote_address``;
  it reports to its ``receiver`` (the connection) with ``feed(data, binary)``
  for every data message, ``alive()`` for every pong, ``socket_closed(exc)``
  once, and ``writing_paused()``/``writing_resumed()`` for flow control;
* ``async def connect(receiver, url, headers, *, timeout, max_message_size)``
  returning an open client Socket (raises :class:`neffos.DialError`);
* ``async def listen(endpoint, host, port, **options)`` returning an
  ``asyncio.Server`` whose connections go through :class:`neffos._http.HttpFront`
  and are then upgraded by :meth:`Transport.upgrade`.

Sends never block: the bytes go to the OS or to the library's buffer, and
``send`` returns how many bytes are still waiting, so the engine can enforce its
``send_buffer`` limit.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._http import Request


class Receiver(Protocol):
    """What a Socket reports to (a connection)."""

    def feed(self, data: bytes, binary: bool) -> None: ...

    def alive(self) -> None: ...

    def socket_closed(self, exc: BaseException | None) -> None: ...

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...


class Socket(Protocol):
    """What the engine needs from a WebSocket connection."""

    #: the Receiver (connection) the socket reports to; set by the engine
    receiver: Receiver | None
    #: the HTTP request that opened the connection (on clients: the one sent)
    request: Request | None
    #: the name of the transport, e.g. ``"picows"``
    transport_name: str

    def send(self, data: bytes, binary: bool) -> int:
        """Queue one data message; return the number of bytes not yet written out."""
        ...

    def ping(self) -> None:
        """Send a WebSocket ping (the peer's pong arrives as ``receiver.alive()``)."""
        ...

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and close the connection. Idempotent."""
        ...

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), if known."""
        ...


def peer_of(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None
