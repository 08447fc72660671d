"""An in-memory transport: two sockets wired together inside one event loop.

Used by engine tests and offered through :mod:`neffos.testing`. Delivery is
asynchronous (``loop.call_soon``), in order, like a real socket.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .base import Receiver
from .frames import Shared

if TYPE_CHECKING:
    from .._http import Request

NAME = "memory"


class MemorySocket:
    """One end of an in-memory connection."""

    __slots__ = ("_closed", "_loop", "close_code", "peer", "receiver", "request")

    transport_name = NAME

    def __init__(self, request: Request | None = None) -> None:
        self.receiver: Receiver | None = None
        self.request = request
        self.peer: MemorySocket | None = None
        self._closed = False
        self._loop = asyncio.get_running_loop()
        #: the code of the peer's close (see transports.base.Socket)
        self.close_code: int | None = None

    def send(self, data: bytes, binary: bool) -> int:
        if self._closed:
            raise ConnectionResetError("memory socket is closed")
        peer = self.peer
        if peer is not None:
            self._loop.call_soon(peer._receive, bytes(data), binary)
        return 0

    def send_shared(self, shared: Shared) -> int:
        return self.send(shared.data, shared.binary)

    def _receive(self, data: bytes, binary: bool) -> None:
        receiver = self.receiver
        if not self._closed and receiver is not None:
            receiver.feed(data, binary)

    def ping(self) -> None:
        if not self._closed and self.peer is not None and not self.peer._closed:
            self._loop.call_soon(self._pong)

    def _pong(self) -> None:
        if not self._closed and self.receiver is not None:
            self.receiver.alive()

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._shut(code)

    def abort(self) -> None:
        self._shut(None)  # the peer sees no close frame

    def _shut(self, code: int | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon(self._gone)
        peer = self.peer
        if peer is not None:
            self._loop.call_soon(peer._peer_closed, code)

    def _peer_closed(self, code: int | None) -> None:
        if not self._closed:
            self._closed = True
            self.close_code = code
            self._gone()

    def _gone(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            self.receiver = None
            receiver.socket_closed(None)

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return ("memory", 0)


def socket_pair(
    client_request: Request | None = None, server_request: Request | None = None
) -> tuple[MemorySocket, MemorySocket]:
    """Two connected sockets: (client end, server end)."""
    a = MemorySocket(client_request)
    b = MemorySocket(server_request)
    a.peer = b
    b.peer = a
    return a, b
