"""The small interfaces between the neffos engine and a WebSocket library.

* :class:`Socket` is one WebSocket connection as the engine uses it: ``send``,
  ``ping``, ``close``. Sends never block: the bytes go to the OS or to the
  library's buffer, and ``send`` returns how many bytes are still waiting, so
  the engine can enforce its ``send_buffer`` limit.
* :class:`Receiver` is what a socket reports to (a connection): every data
  message, every pong, flow control, and the end of the socket, once.
* :class:`Endpoint` is what the server side of a transport serves: it routes
  HTTP requests (the rules of docs/topics/protocol.md#http) and accepts opened WebSockets.
  Servers make endpoints (:meth:`neffos.Server.endpoint`); transports never
  see the server itself.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from .._http import Router

if TYPE_CHECKING:
    from .._http import Request
    from .frames import Shared

__all__ = ["Endpoint", "QuietLog", "Receiver", "Socket", "peer_of", "tls_failure"]


class Receiver(Protocol):
    """What a Socket reports to (a connection)."""

    def feed(self, data: bytes, binary: bool) -> None:
        """One complete data message (``binary``: it came in a binary frame)."""
        ...

    def alive(self) -> None:
        """A pong arrived."""
        ...

    def socket_closed(self, exc: BaseException | None) -> None:
        """The connection is gone (called once)."""
        ...

    def writing_paused(self) -> None:
        """The socket's buffer passed its high-water mark."""
        ...

    def writing_resumed(self) -> None:
        """The socket's buffer drained below its low-water mark."""
        ...

    def control_sent(self, pending: int) -> None:
        """The socket wrote a control frame on its own (a pong); ``pending`` bytes wait."""
        ...

    def socket_closing(self) -> None:
        """The socket started closing on its own (the peer's close frame, a
        protocol error): it must be gone within ``close_timeout`` too."""
        ...


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

    def send_shared(self, shared: Shared) -> int:
        """:meth:`send` for a message that many sockets send (a broadcast): a
        server socket that frames its own messages takes the shared frame."""
        ...

    def ping(self) -> None:
        """Send a WebSocket ping (the peer's pong arrives as ``receiver.alive()``)."""
        ...

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and close the connection once flushed. Idempotent."""
        ...

    def abort(self) -> None:
        """Drop the connection now, without flushing (a peer that does not read).

        Idempotent, and nothing happens once the connection is gone."""
        ...

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), if known."""
        ...

    @property
    def close_code(self) -> int | None:
        """How the connection ended, once it did: the code of the peer's close
        frame (1005 when it had none), else of the close frame the socket sent
        on its own (a protocol error: 1002, 1007, 1009); ``None`` otherwise."""
        ...


class Endpoint(Router, Protocol):
    """A server endpoint, as the server side of a transport sees it."""

    @property
    def max_message_size(self) -> int:
        """The largest data message to accept, in bytes."""
        ...

    @property
    def close_timeout(self) -> float:
        """Seconds a closing connection may take before it is dropped."""
        ...

    def subprotocol(self, request: Request) -> str | None:
        """The WebSocket subprotocol to answer ``request`` with, if any."""
        ...

    def accept(self, socket: Socket) -> None:
        """A WebSocket of this endpoint is open: make it a connection."""
        ...


def peer_of(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    """The (host, port) of a connected asyncio transport, if it has one."""
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


def tls_failure(exc: BaseException) -> str | None:
    """What failed in the TLS handshake, if ``exc`` (or an exception behind it) says so.

    Clients put this in their DialError: libraries wrap the ssl module's errors
    differently, and "the certificate did not verify" must read the same on
    every transport.
    """
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:  # short; never follow a cycle
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    errors = [e for e in chain if isinstance(e, ssl.SSLError)]
    if not errors:
        return None
    # The ssl module's own error is the innermost; a library's wrapper
    # (aiohttp's) subclasses it without filling in its attributes.
    inner = errors[-1]
    if isinstance(inner, ssl.SSLCertVerificationError):
        detail = getattr(inner, "verify_message", None) or inner
        return f"the server's TLS certificate did not verify ({detail})"
    return f"the TLS handshake failed ({getattr(inner, 'reason', None) or inner})"


class QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The log of a WebSocket library, in neffos terms.

    Libraries log every connection and disconnection at INFO and the peer's
    protocol errors at ERROR. Here those are routine or the peer's doing, so
    they go to DEBUG; only records with a traceback (bugs) keep their level.
    An adapter, not a Logger: a library then logs through it as it is instead
    of creating a child Logger per connection.
    """

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("exc_info"):
            level = min(level, logging.DEBUG)
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)
