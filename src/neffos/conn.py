"""The connection objects handlers work with: Conn, NSConn and Room.

:class:`Conn` is one WebSocket connection, on either side. Its behaviour is
split by concern over layers, each a class with its own slots, stacked into one
object (one attribute lookup per access on the hot path, no hop between
objects):

================================  ===============================================
:mod:`neffos.dispatch`            events to handlers, results back to the peer
:mod:`neffos.replies`             answers to the peer's system requests
this module                       state, namespaces, writes, local events, closing
:mod:`neffos.store`               the key/value store
:mod:`neffos.asks`                asks and system requests sent to the peer
:mod:`neffos.processing`          the reader, ordered processing and its hand-off
:mod:`neffos.liveness`            heartbeat, read and write timeouts
================================  ===============================================

Each layer derives from the one below it in this table; the bottom one,
:mod:`neffos.base`, holds the state they share and declares the hooks a lower
layer calls and a higher one implements. :mod:`neffos.replies` creates
:class:`NSConn` objects; the concrete classes are
:class:`neffos.server.ServerConn` and :class:`neffos.client.ClientConn`.

Writes never block: they go to the socket's buffer, and a connection whose
buffer grows past ``send_buffer`` bytes is closed (a slow reader never stalls
the others).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias

from .asks import answer_within
from .errors import (
    BadNamespace,
    BadRoom,
    ConnectionClosed,
    LimitExceeded,
    NeffosError,
    Reply,
    WriteClosed,
    is_known_error,
)
from .processing import hand_off
from .protocol import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    TokenGenerator,
    is_binary_frame,
    serialize,
)
from .store import KeyValueStore

if TYPE_CHECKING:
    from ._http import Request
    from .config import Config, Tasks
    from .handlers import ConnHandler, EventTable
    from .transports.base import Socket
    from .transports.frames import Shared

__all__ = ["Conn", "Exclude", "Exclusion", "NSConn", "Room", "ServerAPI", "exclude"]


class Exclude:
    """Exclude every connection with this ID from a broadcast (see :func:`exclude`)."""

    __slots__ = ("id",)

    def __init__(self, conn_id: str) -> None:
        self.id = conn_id

    def __repr__(self) -> str:
        return f"exclude({self.id!r})"


def exclude(conn_id: str) -> Exclude:
    """``server.broadcast(neffos.exclude("kim"), msg)`` skips every connection of ``kim``."""
    return Exclude(conn_id)


#: who a broadcast skips: a connection (``Conn``, ``NSConn`` or ``Room``), every
#: connection with an ID (:func:`exclude`), or nobody (``None``)
Exclusion: TypeAlias = "Conn | NSConn | Room | Exclude | None"


class ServerAPI(Protocol):
    """The server of a server connection (``conn.server``), as handlers use it.

    This is :class:`neffos.Server`; the engine knows it through this protocol
    only, so that it does not depend on the server module.
    """

    @property
    def is_closed(self) -> bool: ...

    @property
    def handler(self) -> ConnHandler: ...

    @property
    def max_message_size(self) -> int: ...

    def broadcast(self, exclude: Exclusion, *messages: Message) -> None: ...

    async def ask(
        self, msg: Message, *, timeout: float | None = None, to: str | None = None
    ) -> Message: ...

    async def do(self, fn: Callable[[Conn], Any]) -> None: ...

    def get_total_connections(self) -> int: ...
    def get_connections(self) -> list[Conn]: ...
    def get_connections_by_namespace(self, namespace: str) -> list[NSConn]: ...
    def get_connections_by_id(self, conn_id: str) -> list[Conn]: ...

    async def close(self) -> None: ...


class Conn(KeyValueStore):
    """One WebSocket connection, on the server or on the client side.

    Server connections are made by :class:`~neffos.Server`, client connections
    by :func:`~neffos.dial`. Handlers receive :class:`NSConn` objects; ``ns.conn``
    is this object.
    """

    __slots__ = ("_close_timer", "_closed_future", "_namespaces", "_ns_waiters")

    #: True on client connections
    is_client: ClassVar[bool] = False

    def __init__(
        self,
        socket: Socket,
        handler: ConnHandler,
        cfg: Config,
        tasks: Tasks,
        tokens: TokenGenerator,
        conn_id: str = "",
    ) -> None:
        super().__init__(socket, handler, cfg, tasks, tokens, conn_id)
        self._namespaces: dict[str, NSConn] = {}  # connected namespaces, by name
        self._ns_waiters: dict[str, list[asyncio.Future[NSConn]]] | None = None  # wait_connect
        self._closed_future: asyncio.Future[None] | None = None  # wait_closed()
        # drops the socket if it has not closed within close_timeout of close()
        self._close_timer: asyncio.TimerHandle | None = None
        socket.receiver = self

    # -- public properties ---------------------------------------------------

    @property
    def server(self) -> ServerAPI | None:
        """The server of a server connection; ``None`` on clients."""
        return None

    @property
    def request(self) -> Request | None:
        """The HTTP request that opened the connection (headers, path, query)."""
        return self.socket.request

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), when the transport knows it."""
        return self.socket.remote_address

    @property
    def was_reconnected(self) -> bool:
        """True when the peer said this is a reconnection (``reconnect_tries > 0``)."""
        return self.reconnect_tries > 0

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def is_acknowledged(self) -> bool:
        """True once the neffos handshake completed (``A`` sent, or received)."""
        raise NotImplementedError

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        state = " closed" if self._closed else ""
        return f"<{side} Conn id={self.id!r}{state}>"

    # -- namespaces ------------------------------------------------------------

    def namespace(self, name: str) -> NSConn | None:
        """The connected namespace ``name``, or ``None``."""
        return self._namespaces.get(name)

    @property
    def namespaces(self) -> dict[str, NSConn]:
        """A snapshot of the connected namespaces."""
        return dict(self._namespaces)

    async def connect(self, namespace: str, *, timeout: float | None = None) -> NSConn:
        """Connect to ``namespace`` (docs/topics/protocol.md#namespaces).

        On a client this asks the server; on a server connection it makes the
        client connect (the client can refuse). Connecting an already connected
        namespace returns it.

        Raises:
            BadNamespace: the namespace is not declared in the local handler, or
                the peer does not know it.
            AskTimeout: no answer within ``timeout`` seconds.
            ConnectionClosed: the connection closed meanwhile.
            Exception: the local or remote ``_OnNamespaceConnect`` refused.
        """
        existing = self._namespaces.get(namespace)
        if existing is not None:
            return existing
        table = self.handler.namespaces.get(namespace)
        if table is None:
            raise BadNamespace()
        self._check_open()
        return await self._connect_with(NSConn(self, namespace, table), timeout)

    async def _connect_with(self, ns: NSConn, timeout: float | None) -> NSConn:
        namespace = ns.namespace
        await self._before_request()
        existing = self._namespaces.get(namespace)
        if existing is not None:
            return existing
        request = Message(namespace, ON_NAMESPACE_CONNECT, is_local=True)
        err = await self._fire(ns, request)
        if err is not None:
            raise err
        reply = await self._request(request, timeout, hold=True)
        try:
            if reply.err is not None:
                raise reply.err
            self._check_open()
            existing = self._namespaces.get(namespace)
            if existing is not None:  # connected concurrently
                return existing
            self._add_namespace(ns)
        finally:
            # Only the registration had to precede the peer's next frames; the
            # local "connected" event runs while they are processed (as in Go).
            self._release()
        await self._fire(ns, Message(namespace, ON_NAMESPACE_CONNECTED, is_local=True))
        return ns

    async def _join_room(self, ns: NSConn, room: str, timeout: float | None) -> Room:
        if not room:
            raise ValueError("a room name must not be empty")
        existing = ns.rooms.get(room)
        if existing is not None:
            return existing
        self._check_open()
        refused = self._room_limit(room)
        if refused is not None:
            raise refused
        if self._namespaces.get(ns.namespace) is not ns:
            raise WriteClosed()
        request = Message(ns.namespace, ON_ROOM_JOIN, room=room, is_local=True)
        reply = await self._request(request, timeout)
        if reply.err is not None:
            raise reply.err
        existing = ns.rooms.get(room)
        if existing is not None:
            return existing
        err = await self._fire(ns, request)
        if err is not None:
            raise err
        self._check_open()  # the connection is open and the namespace still connected
        if self._namespaces.get(ns.namespace) is not ns:
            raise BadNamespace()
        joined = self._add_room(ns, room)
        await self._fire(ns, Message(ns.namespace, ON_ROOM_JOINED, room=room, is_local=True))
        return joined

    async def _leave_room(self, room: Room, timeout: float | None) -> None:
        ns = room.nsconn
        if ns.rooms.get(room.name) is not room:
            raise BadRoom()
        self._check_open()
        request = Message(ns.namespace, ON_ROOM_LEAVE, room=room.name, is_local=True)
        reply = await self._request(request, timeout)
        if reply.err is not None:
            raise reply.err
        if ns.rooms.get(room.name) is not room:
            return
        err = await self._fire(ns, request)
        if err is not None:
            raise err
        if ns.rooms.get(room.name) is not room:
            return
        self._remove_room(ns, room)
        await self._fire(ns, Message(ns.namespace, ON_ROOM_LEFT, room=room.name, is_local=True))

    async def _disconnect_namespace(self, ns: NSConn, timeout: float | None) -> None:
        if self._namespaces.get(ns.namespace) is not ns:
            raise BadNamespace()
        self._check_open()
        request = Message(ns.namespace, ON_NAMESPACE_DISCONNECT, is_local=True)
        reply = await self._request(request, timeout)
        if reply.err is not None:
            raise reply.err
        if self._closed or self._namespaces.get(ns.namespace) is not ns:
            return  # closed meanwhile: the close sequence fired the events
        await self._force_leave_all(ns, is_local=True)
        self._remove_namespace(ns)
        await self._fire(ns, request)

    async def wait_connect(self, namespace: str, *, timeout: float | None = None) -> NSConn:
        """Wait until ``namespace`` is connected, by either side.

        Returns at once if it already is.

        Raises:
            AskTimeout: not connected within ``timeout`` seconds.
            ConnectionClosed: the connection closed meanwhile.
        """
        ns = self._namespaces.get(namespace)
        if ns is not None:
            return ns
        self._check_open()
        fut: asyncio.Future[NSConn] = self._loop.create_future()
        if self._ns_waiters is None:
            self._ns_waiters = {}
        self._ns_waiters.setdefault(namespace, []).append(fut)
        hand_off()
        try:
            return await answer_within(fut, timeout)
        finally:
            waiters = self._ns_waiters.get(namespace) if self._ns_waiters else None
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._ns_waiters[namespace]

    #: neffos.js name of :meth:`wait_connect`
    wait_server_connect = wait_connect

    async def disconnect_all(self, *, timeout: float | None = None) -> None:
        """Disconnect every connected namespace in turn (docs/topics/protocol.md#namespaces)."""
        if self.handler.only_native:
            return
        for ns in list(self._namespaces.values()):
            if self._namespaces.get(ns.namespace) is ns:
                await ns.disconnect(timeout=timeout)

    def _add_namespace(self, ns: NSConn) -> None:
        self._namespaces[ns.namespace] = ns
        self._ns_added(ns)
        if self._ns_waiters:
            for fut in self._ns_waiters.pop(ns.namespace, ()):
                if not fut.done():
                    fut.set_result(ns)

    def _remove_namespace(self, ns: NSConn) -> None:
        if self._namespaces.get(ns.namespace) is ns:
            for room in list(ns.rooms.values()):  # normally left already
                self._remove_room(ns, room)
            del self._namespaces[ns.namespace]
            self._ns_removed(ns)

    def _room_limit(self, name: str) -> LimitExceeded | None:
        """Why joining one more room called ``name`` is refused, if it is."""
        cfg = self._cfg
        if len(name) > cfg.max_room_name_length:
            return cfg.stats.limit(f"room name longer than {cfg.max_room_name_length} characters")
        if sum(len(ns.rooms) for ns in self._namespaces.values()) >= cfg.max_rooms:
            return cfg.stats.limit(f"more than {cfg.max_rooms} rooms")
        return None

    def _add_room(self, ns: NSConn, name: str) -> Room:
        room = Room(ns, name)
        ns.rooms[name] = room
        self._room_added(ns, room)
        return room

    def _remove_room(self, ns: NSConn, room: Room) -> None:
        if ns.rooms.get(room.name) is room:
            del ns.rooms[room.name]
            self._room_removed(ns, room)

    # Hooks: a server connection keeps the server's indexes with these.

    def _ns_added(self, ns: NSConn) -> None:
        pass

    def _ns_removed(self, ns: NSConn) -> None:
        pass

    def _room_added(self, ns: NSConn, room: Room) -> None:
        pass

    def _room_removed(self, ns: NSConn, room: Room) -> None:
        pass

    # -- writing ---------------------------------------------------------------

    def write(self, msg: Message) -> bool:
        """Send ``msg`` as it is, after the write checks of docs/topics/protocol.md#write-checks.

        Returns ``False`` (and sends nothing) when the connection is closed, the
        namespace is not connected or the room not joined.
        """
        if self._closed or not self.can_write(msg):
            return False
        if msg.from_explicit:
            msg = msg.copy(from_explicit="")
        data = serialize(msg)
        sent = self.write_encoded(data, is_binary_frame(data, msg.set_binary))
        self._cfg.stats.messages_out += sent  # (write_encoded counts nothing: see registry)
        return sent

    def can_write(self, msg: Message) -> bool:
        """Namespace connected, room joined (docs/topics/protocol.md#write-checks)."""
        event = msg.event
        if event == ON_NAMESPACE_CONNECT or event == ON_NAMESPACE_DISCONNECT:
            return True
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            return False
        room = msg.room
        return not room or event == ON_ROOM_JOIN or event == ON_ROOM_LEFT or room in ns.rooms

    def write_encoded(self, data: bytes, binary: bool) -> bool:
        """Send an encoded frame as it is (a broadcast encodes once for all receivers).

        Returns ``False`` (and sends nothing) when the connection is closed or
        its handshake has not completed; a peer slower than ``send_buffer`` is
        closed. The caller applies :meth:`can_write` where the target needs it.
        """
        if self._closed or self._preack is not None:
            return False
        try:
            pending = self.socket.send(data, binary)
        except Exception as exc:
            return self._write_failed(exc)
        if pending > self._cfg.send_buffer:
            self._overflowed(pending)
        return True

    def write_shared(self, shared: Shared) -> bool:
        """:meth:`write_encoded` for one message of a broadcast (framed once for all)."""
        if self._closed or self._preack is not None:
            return False
        try:
            pending = self.socket.send_shared(shared)
        except Exception as exc:
            return self._write_failed(exc)
        if pending > self._cfg.send_buffer:
            self._overflowed(pending)
        return True

    def _write_failed(self, exc: Exception) -> bool:
        self._cfg.log.debug("[%s] write failed: %r", self.id, exc)
        self._fail(1011, "write failed", abort=True)
        return False

    def socket_closing(self) -> None:
        """Called by the transport when it starts closing on its own (the peer's
        close frame, a protocol error): drop the socket if it is not gone within
        ``close_timeout``, as for a close of ours."""
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(self._cfg.close_timeout, self.socket.abort)

    def control_sent(self, pending: int) -> None:
        """Called by the transport after it wrote a control frame on its own (a pong).

        Control frames count against ``send_buffer`` like data: a peer that
        pings without ever reading is closed like any slow reader.
        """
        if pending > self._cfg.send_buffer and not self._closed:
            self._overflowed(pending)

    def _overflowed(self, pending: int) -> None:
        self._cfg.log.warning(
            "[%s] closing a slow connection: %d bytes waiting to be sent (send_buffer=%d)",
            self.id,
            pending,
            self._cfg.send_buffer,
        )
        self._fail(1008, "send buffer full", abort=True)

    async def _request(
        self, request: Message, timeout: float | None, *, hold: bool = False
    ) -> Message:
        """Send a system request (connect/join/leave/disconnect) and return the answer.

        With ``hold`` the answer holds processing until :meth:`_release`
        (see :mod:`neffos.processing`).

        Raises:
            ConnectionClosed: the request could not be written, or the
                connection closed before the answer.
            AskTimeout: no answer within ``timeout`` seconds.
        """
        return await self._send_and_wait(
            lambda token: (serialize(request.copy(wait=token)), False),
            timeout, ConnectionClosed, hold=hold,
        )

    async def _before_request(self) -> None:
        """Hook: a server connection waits for the acknowledgement here."""

    # -- local events ------------------------------------------------------------

    async def _fire(self, ns: NSConn, msg: Message) -> BaseException | None:
        """Run the local handler of a (system) event; return its error, if any."""
        fn = ns.events.lookup(msg.event)
        if fn is None:
            return None
        try:
            result = fn.fn(ns, msg)
            if fn.is_async or inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            return self._raised(exc, msg)
        if isinstance(result, BaseException) and not isinstance(result, Reply):
            return result
        return None

    def _raised(self, exc: Exception, msg: Message) -> Exception:
        """A handler raised: log it unless it is an expected (neffos or known) error."""
        if not isinstance(exc, NeffosError) and not is_known_error(exc):
            self._cfg.stats.handler_errors += 1
            self._cfg.log.error(
                "[%s] handler of %r/%r raised", self.id, msg.namespace, msg.event, exc_info=exc
            )
        return exc

    async def _force_leave_all(self, ns: NSConn, *, is_local: bool) -> None:
        """Leave every room of ``ns`` without asking the peer, firing the forced events."""
        for room in list(ns.rooms.values()):
            await self._fire(
                ns,
                Message(ns.namespace, ON_ROOM_LEAVE, room=room.name, is_forced=True,
                        is_local=is_local),
            )
            self._remove_room(ns, room)
            await self._fire(
                ns,
                Message(ns.namespace, ON_ROOM_LEFT, room=room.name, is_forced=True,
                        is_local=is_local),
            )

    # -- closing -------------------------------------------------------------------

    def _fail(self, code: int, reason: str, *, abort: bool = False) -> None:
        """The connection is broken (dead peer, timeout, overflow): close it.

        A client with a reconnect policy reconnects instead of closing for good.
        """
        self._close(code, reason, abort)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent).

        Sends a close frame, then — soon after, in the event loop — fires the
        forced ``_OnRoomLeave``/``_OnRoomLeft``/``_OnNamespaceDisconnect`` events
        (``is_forced`` and ``is_local`` set), fails pending asks with
        :class:`~neffos.ConnectionClosed` and runs the disconnect hooks. Use
        :meth:`wait_closed` or :meth:`aclose` to wait for all of that.
        """
        self._close(code, reason, False)

    def _close(self, code: int, reason: str, abort: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._abort_pending()
        self._close_timer = self._close_socket(self.socket, code, reason, abort)
        self._loop.call_soon(self._begin_close_sequence)

    def _close_socket(
        self, socket: Socket, code: int, reason: str, abort: bool
    ) -> asyncio.TimerHandle | None:
        """Close ``socket``: now (``abort``), or once flushed within ``close_timeout``.

        A peer that stops reading would otherwise keep a closed connection, and
        what was waiting to be sent to it, for as long as TCP keeps trying.
        Returns the timer that drops it, to be cancelled when it has closed.
        """
        try:
            socket.close(code, reason)
            if abort:
                socket.abort()
                return None
            return self._loop.call_later(self._cfg.close_timeout, socket.abort)
        except Exception as exc:
            self._cfg.log.debug("[%s] socket close failed: %r", self.id, exc)
            return None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait until the forced events and hooks have run."""
        self.close(code, reason)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its close sequence has run."""
        fut = self._closed_future
        if fut is None:
            fut = self._closed_future = self._loop.create_future()
        await asyncio.shield(fut)

    def socket_closed(self, exc: BaseException | None) -> None:
        """Called by the transport once the socket is gone (peer closed, network error)."""
        timer, self._close_timer = self._close_timer, None
        if timer is not None:
            timer.cancel()
        if self._closed:
            return
        self._closed = True
        self._abort_pending()
        self._cfg.log.debug("[%s] socket closed: %r", self.id, exc)
        self._begin_close_sequence()

    def _abort_pending(self) -> None:
        """The socket is gone: stop the timers, drop queued frames, fail every waiter."""
        self._stop_timers()
        self._drop_queued()
        self._fail_asks()
        ns_waiters, self._ns_waiters = self._ns_waiters, None
        if ns_waiters:
            for futs in ns_waiters.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(ConnectionClosed())
                        f.exception()

    def _begin_close_sequence(self) -> None:
        if not self._loop.is_closed():
            self._tasks.spawn(self._close_sequence(), self._loop)

    async def _close_sequence(self) -> None:
        try:
            await self._force_disconnect_all()
            await self._after_close()
        except Exception:
            self._cfg.log.exception("[%s] close sequence failed", self.id)
        finally:
            fut = self._closed_future
            if fut is None:
                fut = self._closed_future = self._loop.create_future()
            if not fut.done():
                fut.set_result(None)

    async def _force_disconnect_all(self) -> None:
        """Forced leave/disconnect events, then forget it all (docs/topics/protocol.md#closing)."""
        for ns in list(self._namespaces.values()):
            if not self.handler.only_native:
                await self._force_leave_all(ns, is_local=True)
                await self._fire(
                    ns,
                    Message(ns.namespace, ON_NAMESPACE_DISCONNECT, is_forced=True, is_local=True),
                )
            self._remove_namespace(ns)

    async def _after_close(self) -> None:
        """Hook: unregister and run disconnect hooks."""


class NSConn:
    """A connection's membership of one namespace; what event handlers receive."""

    __slots__ = ("__weakref__", "conn", "events", "namespace", "rooms", "value")

    def __init__(self, conn: Conn, namespace: str, table: EventTable) -> None:
        self.conn = conn
        # Interned: every connection of a namespace shares one string object
        # (only namespaces the handler declares get here, never a peer's choice).
        self.namespace = sys.intern(namespace)
        #: the joined rooms, by name
        self.rooms: dict[str, Room] = {}
        #: the per-connection object of a class-based handler (see from_object)
        self.value: Any = None
        self.events = table.bind(self)

    def __repr__(self) -> str:
        return f"<NSConn {self.namespace!r} of {self.conn!r}>"

    def emit(self, event: str, body: bytes | str = b"") -> bool:
        """Send an event to the peer; ``False`` if it could not be written."""
        return self.conn.write(Message(self.namespace, event, body))

    def emit_binary(self, event: str, body: bytes) -> bool:
        """Like :meth:`emit`, as a binary WebSocket frame."""
        return self.conn.write(Message(self.namespace, event, body, set_binary=True))

    async def ask(
        self, event: str, body: bytes | str = b"", *, timeout: float | None = None
    ) -> Message:
        """Send an event and wait for the peer's answer (see :meth:`Conn.ask`)."""
        return await self.conn.ask(Message(self.namespace, event, body), timeout=timeout)

    def room(self, name: str) -> Room | None:
        """The joined room ``name``, or ``None``."""
        return self.rooms.get(name)

    def get_rooms(self) -> list[Room]:
        """The joined rooms."""
        return list(self.rooms.values())

    async def join_room(self, room: str, *, timeout: float | None = None) -> Room:
        """Join ``room`` (docs/topics/protocol.md#rooms; on a server connection: force the client).

        Raises:
            WriteClosed: the namespace is not connected any more.
            LimitExceeded: past ``max_rooms`` or ``max_room_name_length``, on
                either side.
            AskTimeout, ConnectionClosed: see :meth:`Conn.ask`.
            Exception: the local or remote ``_OnRoomJoin`` refused.
        """
        return await self.conn._join_room(self, room, timeout)

    async def leave_all(self, *, timeout: float | None = None) -> None:
        """Leave every joined room in turn."""
        for room in list(self.rooms.values()):
            if self.rooms.get(room.name) is room:
                await room.leave(timeout=timeout)

    async def disconnect(self, *, timeout: float | None = None) -> None:
        """Disconnect (docs/topics/protocol.md#namespaces; a server connection forces it).

        Raises:
            BadNamespace: not connected.
            Exception: the server's ``_OnNamespaceDisconnect`` refused.
        """
        await self.conn._disconnect_namespace(self, timeout)

    def broadcast(self, *messages: Message) -> None:
        """Server side: broadcast to the namespace (messages without a namespace get this one)."""
        self._broadcast(None, messages)

    def broadcast_others(self, *messages: Message) -> None:
        """Server side: like :meth:`broadcast`, excluding this connection."""
        self._broadcast(self.conn, messages)

    def _broadcast(self, exclude: Exclusion, messages: Iterable[Message]) -> None:
        server = self.conn.server
        if server is None:
            raise RuntimeError("broadcast is only available on server connections")
        server.broadcast(
            exclude,
            *(m if m.namespace else m.copy(namespace=self.namespace) for m in messages),
        )


class Room:
    """A joined room of a namespace connection."""

    __slots__ = ("__weakref__", "name", "nsconn")

    def __init__(self, nsconn: NSConn, name: str) -> None:
        self.nsconn = nsconn
        # Not interned: peers choose room names, and interned strings can
        # outlive everything that used them (for good on Python 3.12+).
        self.name = name

    def __repr__(self) -> str:
        return f"<Room {self.name!r} of {self.nsconn!r}>"

    @property
    def conn(self) -> Conn:
        return self.nsconn.conn

    def emit(self, event: str, body: bytes | str = b"") -> bool:
        """Send an event to the peer within this room."""
        ns = self.nsconn
        return ns.conn.write(Message(ns.namespace, event, body, room=self.name))

    def emit_binary(self, event: str, body: bytes) -> bool:
        """Like :meth:`emit`, as a binary WebSocket frame."""
        ns = self.nsconn
        return ns.conn.write(Message(ns.namespace, event, body, room=self.name, set_binary=True))

    async def leave(self, *, timeout: float | None = None) -> None:
        """Leave the room (docs/topics/protocol.md#rooms; on a server connection: force the client).

        Raises:
            BadRoom: the room is not joined.
            Exception: the peer's or the local ``_OnRoomLeave`` refused.
        """
        await self.nsconn.conn._leave_room(self, timeout)
