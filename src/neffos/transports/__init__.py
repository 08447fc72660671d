"""WebSocket libraries behind one small interface, and the registry that loads them.

Each transport is a module of this package (``picows``, the default, and
``websockets``, ``aiohttp``) that provides what :class:`Transport` describes:
``connect`` for the client side and ``listen`` for the server side. The
connections of both sides are :class:`~neffos.transports.base.Socket` objects
reporting to a :class:`~neffos.transports.base.Receiver` (the engine).
Libraries are imported only when their transport is loaded, so ``import
neffos`` stays light, and a missing library raises an ImportError that names
the pip extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import asyncio
    from ssl import SSLContext

    from .base import Endpoint, Receiver, Socket

__all__ = ["DEFAULT", "NAMES", "Connector", "Transport", "load"]

#: the transport used when none is named: the fastest
DEFAULT = "picows"
#: every transport that :func:`load` knows
NAMES = ("picows", "websockets", "aiohttp")


class Connector(Protocol):
    """The client side of a transport (a transport module, or a testing connector)."""

    NAME: str

    async def connect(
        self,
        receiver: Receiver,
        url: str,
        headers: list[tuple[str, str]],
        *,
        timeout: float | None,
        max_message_size: int,
        ssl: SSLContext | None = None,
    ) -> Socket:
        """Open a WebSocket to ``url`` whose frames go to ``receiver``.

        ``ssl`` is the TLS context for a ``wss://`` URL (``None``: the default
        context, which verifies the server's certificate against the system's
        CAs); it is not used with ``ws://``.

        Raises:
            DialError: the connection, the TLS handshake (a certificate that
                does not verify) or the WebSocket handshake failed.
        """
        ...


class Transport(Connector, Protocol):
    """What a transport module provides: both sides."""

    async def listen(
        self, endpoint: Endpoint, host: str, port: int, **options: Any
    ) -> asyncio.Server:
        """Serve ``endpoint`` on ``host:port`` (``options`` go to ``loop.create_server``)."""
        ...


def load(name: str) -> Transport:
    """Import the transport module ``name``.

    Raises:
        ValueError: unknown transport name.
        ImportError: its library is missing (names the pip extra).
    """
    if name not in NAMES:
        raise ValueError(f"unknown transport {name!r}; choose one of {', '.join(NAMES)}")
    return cast("Transport", importlib.import_module(f"{__name__}.{name}"))


if TYPE_CHECKING:  # every transport module satisfies the protocol
    from . import aiohttp as _aiohttp
    from . import picows as _picows
    from . import websockets as _websockets

    _checked: tuple[Transport, ...] = (_picows, _aiohttp, _websockets)
