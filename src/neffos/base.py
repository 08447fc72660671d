"""The bottom layer of a connection: the state all its layers share, and the hooks they call.

:class:`~neffos.Conn` is one object built from layers (see :mod:`neffos.conn`).
This one holds what every layer reads (the connection's ID, socket, handler,
settings, loop, task owner, closed flag), and declares, as real methods, the
hooks that a lower layer calls and a higher one implements: the contract
between the layers, in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .errors import ConnectionClosed

if TYPE_CHECKING:
    from .config import Config, Tasks
    from .handlers import ConnHandler
    from .protocol import Message, TokenGenerator
    from .transports.base import Socket

__all__ = ["ConnBase"]


class ConnBase:
    """The shared state of a connection's layers, and the hooks between them."""

    __slots__ = (
        "__weakref__",
        "_cfg",
        "_closed",
        "_loop",
        "_tasks",
        "_tokens",
        "handler",
        "id",
        "reconnect_tries",
        "socket",
    )

    def __init__(
        self,
        socket: Socket,
        handler: ConnHandler,
        cfg: Config,
        tasks: Tasks,
        tokens: TokenGenerator,
        conn_id: str = "",
    ) -> None:
        #: the connection's ID (the server's ``id_generator``, or the one ``A`` gave)
        self.id = conn_id
        #: the transport's socket; a client's changes when it reconnects
        self.socket = socket
        #: the compiled handler: namespaces and events this side understands
        self.handler = handler
        #: ``X-Websocket-Reconnect`` of the handshake (client: its own attempt)
        self.reconnect_tries = 0
        self._cfg = cfg  # limits shared with the server/client
        self._tasks = tasks  # the server's/client's task owner
        self._tokens = tokens  # wait tokens for asks
        self._loop = asyncio.get_running_loop()
        self._closed = False  # set at once by close(); never reset (a client reconnects)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed()

    # -- hooks: called by a layer, implemented by a layer above it -------------------

    def write_encoded(self, data: bytes, binary: bool) -> bool:
        """Send one encoded frame; ``False`` if nothing was sent (``conn``)."""
        raise NotImplementedError

    def can_write(self, msg: Message) -> bool:
        """Whether ``msg`` passes the write checks (``conn``).

        Wire protocol: docs/topics/protocol.md#write-checks.
        """
        raise NotImplementedError

    def _fail(self, code: int, reason: str, *, abort: bool = False) -> None:
        """The connection is broken: close it, or reconnect (``conn``, ``client``).

        ``abort``: the peer does not read, so nothing is flushed (no close frame)."""
        raise NotImplementedError

    def _feed_preack(self, data: bytes, binary: bool) -> None:
        """A frame that arrived before the handshake completed (``handshake``, ``client``)."""
        raise NotImplementedError

    def _resolve_answer(self, msg: Message) -> bool:
        """Hand ``msg`` to the ask waiting for its token, if any (``asks``)."""
        raise NotImplementedError

    def _dispatch(self, msg: Message) -> Awaitable[None] | None:
        """Process one message; return what is left to await (``dispatch``)."""
        raise NotImplementedError
