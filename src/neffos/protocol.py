"""The neffos wire protocol, sans I/O: bytes in, messages out, and back.

Nothing here does I/O or imports asyncio (a test checks it). The protocol is
described on the wire protocol page of the docs, docs/topics/protocol.md; the
comments below cite its sections by their anchors (``#frames``).

A neffos frame is seven ``;``-separated fields (#frames)::

    <wait>;<namespace>;<room>;<event>;<isError>;<isNoOp>;<payload>

Only namespace, room and event are escaped (``;`` <-> ``@%!semicolon@%!``,
#escaping); the payload runs verbatim to the end of the frame.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Final, TypeVar, overload

from .errors import InvalidPayload, Reply, resolve_error

__all__ = [
    "ACK_HELLO",
    "ON_ANY_EVENT",
    "ON_NAMESPACE_CONNECT",
    "ON_NAMESPACE_CONNECTED",
    "ON_NAMESPACE_DISCONNECT",
    "ON_NATIVE_MESSAGE",
    "ON_ROOM_JOIN",
    "ON_ROOM_JOINED",
    "ON_ROOM_LEAVE",
    "ON_ROOM_LEFT",
    "SYSTEM_EVENTS",
    "Message",
    "TokenGenerator",
    "ack_ok",
    "ack_refused",
    "bus_token",
    "empty_reply",
    "escape",
    "is_binary_frame",
    "is_system_event",
    "is_wait_on_client",
    "is_wait_on_server",
    "parse",
    "parse_ack",
    "serialize",
    "unescape",
]

# -- constants (docs/topics/protocol.md#constants) ------------------------------------

ON_NAMESPACE_CONNECT: Final = "_OnNamespaceConnect"
ON_NAMESPACE_CONNECTED: Final = "_OnNamespaceConnected"
ON_NAMESPACE_DISCONNECT: Final = "_OnNamespaceDisconnect"
ON_ROOM_JOIN: Final = "_OnRoomJoin"
ON_ROOM_JOINED: Final = "_OnRoomJoined"
ON_ROOM_LEAVE: Final = "_OnRoomLeave"
ON_ROOM_LEFT: Final = "_OnRoomLeft"
ON_ANY_EVENT: Final = "_OnAnyEvent"
ON_NATIVE_MESSAGE: Final = "_OnNativeMessage"

SYSTEM_EVENTS: Final = frozenset(
    {
        ON_NAMESPACE_CONNECT,
        ON_NAMESPACE_CONNECTED,
        ON_NAMESPACE_DISCONNECT,
        ON_ROOM_JOIN,
        ON_ROOM_JOINED,
        ON_ROOM_LEAVE,
        ON_ROOM_LEFT,
    }
)

SEPARATOR: Final = ";"
SEPARATOR_TOKEN: Final = "@%!semicolon@%!"
SERVER_CONN_ID_PREFIX: Final = "neffos(0x"
CLIENT_WAIT_PREFIX: Final = "$"
CONFIRMATION_WAIT_PREFIX: Final = "#"
STACK_EXCHANGE_MARKER: Final = "!"

ACK_HELLO: Final = b"M"
_ACK_OK: Final = 0x41  # "A"
_ACK_REFUSED: Final = 0x48  # "H"
_EMPTY_REPLY_SUFFIX: Final = b";;;;;;"


def is_system_event(event: str) -> bool:
    """Whether ``event`` is one of the seven ``_OnNamespace*``/``_OnRoom*`` events."""
    return event in SYSTEM_EVENTS


# -- the message --------------------------------------------------------------

_T = TypeVar("_T")


class Message:
    """One neffos message, as handlers see it and as ``emit``/``broadcast`` send it.

    Only ``wait`` … ``body``/``err`` and the flags ``is_noop``/``set_binary``
    travel on the wire; ``to`` selects a broadcast target and the ``is_*`` flags
    describe how the message came to be (docs/topics/protocol.md#dispatch).
    """

    __slots__ = (
        "body",
        "err",
        "event",
        "from_explicit",
        "from_stack_exchange",
        "is_forced",
        "is_invalid",
        "is_local",
        "is_native",
        "is_noop",
        "namespace",
        "room",
        "set_binary",
        "to",
        "wait",
    )

    def __init__(
        self,
        namespace: str = "",
        event: str = "",
        body: bytes | bytearray | memoryview | str = b"",
        *,
        room: str = "",
        to: str = "",
        err: BaseException | None = None,
        wait: str = "",
        set_binary: bool = False,
        is_noop: bool = False,
        is_native: bool = False,
        is_forced: bool = False,
        is_local: bool = False,
        from_explicit: str = "",
    ) -> None:
        self.namespace = namespace
        self.room = room
        self.event = event
        self.body = body if body.__class__ is bytes else _to_bytes(body)
        self.err = err
        self.wait = wait
        self.to = to
        self.set_binary = set_binary
        self.is_noop = is_noop
        self.is_native = is_native
        self.is_forced = is_forced
        self.is_local = is_local
        self.from_explicit = from_explicit
        self.from_stack_exchange = False
        self.is_invalid = False

    @property
    def is_error(self) -> bool:
        """True when the message carries an error (``err`` is set)."""
        return self.err is not None

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid sequences replaced)."""
        return self.body.decode("utf-8", "replace")

    @overload
    def unmarshal(self) -> Any: ...
    @overload
    def unmarshal(self, into: type[_T]) -> _T: ...
    @overload
    def unmarshal(self, into: _T) -> _T: ...

    def unmarshal(self, into: Any = None) -> Any:
        """Decode the body (JSON by default), see :func:`neffos.unmarshal`.

        Raises:
            InvalidPayload: the body does not decode into ``into`` (the peer's
                mistake: a handler that lets it propagate answers the peer with
                ``invalid payload``, and nothing is logged as an error).
            TypeError: ``into`` is not something a body can decode into.
        """
        from .encoding import unmarshal

        try:
            return unmarshal(self.body, into)
        except TypeError:
            raise  # the caller's mistake, not the peer's
        except Exception as exc:
            raise InvalidPayload() from exc

    def copy(self, **changes: Any) -> Message:
        """A shallow copy with some fields changed."""
        new = Message.__new__(Message)
        for name in Message.__slots__:
            setattr(new, name, getattr(self, name))
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def __repr__(self) -> str:
        parts = [f"namespace={self.namespace!r}", f"event={self.event!r}"]
        if self.room:
            parts.append(f"room={self.room!r}")
        if self.body:
            parts.append(f"body={self.body[:64]!r}")
        if self.err is not None:
            parts.append(f"err={self.err!r}")
        if self.wait:
            parts.append(f"wait={self.wait!r}")
        if self.to:
            parts.append(f"to={self.to!r}")
        for flag in ("is_local", "is_forced", "is_native", "set_binary", "is_invalid"):
            if getattr(self, flag):
                parts.append(f"{flag}=True")
        return f"Message({', '.join(parts)})"


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"a message body must be bytes or str, not {type(body).__name__}")


