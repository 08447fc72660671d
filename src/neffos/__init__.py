"""neffos for Python: a real-time WebSocket framework for asyncio.

Wire-compatible with the Go neffos framework and the neffos.js client.
See README.md for a tour; the public API is everything in ``__all__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._http import Headers, Request
from .client import Reconnect, dial
from .conn import Conn, Exclude, NSConn, Room, exclude
from .encoding import marshal, unmarshal
from .errors import (
    AskTimeout,
    BadNamespace,
    BadRoom,
    CloseError,
    ConnectionClosed,
    DialError,
    HandshakeRefused,
    InvalidPayload,
    LimitExceeded,
    NeffosError,
    RemoteError,
    Reply,
    TooManyPendingAsks,
    WriteClosed,
    register_known_error,
    resolve_error,
)
from .handlers import (
    ConnHandler,
    EventHandler,
    Events,
    Namespaces,
    WithTimeout,
    event_prefix_matcher,
    event_trim_prefix_matcher,
    from_object,
    join_conn_handlers,
    with_timeout,
)
from .listener import Listener
from .protocol import (
    ON_ANY_EVENT,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_NATIVE_MESSAGE,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    is_system_event,
)
from .server import Server, UpgradeError, serve
from .stats import ServerStats
from .transports.asgi import ASGIApp

if TYPE_CHECKING:
    from . import testing
    from .transports.aiohttp_web import attach as attach_aiohttp  # noqa: F401 - lazy, below

# The one place the version is written: pyproject.toml reads it at build time
# ([tool.setuptools.dynamic]); tests/test_packaging.py checks the installed metadata.
__version__ = "0.1.0"

__all__ = [
    "ON_ANY_EVENT",
    "ON_NAMESPACE_CONNECT",
    "ON_NAMESPACE_CONNECTED",
    "ON_NAMESPACE_DISCONNECT",
    "ON_NATIVE_MESSAGE",
    "ON_ROOM_JOIN",
    "ON_ROOM_JOINED",
    "ON_ROOM_LEAVE",
    "ON_ROOM_LEFT",
    "ASGIApp",
    "AskTimeout",
    "BadNamespace",
    "BadRoom",
    "CloseError",
    "Conn",
    "ConnHandler",
    "ConnectionClosed",
    "DialError",
    "EventHandler",
    "Events",
    "Exclude",
    "HandshakeRefused",
    "Headers",
    "InvalidPayload",
    "LimitExceeded",
    "Listener",
    "Message",
    "NSConn",
    "Namespaces",
    "NeffosError",
    "Reconnect",
    "RemoteError",
    "Reply",
    "Request",
    "Room",
    "Server",
    "ServerStats",
    "TooManyPendingAsks",
    "UpgradeError",
    "WithTimeout",
    "WriteClosed",
    "dial",
    "event_prefix_matcher",
    "event_trim_prefix_matcher",
    "exclude",
    "from_object",
    "is_system_event",
    "join_conn_handlers",
    "marshal",
    "register_known_error",
    "resolve_error",
    "serve",
    "testing",
    "unmarshal",
    "with_timeout",
]


def __getattr__(name: str) -> Any:
    # Submodules with optional weight are imported on first use.
    import importlib

    if name in ("testing", "exchange"):
        return importlib.import_module(f"neffos.{name}")
    if name == "attach_aiohttp":  # needs aiohttp: imported on first use
        return importlib.import_module("neffos.transports.aiohttp_web").attach
    raise AttributeError(f"module 'neffos' has no attribute {name!r}")
