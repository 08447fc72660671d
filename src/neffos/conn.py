"""The connection engine shared by servers and clients: Conn, NSConn and Room.

Rules (see docs/architecture.md and PROTOCOL.md §4-§7):

* One reader per connection: the transport calls :meth:`Conn.feed` for every
  frame. A frame that answers a pending ``ask`` resolves its future right there,
  so a handler can ``ask`` without deadlocking.
* Every other frame is processed in arrival order, one at a time. Plain-function
  handlers run inline (the fast path, no task); an ``async`` handler runs in a
  task while later frames of the same connection wait in a queue.
* Writes never block: they go to the socket's buffer; a connection whose buffer
  grows past ``send_buffer`` bytes is closed (a slow reader never stalls others).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .encoding import marshal
from .errors import (
    AskTimeout,
    BadNamespace,
    BadRoom,
    ConnectionClosed,
    NeffosError,
    RemoteError,
    Reply,
    TooManyPendingAsks,
    WriteClosed,
    is_known_error,
)
from .handlers import ConnHandler, EventTable, _Fn
from .protocol import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    PLAIN,
    Message,
    TokenGenerator,
    empty_reply,
    frame,
    parse,
    serialize,
)

if TYPE_CHECKING:
    from ._http import Request
    from .server import Server
    from .transports.base import Socket

__all__ = ["Conn", "NSConn", "Room"]

_SYSTEM_REQUESTS = frozenset(
    {ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE}
)
_PROCESS = Coroutine[Any, Any, None]
#: the connection whose frames the current task is processing
#: (connection, the task that owns its processing) for code running in that task
#: or in tasks it started (their context is a copy)
_processing: contextvars.ContextVar[tuple[Conn, asyncio.Task[Any]]] = contextvars.ContextVar(
    "neffos_processing"
)


def _yield_current() -> None:
    current = _processing.get(None)
    if current is not None:
        current[0]._yield_processing(current[1])
_R = TypeVar("_R")


class Config:
    """Limits and settings shared by the connections of one server or client."""

    __slots__ = (
        "handshake_timeout",
        "log",
        "max_message_size",
        "max_pending_asks",
        "max_queued_frames",
        "ping_interval",
        "send_buffer",
        "tasks",
    )

    def __init__(
        self,
        *,
        log: logging.Logger,
        send_buffer: int,
        max_pending_asks: int,
        max_message_size: int,
        handshake_timeout: float | None,
        ping_interval: float | None,
        max_queued_frames: int,
    ) -> None:
        self.log = log
        self.send_buffer = send_buffer
        self.max_pending_asks = max_pending_asks
        self.max_message_size = max_message_size
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.max_queued_frames = max_queued_frames
        #: tasks owned by the server/client, so none is garbage-collected early
        #: and closing can wait for them
        self.tasks: set[asyncio.Task[Any]] = set()


class _HoldFuture(asyncio.Future[Message]):
    """The future of a system request (connect/join/leave/disconnect).

    When its answer arrives, the reader stops processing further frames until the
    requester has applied the answer (registered the namespace, fired its local
    events), so a message that the peer sends right after the answer is never
    processed before the namespace exists (PROTOCOL.md §5.1).
    """

    held = False


def _is_binary_frame(data: bytes, set_binary: bool) -> bool:
    # Never put invalid UTF-8 in a text frame (PROTOCOL.md §1.8).
    if set_binary:
        return True
    if data.isascii():
        return False
    try:
        data.decode()
    except UnicodeDecodeError:
        return True
    return False


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], value: Any) -> Generator[Any, Any, Any]:
    """Finish, inside a task, a coroutine that was started inline and suspended."""
    while True:
        try:
            sent = yield value
        except BaseException as exc:
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class Conn:
    """One WebSocket connection, on the server or on the client side.

    Server connections are made by :class:`~neffos.Server`, client connections
    by :func:`~neffos.dial`. Handlers receive :class:`NSConn` objects; ``ns.conn``
    is this object.
    """

    __slots__ = (
        "__weakref__",
        "_acked",
        "_active",
        "_busy",
        "_cfg",
        "_closed",
        "_closed_future",
        "_holds",
        "_inbox",
        "_last_data",
        "_loop",
        "_namespaces",
        "_ns_waiters",
        "_owner",
        "_ping_out",
        "_preack",
        "_read_timer",
        "_store",
        "_tokens",
        "_waiters",
        "_write_timer",
        "handler",
        "id",
        "reconnect_tries",
        "socket",
    )

    #: True on client connections
    is_client: ClassVar[bool] = False

    def __init__(
        self,
        socket: Socket,
        handler: ConnHandler,
        cfg: Config,
        tokens: TokenGenerator,
        conn_id: str = "",
    ) -> None:
        self.id = conn_id
        self.socket = socket
        self.handler = handler
        self.reconnect_tries = 0
        self._cfg = cfg
        self._tokens = tokens
        self._loop = asyncio.get_running_loop()
        self._namespaces: dict[str, NSConn] = {}
        self._waiters: dict[str, asyncio.Future[Message]] | None = None
        self._ns_waiters: dict[str, list[asyncio.Future[NSConn]]] | None = None
        self._store: dict[str, Any] | None = None
        self._closed = False
        self._closed_future: asyncio.Future[None] | None = None
        self._acked = False
        self._preack: list[tuple[bytes, bool]] | None = None
        self._inbox: deque[Message] | None = None
        self._busy = False
        self._owner: asyncio.Task[Any] | None = None
        self._holds = 0
        self._active = True
        self._ping_out = False
        self._last_data = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        socket.receiver = self

    # -- public properties ---------------------------------------------------

    @property
    def server(self) -> Server | None:
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
        return self._acked

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        state = " closed" if self._closed else ""
        return f"<{side} Conn id={self.id!r}{state}>"

    # -- the connection's store --------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Keep a value with the connection (Go's ``Conn.Set``)."""
        if self._store is None:
            self._store = {}
        self._store[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """A value kept with :meth:`set`, or ``default``."""
        return default if self._store is None else self._store.get(key, default)

    def increment(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to an integer value (missing counts as 0) and return it."""
        value = int(self.get(key, 0)) + delta
        self.set(key, value)
        return value

    def decrement(self, key: str, delta: int = 1) -> int:
        """Subtract ``delta`` from an integer value and return it."""
        return self.increment(key, -delta)

    # -- namespaces ------------------------------------------------------------

    def namespace(self, name: str) -> NSConn | None:
        """The connected namespace ``name``, or ``None``."""
        return self._namespaces.get(name)

    @property
    def namespaces(self) -> dict[str, NSConn]:
        """A snapshot of the connected namespaces."""
        return dict(self._namespaces)

    async def connect(self, namespace: str, *, timeout: float | None = None) -> NSConn:
        """Connect to ``namespace`` (PROTOCOL.md §5.1, §5.2).

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
        reply, held = await self._ask_system(request, timeout, hold=True)
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
            if held:
                self._release()
        await self._fire(ns, Message(namespace, ON_NAMESPACE_CONNECTED, is_local=True))
        return ns

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
        _yield_current()
        try:
            return await _with_timeout(fut, timeout)
        finally:
            waiters = self._ns_waiters.get(namespace) if self._ns_waiters else None
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._ns_waiters[namespace]

    #: neffos.js name of :meth:`wait_connect`
    wait_server_connect = wait_connect

    async def disconnect_all(self, *, timeout: float | None = None) -> None:
        """Disconnect every connected namespace in turn (§5.5)."""
        if self.handler.only_native:
            return
        for ns in list(self._namespaces.values()):
            if self._namespaces.get(ns.namespace) is ns:
                await ns.disconnect(timeout=timeout)

    # -- writing ---------------------------------------------------------------

    def write(self, msg: Message) -> bool:
        """Send ``msg`` as it is, after the write checks of PROTOCOL.md §7.4.

        Returns ``False`` (and sends nothing) when the connection is closed, the
        namespace is not connected or the room not joined.
        """
        if self._closed or not self._writable(msg):
            return False
        if msg.from_explicit:
            msg = msg.copy(from_explicit="")
        data = serialize(msg)
        return self._send(data, _is_binary_frame(data, msg.set_binary))

    def _writable(self, msg: Message) -> bool:
        event = msg.event
        if event == ON_NAMESPACE_CONNECT or event == ON_NAMESPACE_DISCONNECT:
            return True
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            return False
        room = msg.room
        return not room or event == ON_ROOM_JOIN or event == ON_ROOM_LEFT or room in ns.rooms

    def _send(self, data: bytes, binary: bool) -> bool:
        if self._closed:
            return False
        try:
            pending = self.socket.send(data, binary)
        except Exception as exc:
            self._cfg.log.debug("[%s] write failed: %r", self.id, exc)
            self._fail(1011, "write failed")
            return False
        if pending > self._cfg.send_buffer:
            self._cfg.log.warning(
                "[%s] closing a slow connection: %d bytes waiting to be sent (send_buffer=%d)",
                self.id,
                pending,
                self._cfg.send_buffer,
            )
            self._fail(1008, "send buffer full")
        return True

    # -- ask -------------------------------------------------------------------

    async def ask(self, msg: Message, *, timeout: float | None = None) -> Message:
        """Send ``msg`` with a wait token and return the peer's answer.

        Works from inside an event handler. Honours ``timeout=`` and any enclosing
        ``asyncio.timeout()``.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds.
            WriteClosed: the message could not be written (closed connection,
                namespace not connected, room not joined).
            ConnectionClosed: the connection closed before the answer.
            TooManyPendingAsks: ``max_pending_asks`` asks are already waiting.
            Exception: the error the peer answered with (a registered known
                error, or :class:`~neffos.RemoteError`).
        """
        self._check_open()
        if not self._writable(msg):
            raise WriteClosed()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = {}
        if len(waiters) >= self._cfg.max_pending_asks:
            raise TooManyPendingAsks(f"{len(waiters)} asks are already pending")
        token = self._tokens()
        fut: asyncio.Future[Message] = self._loop.create_future()
        waiters[token] = fut
        try:
            data = serialize(msg.copy(wait=token, from_explicit=""))
            if not self._send(data, _is_binary_frame(data, msg.set_binary)):
                raise WriteClosed()
            _yield_current()
            reply = await fut if timeout is None else await _with_timeout(fut, timeout)
        finally:
            waiters.pop(token, None)
        if reply.err is not None:
            raise reply.err
        return reply

    async def _ask_system(
        self, request: Message, timeout: float | None, *, hold: bool = False
    ) -> tuple[Message, bool]:
        """Send a system request; return the answer and whether the reader is held.

        With ``hold``, frames that arrive after the answer wait until the caller
        calls :meth:`_release` (see :class:`_HoldFuture`).
        """
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = {}
        token = self._tokens()
        fut: asyncio.Future[Message] = (
            _HoldFuture(loop=self._loop) if hold else self._loop.create_future()
        )
        waiters[token] = fut
        try:
            data = serialize(request.copy(wait=token))
            if not self._send(data, False):
                raise ConnectionClosed()
            _yield_current()
            reply = await _with_timeout(fut, timeout)
        except BaseException:
            if getattr(fut, "held", False):
                self._release()
            raise
        finally:
            waiters.pop(token, None)
        return reply, bool(getattr(fut, "held", False))

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed()

    async def _before_request(self) -> None:
        """Hook: a server connection waits for the acknowledgement here."""

    # -- reading -----------------------------------------------------------------

    def feed(self, data: bytes, binary: bool) -> None:
        """Process one data message from the socket (called by the transport)."""
        self._active = True
        if not data or self._closed:
            return
        if self._preack is not None:
            self._feed_preack(data, binary)
            return
        handler = self.handler
        msg = parse(
            data, binary, allow_native=handler.allow_native, only_native=handler.only_native
        )
        if msg.is_invalid:
            self._cfg.log.debug("[%s] dropped an invalid frame: %r", self.id, data[:80])
            return
        if self._last_data:
            self._last_data = self._loop.time()
        if msg.from_explicit or msg.from_stack_exchange:
            # Bus-only markers: never honour them on frames from a peer (§13.2 #14).
            msg.from_explicit = ""
            msg.from_stack_exchange = False
        if msg.wait and self._is_answer(msg):
            return
        if self._busy or self._holds:
            inbox = self._inbox
            if inbox is None:
                inbox = self._inbox = deque()
            if len(inbox) >= self._cfg.max_queued_frames:
                self._cfg.log.warning(
                    "[%s] closing: more than %d frames waiting for a slow handler",
                    self.id,
                    self._cfg.max_queued_frames,
                )
                self._fail(1008, "too many queued messages")
                return
            inbox.append(msg)
            return
        try:
            self._dispatch(msg)
        except Exception:  # never let a bug reach the transport's callback
            self._cfg.log.exception("[%s] processing of %r failed", self.id, msg)

    def _feed_preack(self, data: bytes, binary: bool) -> None:
        raise NotImplementedError

    def _is_wait(self, wait: str) -> bool:
        return True

    def _is_answer(self, msg: Message) -> bool:
        """Deliver ``msg`` to the ask waiting for its token, if any."""
        if not self._is_wait(msg.wait):
            return False
        waiters = self._waiters
        if waiters:
            fut = waiters.pop(msg.wait, None)
            if fut is not None and not fut.done():
                if type(fut) is _HoldFuture:
                    fut.held = True
                    self._holds += 1
                fut.set_result(msg)
                return True
        return self._is_server_answer(msg)

    def _is_server_answer(self, msg: Message) -> bool:
        return False

    def _dispatch(self, msg: Message) -> None:
        if self._is_system_request(msg):
            table = (
                self.handler.namespaces.get(msg.namespace)
                if msg.event == ON_NAMESPACE_CONNECT
                else getattr(self._namespaces.get(msg.namespace), "events", None)
            )
            self._drive(self._system(msg), table is not None and table.has_async_system)
            return
        target = self._handler_of(msg)
        if target is None:
            return
        ns, fn = target
        try:
            result = fn.fn(ns, msg)  # an async handler only makes its coroutine here
        except Exception as exc:
            result = self._raised(exc, msg)
        if result is None:
            return
        cls = result.__class__
        if cls is bytes or cls is str or not inspect.isawaitable(result):
            self._answer(msg, result)  # also an exception raised by the call itself
        else:
            self._start_task(self._await_result(result, msg))

    async def _await_result(self, awaitable: Awaitable[Any], msg: Message) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            result = self._raised(exc, msg)
        if result is not None:
            self._answer(msg, result)

    async def _process(self, msg: Message) -> None:
        """The general (awaiting) form of :meth:`_dispatch`, used when draining."""
        if self._is_system_request(msg):
            await self._system(msg)
            return
        target = self._handler_of(msg)
        if target is None:
            return
        ns, fn = target
        try:
            result = fn.fn(ns, msg)
            if fn.is_async or inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            result = self._raised(exc, msg)
        if result is not None:
            self._answer(msg, result)

    def _is_system_request(self, msg: Message) -> bool:
        event = msg.event
        # neffos.js leaveAll() sends _OnRoomLeft with a token instead of
        # _OnRoomLeave (PROTOCOL.md §6.5): a server answers it as a leave.
        return event in _SYSTEM_REQUESTS or (
            event == ON_ROOM_LEFT and not self.is_client and bool(msg.wait)
        )

    def _handler_of(self, msg: Message) -> tuple[NSConn, _Fn] | None:
        """The namespace connection and handler of a user event (§7.1, §7.3)."""
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            self._not_connected(msg)
            return None
        fn = ns.events.lookup(msg.event)
        return None if fn is None else (ns, fn)

    def _raised(self, exc: Exception, msg: Message) -> Exception:
        if not isinstance(exc, NeffosError) and not is_known_error(exc):
            self._cfg.log.error(
                "[%s] handler of %r/%r raised", self.id, msg.namespace, msg.event, exc_info=exc
            )
        return exc

    def _answer(self, msg: Message, result: Any) -> None:
        """Write a handler's result back as an echo of ``msg`` (PROTOCOL.md §4.6, §7.2)."""
        if msg.is_native:
            self._answer_native(msg, result)
            return
        if isinstance(result, BaseException):
            if isinstance(result, Reply):
                body = result.body
            else:
                if msg.is_error:
                    return  # no error ping-pong (§8.4)
                err = result if str(result) else RemoteError(type(result).__name__)
                self.write(Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err))
                return
        elif isinstance(result, bytes):
            body = result
        elif isinstance(result, str):
            body = result.encode()
        else:
            try:
                body = marshal(result)
            except Exception as exc:
                self._cfg.log.error(
                    "[%s] cannot encode the result of %r/%r: %s",
                    self.id, msg.namespace, msg.event, exc,
                )
                if not msg.is_error:
                    err = RemoteError("cannot encode the reply")
                    self.write(
                        Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err)
                    )
                return
        # The reply is the request echoed with the new body (§4.6), written
        # through the same checks as Conn.write but without a Message object.
        if self._closed or not self._writable(msg):
            return
        data = frame(msg.wait, msg.namespace, msg.room, msg.event, PLAIN, body)
        self._send(data, _is_binary_frame(data, msg.set_binary))

    def _answer_native(self, msg: Message, result: Any) -> None:
        # A native peer cannot read neffos frames: a reply goes back as a raw
        # frame of the same type, an error is not sent at all (PROTOCOL.md §7.5).
        if isinstance(result, Reply):
            body = result.body
        elif isinstance(result, BaseException):
            return
        elif isinstance(result, bytes | str):
            body = result.encode() if isinstance(result, str) else result
        else:
            try:
                body = marshal(result)
            except Exception as exc:
                self._cfg.log.error("[%s] cannot encode a native reply: %s", self.id, exc)
                return
        self.write(Message(body=body, is_native=True, set_binary=msg.set_binary))

    def _not_connected(self, msg: Message) -> None:
        # Go drops such frames silently and its askers hang; a tokened request
        # gets a prompt "bad namespace" instead (PROTOCOL.md §7.3).
        # An empty reply (no event) that came too late is not a request.
        if msg.wait and msg.event and not msg.is_error and not msg.is_native:
            self._send_error_reply(msg, BadNamespace())

    def _send_error_reply(self, msg: Message, err: BaseException) -> None:
        if not str(err):
            err = RemoteError(type(err).__name__)
        reply = Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err)
        self._send(serialize(reply), False)

    def _send_empty_reply(self, wait: str) -> None:
        self._send(empty_reply(wait), False)

    # -- ordered processing ----------------------------------------------------

    def _drive(self, coro: _PROCESS, needs_task: bool) -> None:
        """Run a processing coroutine inline when it cannot suspend, else in a task."""
        if needs_task:
            self._start_task(coro)
            return
        try:
            suspended_at = coro.send(None)
        except StopIteration:
            return
        except Exception:
            self._cfg.log.exception("[%s] processing failed", self.id)
            return
        # A plain function handed back an awaitable: finish the work in a task.
        self._start_task(_resume(coro, suspended_at))

    def _start_task(self, first: Awaitable[Any] | None) -> None:
        """Process in a task that owns the connection's processing until it is done."""
        self._busy = True
        task = self._loop.create_task(self._run_then_drain(first))
        self._owner = task
        tasks = self._cfg.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run_then_drain(self, first: Awaitable[Any] | None) -> None:
        me = asyncio.current_task()
        assert me is not None
        _processing.set((self, me))
        try:
            if first is not None:
                await first
            inbox = self._inbox
            while inbox and self._owner is me and not self._holds and not self._closed:
                msg = inbox.popleft()
                try:
                    await self._process(msg)
                except Exception:
                    self._cfg.log.exception("[%s] processing failed", self.id)
        finally:
            if self._owner is me:
                self._owner = None
                self._busy = False
                self._kick()

    def _kick(self) -> None:
        if not self._busy and not self._holds and self._inbox and not self._closed:
            self._start_task(None)

    def _yield_processing(self, owner: asyncio.Task[Any]) -> None:
        """Let the connection go on processing while a handler waits for a peer.

        Without this, a handler that awaits an answer which the peer can only give
        after we process one of its requests (asks in both directions, or a chain
        across connections) would deadlock. ``owner`` is the task running the
        handler: the wait may happen in a task it started (``wait_for``,
        ``gather``). Ordering is kept for everything else.
        """
        if self._owner is owner:
            self._owner = None
            self._busy = False
            self._kick()

    def _release(self) -> None:
        self._holds -= 1
        if not self._holds:
            self._kick()

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

    # -- answering the peer's system requests ------------------------------------

    async def _system(self, msg: Message) -> None:
        event = msg.event
        if event == ON_NAMESPACE_CONNECT:
            await self._reply_connect(msg)
        elif event == ON_NAMESPACE_DISCONNECT:
            await self._reply_disconnect(msg)
        else:
            ns = self._namespaces.get(msg.namespace)
            if ns is None:
                self._not_connected(msg)
            elif event == ON_ROOM_JOIN:
                await self._reply_room_join(ns, msg)
            else:
                await self._reply_room_leave(ns, msg)

    async def _reply_connect(self, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        if msg.namespace in self._namespaces:
            self._send_empty_reply(wait)
            return
        table = self.handler.namespaces.get(msg.namespace)
        if table is None:
            self._send_error_reply(msg, BadNamespace())
            return
        ns = NSConn(self, msg.namespace, table)
        err = await self._fire(ns, msg)
        if err is not None:
            self._send_error_reply(msg, err)
            return
        if msg.namespace in self._namespaces or self._closed:
            return
        self._add_namespace(ns)
        self._send_empty_reply(wait)
        await self._fire(ns, Message(msg.namespace, ON_NAMESPACE_CONNECTED))

    async def _reply_disconnect(self, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            self._send_empty_reply(wait)
            return
        if self.is_client:
            # A client cannot refuse a server's disconnect (§5.4).
            await self._force_leave_all(ns, is_local=False)
            self._remove_namespace(ns)
            self._send_empty_reply(wait)
            await self._fire(ns, msg)
            return
        err = await self._fire(ns, msg)
        if err is not None:
            self._send_error_reply(msg, err)
            return
        if self._closed or self._namespaces.get(ns.namespace) is not ns:
            return  # closed meanwhile: the close sequence fired the events
        await self._force_leave_all(ns, is_local=False)
        self._remove_namespace(ns)
        self._send_empty_reply(wait)

    async def _reply_room_join(self, ns: NSConn, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        if msg.room not in ns.rooms:
            err = await self._fire(ns, msg)
            if err is not None:
                self._send_error_reply(msg, err)
                return
            if self._closed or self._namespaces.get(ns.namespace) is not ns:
                return  # closed or disconnected while the handler ran
            if msg.room not in ns.rooms:
                ns._add_room(msg.room)
            await self._fire(ns, Message(ns.namespace, ON_ROOM_JOINED, room=msg.room))
        self._send_empty_reply(wait)

    async def _reply_room_leave(self, ns: NSConn, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        room = ns.rooms.get(msg.room)
        if room is None:
            self._send_empty_reply(wait)
            return
        leave = Message(ns.namespace, ON_ROOM_LEAVE, room=msg.room)
        err = await self._fire(ns, leave)
        if err is not None and not self.is_client:  # a client cannot refuse (§6.4)
            self._send_error_reply(msg, err)
            return
        ns._remove_room(room)
        await self._fire(ns, Message(ns.namespace, ON_ROOM_LEFT, room=msg.room))
        self._send_empty_reply(wait)

    async def _force_leave_all(self, ns: NSConn, *, is_local: bool) -> None:
        for room in list(ns.rooms.values()):
            await self._fire(
                ns,
                Message(ns.namespace, ON_ROOM_LEAVE, room=room.name, is_forced=True,
                        is_local=is_local),
            )
            ns._remove_room(room)
            await self._fire(
                ns,
                Message(ns.namespace, ON_ROOM_LEFT, room=room.name, is_forced=True,
                        is_local=is_local),
            )

    # -- bookkeeping hooks (the server keeps its indexes with these) ---------------

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
                ns._remove_room(room)
            del self._namespaces[ns.namespace]
            self._ns_removed(ns)

    def _ns_added(self, ns: NSConn) -> None:
        pass

    def _ns_removed(self, ns: NSConn) -> None:
        pass

    def _room_added(self, ns: NSConn, room: Room) -> None:
        pass

    def _room_removed(self, ns: NSConn, room: Room) -> None:
        pass

    # -- liveness ------------------------------------------------------------------

    def alive(self) -> None:
        """Called by the transport for every pong."""
        self._active = True

    def _heartbeat(self) -> None:
        """One tick of the ping sweep: ping a silent peer, close a dead one."""
        if self._active:
            self._active = False
            self._ping_out = False
        elif self._ping_out:
            self._cfg.log.info("[%s] closing: no pong from the peer", self.id)
            self._fail(1011, "ping timeout")
        else:
            self._ping_out = True
            try:
                self.socket.ping()
            except Exception as exc:
                self._cfg.log.debug("[%s] ping failed: %r", self.id, exc)

    def _start_timeouts(self) -> None:
        read_timeout = self.handler.read_timeout
        if read_timeout:
            self._last_data = self._loop.time()
            self._read_timer = self._loop.call_later(read_timeout, self._check_read_timeout)

    def _check_read_timeout(self) -> None:
        timeout = self.handler.read_timeout
        idle = self._loop.time() - self._last_data
        if idle >= timeout:
            self._cfg.log.info("[%s] closing: no data for %.1fs (read timeout)", self.id, idle)
            self._fail(1001, "read timeout")
        else:
            self._read_timer = self._loop.call_later(timeout - idle, self._check_read_timeout)

    def writing_paused(self) -> None:
        """Called by the transport when its buffer passed its high-water mark."""
        timeout = self.handler.write_timeout
        if timeout and self._write_timer is None and not self._closed:
            self._write_timer = self._loop.call_later(timeout, self._write_timed_out)

    def writing_resumed(self) -> None:
        """Called by the transport when its buffer drained."""
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self._cfg.log.warning("[%s] closing: the peer has not read for too long", self.id)
        self._fail(1008, "write timeout")

    # -- closing -------------------------------------------------------------------

    def _fail(self, code: int, reason: str) -> None:
        """The connection is broken (dead peer, timeout, overflow): close it.

        A client with a reconnect policy reconnects instead of closing for good.
        """
        self.close(code, reason)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent).

        Sends a close frame, then — soon after, in the event loop — fires the
        forced ``_OnRoomLeave``/``_OnRoomLeft``/``_OnNamespaceDisconnect`` events
        (``is_forced`` and ``is_local`` set), fails pending asks with
        :class:`~neffos.ConnectionClosed` and runs the disconnect hooks. Use
        :meth:`wait_closed` or :meth:`aclose` to wait for all of that.
        """
        if self._closed:
            return
        self._closed = True
        self._fail_waiters()
        try:
            self.socket.close(code, reason)
        except Exception as exc:
            self._cfg.log.debug("[%s] socket close failed: %r", self.id, exc)
        self._loop.call_soon(self._begin_close_sequence)

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
        if self._closed:
            return
        self._closed = True
        self._fail_waiters()
        self._cfg.log.debug("[%s] socket closed: %r", self.id, exc)
        self._begin_close_sequence()

    def _fail_waiters(self) -> None:
        for timer in (self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = self._write_timer = None
        if self._inbox:
            self._inbox.clear()
        waiters, self._waiters = self._waiters, None
        if waiters:
            for fut in waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed())
                    fut.exception()  # retrieved: no "never retrieved" warning
        ns_waiters, self._ns_waiters = self._ns_waiters, None
        if ns_waiters:
            for futs in ns_waiters.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(ConnectionClosed())
                        f.exception()

    def _begin_close_sequence(self) -> None:
        if self._loop.is_closed():
            return
        task = self._loop.create_task(self._close_sequence())
        self._cfg.tasks.add(task)
        task.add_done_callback(self._cfg.tasks.discard)

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
        """Forced local events for every namespace and room, then forget them (§11.2)."""
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


async def _with_timeout(fut: Awaitable[_R], timeout: float | None) -> _R:
    if timeout is None:
        return await fut
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            return await fut
    except TimeoutError:
        if cm.expired():
            raise AskTimeout(f"no answer within {timeout}s") from None
        raise


class NSConn:
    """A connection's membership of one namespace; what event handlers receive."""

    __slots__ = ("__weakref__", "conn", "events", "namespace", "rooms", "value")

    def __init__(self, conn: Conn, namespace: str, table: EventTable) -> None:
        self.conn = conn
        # Interned: every connection of a namespace shares one string object.
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
        """Join ``room`` (PROTOCOL.md §6.1; on a server connection: force the client, §6.3).

        Raises:
            WriteClosed: the namespace is not connected any more.
            AskTimeout, ConnectionClosed: see :meth:`Conn.ask`.
            Exception: the local or remote ``_OnRoomJoin`` refused.
        """
        if not room:
            raise ValueError("a room name must not be empty")
        existing = self.rooms.get(room)
        if existing is not None:
            return existing
        conn = self.conn
        conn._check_open()
        if conn._namespaces.get(self.namespace) is not self:
            raise WriteClosed()
        request = Message(self.namespace, ON_ROOM_JOIN, room=room, is_local=True)
        reply, _ = await conn._ask_system(request, timeout)
        if reply.err is not None:
            raise reply.err
        existing = self.rooms.get(room)
        if existing is not None:
            return existing
        err = await conn._fire(self, request)
        if err is not None:
            raise err
        self._check_connected()
        joined = self._add_room(room)
        await conn._fire(self, Message(self.namespace, ON_ROOM_JOINED, room=room, is_local=True))
        return joined

    def _check_connected(self) -> None:
        """After an await: the connection is open and this namespace still connected."""
        conn = self.conn
        conn._check_open()
        if conn._namespaces.get(self.namespace) is not self:
            raise BadNamespace()

    async def leave_all(self, *, timeout: float | None = None) -> None:
        """Leave every joined room in turn."""
        for room in list(self.rooms.values()):
            if self.rooms.get(room.name) is room:
                await room.leave(timeout=timeout)

    async def disconnect(self, *, timeout: float | None = None) -> None:
        """Disconnect from the namespace (§5.3; on a server connection: force it, §5.4).

        Raises:
            BadNamespace: not connected.
            Exception: the server's ``_OnNamespaceDisconnect`` refused.
        """
        conn = self.conn
        if conn._namespaces.get(self.namespace) is not self:
            raise BadNamespace()
        conn._check_open()
        request = Message(self.namespace, ON_NAMESPACE_DISCONNECT, is_local=True)
        reply, _ = await conn._ask_system(request, timeout)
        if reply.err is not None:
            raise reply.err
        if conn._closed or conn._namespaces.get(self.namespace) is not self:
            return  # closed meanwhile: the close sequence fired the events
        await conn._force_leave_all(self, is_local=True)
        conn._remove_namespace(self)
        await conn._fire(self, request)

    def broadcast(self, *messages: Message) -> None:
        """Server side: broadcast to the namespace (messages without a namespace get this one)."""
        self._broadcast(None, messages)

    def broadcast_others(self, *messages: Message) -> None:
        """Server side: like :meth:`broadcast`, excluding this connection."""
        self._broadcast(self.conn, messages)

    def _broadcast(self, exclude: Any, messages: Iterable[Message]) -> None:
        server = self.conn.server
        if server is None:
            raise RuntimeError("broadcast is only available on server connections")
        server.broadcast(
            exclude,
            *(m if m.namespace else m.copy(namespace=self.namespace) for m in messages),
        )

    # -- bookkeeping ---------------------------------------------------------------

    def _add_room(self, name: str) -> Room:
        room = Room(self, name)
        self.rooms[name] = room
        self.conn._room_added(self, room)
        return room

    def _remove_room(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            self.conn._room_removed(self, room)


class Room:
    """A joined room of a namespace connection."""

    __slots__ = ("__weakref__", "name", "nsconn")

    def __init__(self, nsconn: NSConn, name: str) -> None:
        self.nsconn = nsconn
        self.name = sys.intern(name)

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
        """Leave the room (§6.2; on a server connection: force the client, §6.4).

        Raises:
            BadRoom: the room is not joined.
            Exception: the peer's or the local ``_OnRoomLeave`` refused.
        """
        ns = self.nsconn
        conn = ns.conn
        if ns.rooms.get(self.name) is not self:
            raise BadRoom()
        conn._check_open()
        request = Message(ns.namespace, ON_ROOM_LEAVE, room=self.name, is_local=True)
        reply, _ = await conn._ask_system(request, timeout)
        if reply.err is not None:
            raise reply.err
        if ns.rooms.get(self.name) is not self:
            return
        err = await conn._fire(ns, request)
        if err is not None:
            raise err
        if ns.rooms.get(self.name) is not self:
            return
        ns._remove_room(self)
        await conn._fire(ns, Message(ns.namespace, ON_ROOM_LEFT, room=self.name, is_local=True))