# -- escaping (docs/topics/protocol.md#escaping) -------------------------------------


def escape(name: str) -> str:
    """Replace every ``;`` in a namespace, room or event name with the token."""
    return name.replace(SEPARATOR, SEPARATOR_TOKEN) if SEPARATOR in name else name


def unescape(name: str) -> str:
    """Replace every complete separator token with ``;``."""
    return name.replace(SEPARATOR_TOKEN, SEPARATOR) if SEPARATOR_TOKEN in name else name


# -- encoding (docs/topics/protocol.md#encoding) -------------------------------------


#: names (namespace + room + event) longer than this are encoded without the
#: cache: it holds at most 4096 headers of that size, whatever peers send
_CACHED_NAMES = 96


def _encode_header(namespace: str, room: str, event: str) -> bytes:
    # ";<ns>;<room>;<event>;" - cached (below) because a server sends the same
    # few namespace/room/event triples over and over.
    return (
        f";{escape(namespace)};{escape(room)};{escape(event)};".encode("utf-8", "surrogateescape")
    )


_cached_header = functools.lru_cache(maxsize=4096)(_encode_header)


def serialize(msg: Message) -> bytes:
    """Encode ``msg`` as the bytes of one frame (docs/topics/protocol.md#encoding).

    The error text is written as ``str(msg.err)``, even when empty, exactly like Go;
    the engine makes sure it never sends an empty error text (docs/topics/protocol.md#error-texts).

    Raises:
        ValueError: the message has both a wait token and ``from_explicit``.
    """
    wait = msg.wait
    if msg.is_native and not wait:
        return msg.body
    if msg.from_explicit:
        if wait:
            raise ValueError("a message cannot carry both a wait token and from_explicit")
        wait = msg.from_explicit
    err = msg.err
    if err is None:
        flags = b"0;1;" if msg.is_noop else b"0;0;"
        payload = msg.body
    elif isinstance(err, Reply):
        flags = b"0;1;" if msg.is_noop else b"0;0;"
        payload = err.body
    else:
        flags = b"1;1;" if msg.is_noop else b"1;0;"
        payload = str(err).encode("utf-8", "surrogateescape")
    return frame(wait, msg.namespace, msg.room, msg.event, flags, payload)


def frame(
    wait: str, namespace: str, room: str, event: str, flags: bytes, payload: bytes
) -> bytes:
    """Join the seven fields of a frame; ``flags`` is ``b"<isError>;<isNoOp>;"``."""
    if len(namespace) + len(room) + len(event) <= _CACHED_NAMES:
        head = _cached_header(namespace, room, event)
    else:
        head = _encode_header(namespace, room, event)
    if wait:
        return b"".join((wait.encode("utf-8", "surrogateescape"), head, flags, payload))
    return b"".join((head, flags, payload))


#: the flags of an ordinary message or reply (not an error, not a noop)
PLAIN = b"0;0;"


def empty_reply(wait: str) -> bytes:
    """The answer to a successful system request: the token and six separators."""
    return wait.encode("utf-8", "surrogateescape") + _EMPTY_REPLY_SUFFIX


def is_binary_frame(data: bytes, set_binary: bool) -> bool:
    """Whether the frame ``data`` must be sent as a binary WebSocket message.

    Binary when the sender asked for it, and also when the bytes are not valid
    UTF-8: a text frame never carries invalid UTF-8 (docs/topics/protocol.md#text-and-binary).
    """
    if set_binary:
        return True
    if data.isascii():
        return False
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


# -- decoding (docs/topics/protocol.md#decoding) -------------------------------------


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def parse(
    data: bytes,
    binary: bool = False,
    *,
    allow_native: bool = False,
    only_native: bool = False,
) -> Message:
    """Decode one frame with Go's rules (docs/topics/protocol.md#decoding).

    Never raises on bad input: an undecodable frame comes back with
    ``is_invalid`` set.
    """
    msg = Message.__new__(Message)
    msg.to = ""
    msg.is_forced = False
    msg.is_local = False
    msg.set_binary = binary
    msg.from_explicit = ""
    msg.from_stack_exchange = False
    msg.err = None
    msg.is_noop = False
    if not data:
        _blank(msg, b"")
        msg.is_invalid = True
        msg.is_native = False
        return msg
    if only_native:
        return _native(msg, data)
    parts = data.split(b";", 6)
    if len(parts) != 7:
        if allow_native:
            return _native(msg, data)
        _blank(msg, b"")
        msg.is_invalid = True
        msg.is_native = False
        return msg
    wait_b, ns_b, room_b, event_b, err_b, noop_b, payload = parts
    msg.is_invalid = False
    msg.namespace = _decode(ns_b) if b"@%!" not in ns_b else unescape(_decode(ns_b))
    msg.room = _decode(room_b) if b"@%!" not in room_b else unescape(_decode(room_b))
    event = _decode(event_b) if b"@%!" not in event_b else unescape(_decode(event_b))
    msg.event = event
    msg.is_noop = noop_b == b"1"
    if payload and err_b == b"1":
        msg.err = resolve_error(payload.decode("utf-8", "surrogateescape"))
        msg.body = b""
    else:
        msg.body = payload
    if wait_b:
        wait = _decode(wait_b)
        if wait.startswith(SERVER_CONN_ID_PREFIX):
            msg.from_explicit = wait
            wait = ""
        elif len(wait) > 2 and wait[1] == STACK_EXCHANGE_MARKER:
            msg.from_stack_exchange = True
            wait = wait[0] + wait[2:]
        msg.wait = wait
    else:
        msg.wait = ""
    msg.is_native = allow_native and event == ON_NATIVE_MESSAGE
    return msg


def _blank(msg: Message, body: bytes) -> None:
    msg.wait = ""
    msg.namespace = ""
    msg.room = ""
    msg.event = ""
    msg.body = body


def _native(msg: Message, data: bytes) -> Message:
    _blank(msg, data)
    msg.event = ON_NATIVE_MESSAGE
    msg.is_native = True
    msg.is_invalid = False
    return msg


# -- wait tokens (docs/topics/protocol.md#asks) --------------------------------------


def is_wait_on_server(wait: str) -> bool:
    """Whether a server connection treats ``wait`` as a possible answer.

    Wire protocol: docs/topics/protocol.md#tokens.
    """
    return bool(wait) and wait[0] != CLIENT_WAIT_PREFIX


def is_wait_on_client(wait: str) -> bool:
    """Whether a client connection treats ``wait`` as a possible answer.

    Wire protocol: docs/topics/protocol.md#tokens.
    """
    return bool(wait)


def bus_token(token: str) -> str:
    """Go's token for a ``Server.ask`` over a bus: the first byte plus 33.

    Wire protocol: docs/topics/protocol.md#bus-asks.
    """
    return chr(ord(token[0]) + 33) + token[1:]


class TokenGenerator:
    """Unique, Go-shaped wait tokens: decimal nanoseconds, strictly increasing.

    Clock-based like the originals (so tokens look the same on the wire), but a
    counter guarantees uniqueness even within one clock tick (docs/topics/protocol.md#tokens).
    """

    __slots__ = ("_last", "_prefix")

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._last = 0

    def __call__(self) -> str:
        now = time.time_ns()
        if now <= self._last:
            now = self._last + 1
        self._last = now
        return self._prefix + str(now)


# -- acknowledgement frames (docs/topics/protocol.md#handshake) ----------------------


def ack_ok(conn_id: str) -> bytes:
    """The server's acceptance frame: ``A`` and the connection ID."""
    return b"A" + conn_id.encode("utf-8", "surrogateescape")


def ack_refused(text: str) -> bytes:
    """The server's refusal frame: ``H`` and the error text."""
    return b"H" + text.encode("utf-8", "surrogateescape")


def parse_ack(data: bytes) -> tuple[str, str] | None:
    """Classify an acknowledgement frame: ``("A", id)``, ``("H", text)``, ``("M", "")``.

    Returns ``None`` for anything else.
    """
    if not data:
        return None
    first = data[0]
    if first == _ACK_OK:
        return ("A", _decode(data[1:]))
    if first == _ACK_REFUSED:
        return ("H", _decode(data[1:]))
    if data == ACK_HELLO:
        return ("M", "")
    return None
