"""The neffos server: connection registry, indexes, broadcast, ask, hooks, HTTP rules."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._http import (
    Request,
    apply_url_headers,
    plain_text,
    reconnect_tries,
)
from .conn import Config, Conn, NSConn, Room, _is_binary_frame, _with_timeout, _yield_current
from .errors import ConnectionClosed, NeffosError
from .exchange.node import bus_token
from .handlers import ConnHandler
from .protocol import (
    ACK_HELLO,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_LEFT,
    Message,
    TokenGenerator,
    ack_ok,
    ack_refused,
    serialize,
)

if TYPE_CHECKING:
    from .exchange.base import StackExchange
    from .exchange.node import BusNode
    from .transports.base import Socket

__all__ = ["Exclude", "Listener", "Server", "UpgradeError", "exclude", "serve"]

log = logging.getLogger("neffos.server")

DEFAULT_TRANSPORT = "picows"
TRANSPORTS = ("picows", "websockets", "aiohttp")

OnConnect = Callable[[Conn], Any]
OnDisconnect = Callable[[Conn], Any]


class UpgradeError(NeffosError):
    """An HTTP request on the endpoint was answered without upgrading it.

    Passed to ``Server.on_upgrade_error``. ``status`` is the HTTP status sent.
    """

    def __init__(self, status: int, text: str, request: Request | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.request = request

    @property
    def is_trying_to_reconnect(self) -> bool:
        """True for the ``HEAD`` probe of a reconnecting neffos.js client (Go's
        ``IsTryingToReconnect``)."""
        return self.request is not None and self.request.method == "HEAD"


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


def _default_id(request: Request) -> str:
    return str(uuid.uuid4())


class ServerConn(Conn):
    """A server-side connection."""

    __slots__ = (
        "_ack_future",
        "_handshake_timer",
        "_hello",
        "_ready",
        "_refusal",
        "_server",
        "_started",
    )

    def __init__(self, server: Server, socket: Socket, conn_id: str) -> None:
        super().__init__(socket, server.handler, server._cfg, server._tokens, conn_id)
        self._server = server
        self._hello = False
        self._ready = False
        self._started = False
        self._refusal: str | None = None
        self._ack_future: asyncio.Future[None] | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None

    @property
    def server(self) -> Server:
        return self._server

    # -- handshake (PROTOCOL.md §2) ----------------------------------------------

    def _open(self) -> None:
        if self.handler.only_native:
            # Native-only mode: no M/A exchange; "" is connected from the start.
            self._acked = True
            self._ready = True
            table = self.handler.namespaces[""]
            self._add_namespace(NSConn(self, "", table))
            self._start_timeouts()
        else:
            self._preack = []
            timeout = self._cfg.handshake_timeout
            if timeout:
                self._handshake_timer = self._loop.call_later(timeout, self._handshake_expired)
        self._run_on_connect()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self._acked:
            log.info("[%s] closing: no handshake within %ss", self.id, self._cfg.handshake_timeout)
            self.close(1008, "handshake timeout")

    def _run_on_connect(self) -> None:
        hook = self._server.on_connect
        if hook is None:
            self._on_connect_done(None)
            return
        try:
            result = hook(self)
        except Exception as exc:
            self._on_connect_done(exc)
            return
        if inspect.isawaitable(result):
            task = self._loop.create_task(self._await_on_connect(result))
            self._cfg.tasks.add(task)
            task.add_done_callback(self._cfg.tasks.discard)
        else:
            self._on_connect_done(result if isinstance(result, BaseException) else None)

    async def _await_on_connect(self, awaitable: Awaitable[Any]) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            result = exc
        self._on_connect_done(result if isinstance(result, BaseException) else None)

    def _on_connect_done(self, err: BaseException | None) -> None:
        if self._closed:
            return
        if err is not None:
            text = str(err) or type(err).__name__
            if self._acked:
                # on_connect already let the client in (it called connect()),
                # so "H" cannot be sent any more: close instead of ignoring it.
                log.warning("[%s] on_connect failed after the acknowledgement: %s", self.id, text)
                self.close(1008, "refused")
                return
            log.info("[%s] refused by on_connect: %s", self.id, text)
            self._refusal = text
        else:
            self._started = True
        self._ready = True
        self._maybe_ack()

    def _feed_preack(self, data: bytes, binary: bool) -> None:
        # Only "M" completes the handshake; a client cannot pick its own ID with
        # an "A" frame (PROTOCOL.md §2.4, §13.2 #8).
        if data == ACK_HELLO and not self._hello:
            self._hello = True
            self._maybe_ack()
            return
        queued = self._preack
        assert queued is not None
        if len(queued) >= self._cfg.max_queued_frames:
            log.warning("[%s] closing: too many frames before the handshake", self.id)
            self.close(1008, "handshake not completed")
            return
        queued.append((data, binary))

    def _maybe_ack(self) -> None:
        if self._acked or not self._hello or not self._ready or self._closed:
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._refusal is not None:
            # The answer to "M" is "H<text>", then the connection closes (§2.1).
            self._preack = None
            self._send(ack_refused(self._refusal), False)
            self.close(1008, "refused")
            return
        queued = self._preack or []
        self._preack = None
        self._acked = True
        self._send(ack_ok(self.id), False)
        if self._ack_future is not None and not self._ack_future.done():
            self._ack_future.set_result(None)
        self._start_timeouts()
        # Frames the client sent before "M" are handled only now, after "A".
        for data, binary in queued:
            self.feed(data, binary)

    async def _before_request(self) -> None:
        if self._acked:
            return
        if not self._ready:
            # connect() inside on_connect: let the client in now, otherwise the
            # request could never be answered.
            self._ready = True
            self._maybe_ack()
            if self._acked:
                return
        if self._ack_future is None:
            self._ack_future = self._loop.create_future()
        await self._ack_future
        if self._closed:
            raise ConnectionClosed()

    def _fail_waiters(self) -> None:
        super()._fail_waiters()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        fut = self._ack_future
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionClosed())
            fut.exception()

    # -- routing of answers --------------------------------------------------------

    def _is_wait(self, wait: str) -> bool:
        return wait[0] != "$"

    def _is_server_answer(self, msg: Message) -> bool:
        server = self._server
        if server._ask_answer(msg):
            return True
        bus = server._bus
        return bus is not None and bus.answer_forwarded(msg, self)

    # -- indexes -------------------------------------------------------------------

    def _ns_added(self, ns: NSConn) -> None:
        server = self._server
        _index_add(server._by_ns, ns.namespace, self)
        if server._bus is not None:
            server._bus.add_namespace(ns.namespace)

    def _ns_removed(self, ns: NSConn) -> None:
        server = self._server
        _index_remove(server._by_ns, ns.namespace, self)
        if server._bus is not None:
            server._bus.remove_namespace(ns.namespace)

    def _room_added(self, ns: NSConn, room: Room) -> None:
        _index_add(self._server._by_room, (ns.namespace, room.name), self)

    def _room_removed(self, ns: NSConn, room: Room) -> None:
        _index_remove(self._server._by_room, (ns.namespace, room.name), self)

    async def _after_close(self) -> None:
        server = self._server
        server._unregister(self)
        if self._started or server.fire_disconnect_always:
            hook = server.on_disconnect
            if hook is not None:
                try:
                    result = hook(self)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("[%s] on_disconnect failed", self.id)


# An index maps a key to one connection, or to an insertion-ordered dict of them
# when there are several: most IDs (and many rooms) have a single member, and a
# dict per key would cost ~230 bytes per connection.
Index = dict[Any, Any]


def _index_add(index: Index, key: Any, conn: ServerConn) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = conn
    elif bucket.__class__ is ServerConn:
        if bucket is not conn:
            index[key] = {bucket: None, conn: None}
    else:
        bucket[conn] = None


def _index_remove(index: Index, key: Any, conn: ServerConn) -> None:
    bucket = index.get(key)
    if bucket is None:
        return
    if bucket.__class__ is ServerConn:
        if bucket is conn:
            del index[key]
    else:
        bucket.pop(conn, None)
        if len(bucket) == 1:
            index[key] = next(iter(bucket))


def _index_get(index: Index, key: Any) -> tuple[ServerConn, ...] | dict[ServerConn, None]:
    bucket = index.get(key)
    if bucket is None:
        return ()
    if bucket.__class__ is ServerConn:
        return (bucket,)
    return bucket  # type: ignore[no-any-return]


class Listener:
    """A listening socket of a server (from :meth:`Server.listen`)."""

    def __init__(
        self,
        server: Server,
        path: str | None,
        transport_module: Any,
        handshake_timeout: float,
    ) -> None:
        self.server = server
        self.path = path
        self.handshake_timeout = handshake_timeout
        self._module = transport_module
        self._aio_server: asyncio.Server | None = None
        self.transport: str = transport_module.NAME

    # Endpoint protocol (used by _http.HttpFront)
    def route(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        return self.server._route(request, self.path)

    def upgrade(self, transport: asyncio.Transport, head: bytes, request: Request) -> None:
        self._module.upgrade(self, transport, head, request)

    def _bound(self, aio_server: asyncio.Server) -> None:
        self._aio_server = aio_server
        address = aio_server.sockets[0].getsockname()
        self.host: str = str(address[0])
        #: the bound port (useful with ``port=0``)
        self.port: int = int(address[1])

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._aio_server.sockets) if self._aio_server else ()

    @property
    def url(self) -> str:
        """``ws://host:port/path`` of this listener."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{self.path or '/'}"

    async def serve_forever(self) -> None:
        """Wait until the listener is closed (or the task is cancelled)."""
        aio_server = self._aio_server
        if aio_server is not None:
            await aio_server.serve_forever()

    async def close(self) -> None:
        """Stop accepting connections (open connections are not closed)."""
        if self._aio_server is not None:
            self._aio_server.close()
            await self._aio_server.wait_closed()
            self._aio_server = None
        if self in self.server._listeners:
            self.server._listeners.remove(self)


class Server:
    """A neffos server.

    Args:
        handler: the connection handler (see :mod:`neffos.handlers`).
        on_connect: ``fn(conn)`` (plain or async) called for every new
            connection before it is acknowledged; raising or returning an
            exception refuses it (the client's ``dial`` fails with that text).
        on_disconnect: ``fn(conn)`` called after a connection closed, if it had
            been accepted (or always, with ``fire_disconnect_always``).
        on_upgrade_error: ``fn(UpgradeError)`` called for every request on the
            endpoint that is answered without an upgrade (``HEAD`` probes,
            ``405``, ``500`` after :meth:`close`...).
        id_generator: ``fn(request) -> str``; the default is a random UUID4.
            IDs need not be unique: ``to=`` targets every connection with it.
        max_message_size: largest accepted message in bytes (default 1 MiB);
            bigger ones close the connection with 1009.
        send_buffer: bytes allowed to wait in a connection's send buffer
            (default 1 MiB); a slower reader is closed, others never wait for it.
        max_pending_asks: unanswered ``ask`` calls allowed per connection
            (default 1024).
        max_queued_frames: frames allowed to queue behind a busy async handler
            or before the handshake (default 4096); past it the connection is
            closed.
        handshake_timeout: seconds from TCP accept to the neffos handshake
            (default 10).
        ping_interval: seconds between heartbeat sweeps (default 20; ``None``
            disables). A peer silent for a whole interval gets a ping; one that
            stays silent for the next interval too is closed.
        allowed_origins: if set, browsers from other origins get ``403``.
        transport: the WebSocket library used by :meth:`listen`: ``"picows"``
            (default, fastest), ``"websockets"`` or ``"aiohttp"``.
    """

    def __init__(
        self,
        handler: Any,
        *,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_upgrade_error: Callable[[UpgradeError], Any] | None = None,
        id_generator: Callable[[Request], str] | None = None,
        fire_disconnect_always: bool = False,
        max_message_size: int = 1 << 20,
        send_buffer: int = 1 << 20,
        max_pending_asks: int = 1024,
        max_queued_frames: int = 4096,
        handshake_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        allowed_origins: Iterable[str] | None = None,
        transport: str = DEFAULT_TRANSPORT,
    ) -> None:
        self.handler = ConnHandler.compile(handler)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_upgrade_error = on_upgrade_error
        self.id_generator: Callable[[Request], str] = id_generator or _default_id
        self.fire_disconnect_always = fire_disconnect_always
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.transport = transport
        self._cfg = Config(
            log=log,
            send_buffer=send_buffer,
            max_pending_asks=max_pending_asks,
            max_message_size=max_message_size,
            handshake_timeout=handshake_timeout,
            ping_interval=ping_interval,
            max_queued_frames=max_queued_frames,
        )
        self._tokens = TokenGenerator()
        self._conns: dict[ServerConn, None] = {}
        # id -> conns, namespace -> conns, (namespace, room) -> conns
        self._by_id: Index = {}
        self._by_ns: Index = {}
        self._by_room: Index = {}
        self._asks: dict[str, asyncio.Future[Message]] = {}
        self._done_asks: dict[str, None] = {}
        self._listeners: list[Listener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._exchanges: list[StackExchange] = []
        self._bus: BusNode | None = None
        self._closed = False

    @property
    def max_message_size(self) -> int:
        return self._cfg.max_message_size

    @property
    def is_closed(self) -> bool:
        return self._closed

    # -- lifecycle ---------------------------------------------------------------

    def use_stack_exchange(self, exchange: StackExchange) -> None:
        """Share this server's connections with other server processes over a bus.

        Call it before the server starts (before ``listen``). Several exchanges
        may be stacked, as in Go: broadcasts are published to all of them, asks
        use the first that works.

        Raises:
            RuntimeError: the server already started.
        """
        if self._bus is not None:
            raise RuntimeError("use_stack_exchange() must be called before the server starts")
        self._exchanges.append(exchange)

    @property
    def stack_exchanges(self) -> list[StackExchange]:
        return list(self._exchanges)

    async def start(self) -> None:
        """Start the heartbeat sweep and connect the stack exchanges (idempotent).

        ``listen`` and ``async with server`` call it.

        Raises:
            Exception: a stack exchange could not connect to its broker.
        """
        if self._exchanges and self._bus is None and not self._closed:
            from .exchange.node import BusNode

            bus = BusNode(self, self._exchanges)
            await bus.start()
            self._bus = bus
            for conn in self._conns:  # connections accepted before the bus started
                bus.add_id(conn.id)
                for name in conn._namespaces:
                    bus.add_namespace(name)
        self._start()

    def _start(self) -> None:
        interval = self._cfg.ping_interval
        if self._sweeper is None and interval and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(interval))

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for conn in list(self._conns):
                if conn._acked and not conn._closed:
                    conn._heartbeat()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for listener in list(self._listeners):
            await listener.close()
        await self.close()

    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str | None = None,
        transport: str | None = None,
        **options: Any,
    ) -> Listener:
        """Listen on ``host:port`` (``port=0`` picks a free port).

        ``path`` restricts the WebSocket endpoint to one URL path (others get
        404). Extra options (``ssl=``, ``reuse_port=``, ``backlog=``) go to
        ``loop.create_server``.

        Raises:
            ImportError: the transport's library is not installed (the message
                names the pip extra).
        """
        module = load_transport(transport or self.transport)
        listener = Listener(self, path, module, self._cfg.handshake_timeout or 0.0)
        await self.start()
        listener._bound(await module.listen(listener, host, port, **options))
        self._listeners.append(listener)
        return listener

    async def close(self) -> None:
        """Close every connection; afterwards the endpoint answers 500 (like Go).

        Listeners keep running (use ``async with server`` or close them) so that
        reconnecting neffos.js clients get an answer and stop.
        """
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = list(self._conns)
        for conn in conns:
            conn.close(1001, "server closing")
        if conns:
            await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        for fut in self._asks.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed("server closed"))
                fut.exception()
        tasks = [t for t in self._cfg.tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        if self._bus is not None:
            await self._bus.close()

    # -- HTTP side (PROTOCOL.md §3.1) ----------------------------------------------

    def _route(
        self, request: Request, path: str | None
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if path is not None and request.path != path:
            return self._refuse(request, *plain_text(404, "404 page not found"))
        if self._closed:
            return self._refuse(request, *plain_text(500, "Internal Server Error"))
        if request.method == "HEAD":
            return self._refuse(request, 302, [], b"")
        if request.method != "GET":
            return self._refuse(
                request, *plain_text(405, "Method Not Allowed", [("Allow", "GET")])
            )
        apply_url_headers(request)
        if self.allowed_origins is not None:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in self.allowed_origins:
                return self._refuse(request, *plain_text(403, "Forbidden: origin not allowed"))
        return None

    def _refuse(
        self, request: Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        hook = self.on_upgrade_error
        if hook is not None:
            try:
                result = hook(UpgradeError(status, body.decode().strip(), request))
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._cfg.tasks.add(task)
                    task.add_done_callback(self._cfg.tasks.discard)
            except Exception:
                log.exception("on_upgrade_error failed")
        return status, headers, body

    def _accept(self, socket: Socket) -> ServerConn | None:
        """Called by a transport once the WebSocket is open."""
        request = socket.request
        assert request is not None
        if self._closed:
            socket.close(1001, "server closing")
            return None
        try:
            conn_id = str(self.id_generator(request))
        except Exception:
            log.exception("id_generator failed")
            socket.close(1011, "internal error")
            return None
        conn = ServerConn(self, socket, conn_id)
        conn.reconnect_tries = reconnect_tries(request)
        self._conns[conn] = None
        _index_add(self._by_id, conn_id, conn)
        if self._bus is not None:
            self._bus.add_id(conn_id)
        conn._open()
        return conn

    def _unregister(self, conn: ServerConn) -> None:
        if self._conns.pop(conn, 0) is None:
            _index_remove(self._by_id, conn.id, conn)
            if self._bus is not None:
                self._bus.remove_id(conn.id)
        for ns in list(conn._namespaces.values()):  # normally gone already
            conn._remove_namespace(ns)

    # -- queries -------------------------------------------------------------------

    def get_total_connections(self) -> int:
        """The number of open connections on this server."""
        return len(self._conns)

    def get_connections(self) -> list[Conn]:
        """A snapshot of the open connections."""
        return list(self._conns)

    def get_connections_by_namespace(self, namespace: str) -> list[NSConn]:
        """A snapshot of the connections connected to ``namespace``."""
        return [
            ns
            for conn in _index_get(self._by_ns, namespace)
            if (ns := conn._namespaces.get(namespace)) is not None
        ]

    def get_connections_by_id(self, conn_id: str) -> list[Conn]:
        """Every open connection with this ID."""
        return list(_index_get(self._by_id, conn_id))

    async def do(self, fn: Callable[[Conn], Any]) -> None:
        """Call ``fn(conn)`` for every connection (awaiting it when it is async)."""
        pending = []
        for conn in list(self._conns):
            result = fn(conn)
            if inspect.isawaitable(result):
                pending.append(result)
        if pending:
            await asyncio.gather(*pending)

    # -- broadcast (PROTOCOL.md §9) ------------------------------------------------

    def broadcast(self, exclude: Any, *messages: Message) -> None:
        """Send messages to every connection they target.

        A message goes to the connections connected to ``msg.namespace``; with
        ``msg.room`` only to those in the room; with ``msg.to`` only to the
        connections with that ID. ``exclude`` skips a sender: a ``Conn``,
        ``NSConn`` or ``Room`` (that connection), :func:`exclude` (every
        connection with an ID), or ``None``.

        Delivery never waits for a slow client, each message is encoded once,
        and a message filtered out for a connection never hides the next ones
        (unlike Go, PROTOCOL.md §9.4).
        """
        ex_conn, ex_id = _exclusion(exclude)
        bus = self._bus
        for msg in messages:
            self._deliver(msg, ex_conn, ex_id, "")
            if bus is not None:
                bus.publish(msg, ex_conn, ex_id, "")

    def _deliver(
        self,
        msg: Message,
        ex_conn: Conn | None,
        ex_id: str | None,
        wait: str,
        *,
        ex_sid: str = "",
        node: BusNode | None = None,
        seen: set[ServerConn] | None = None,
    ) -> int:
        """Write ``msg`` to the local connections it targets; return how many.

        ``ex_sid`` (a server-conn-id from the bus) excludes the connection it
        names; ``seen`` skips, and collects, the connections already reached.
        """
        namespace = msg.namespace
        event = msg.event
        room = msg.room
        check = False
        targets: tuple[ServerConn, ...] | dict[ServerConn, None]
        if msg.to:
            targets = _index_get(self._by_id, msg.to)
            check = True
        elif event == ON_NAMESPACE_CONNECT or event == ON_NAMESPACE_DISCONNECT:
            targets = self._conns
        elif room and event != ON_ROOM_JOIN and event != ON_ROOM_LEFT:
            targets = _index_get(self._by_room, (namespace, room))
        else:
            targets = _index_get(self._by_ns, namespace)
        if not targets:
            return 0
        if msg.wait != wait or msg.from_explicit:
            msg = msg.copy(wait=wait, from_explicit="")
        data = serialize(msg)
        binary = _is_binary_frame(data, msg.set_binary)
        if ex_sid and node is not None and ex_sid.startswith(node.sid_prefix):
            for conn in targets:
                if node.server_conn_id(conn) == ex_sid:
                    ex_conn = conn
                    break
        sent = 0
        for conn in targets:
            if (
                conn is ex_conn
                or conn._closed
                or conn._preack is not None
                or (ex_id is not None and conn.id == ex_id)
                or (check and not conn._writable(msg))
            ):
                continue
            if seen is not None:
                if conn in seen:
                    continue
                seen.add(conn)
            conn._send(data, binary)
            sent += 1
        return sent

    # -- server ask (PROTOCOL.md §4.7) -----------------------------------------------

    async def ask(
        self, msg: Message, *, timeout: float | None = None, to: str | None = None
    ) -> Message:
        """Send ``msg`` to its targets with a wait token; return the first answer.

        ``to=`` (or ``msg.to``) targets the connections with that ID; otherwise
        everyone connected to the namespace (and room) gets it and the first
        answer wins. Later answers are dropped.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds.
            Exception: the first answer was an error.
        """
        if to is not None:
            msg = msg.copy(to=to)
        bus = self._bus
        token = self._tokens()
        if bus is not None:
            token = bus_token(token)  # Go's shape for asks over a bus (§4.5)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._asks[token] = fut
        try:
            if bus is not None:
                await bus.watch_answers(token)
            self._deliver(msg, None, None, token)
            if bus is not None:
                bus.publish(msg, None, None, token)
            _yield_current()
            reply: Message = await _with_timeout(fut, timeout)
        finally:
            if bus is not None:
                bus.unwatch_answers(token)
            self._asks.pop(token, None)
            self._done_asks[token] = None
            if len(self._done_asks) > 1024:
                del self._done_asks[next(iter(self._done_asks))]
        if reply.err is not None:
            raise reply.err
        return reply

    def _ask_answer(self, msg: Message) -> bool:
        fut = self._asks.get(msg.wait)
        if fut is not None:
            if not fut.done():
                fut.set_result(msg)
            return True
        # A late or second answer of a finished ask is dropped (§13.2 #3).
        return msg.wait in self._done_asks


def _exclusion(exclude: Any) -> tuple[Conn | None, str | None]:
    if exclude is None:
        return None, None
    if isinstance(exclude, Conn):
        return exclude, None
    if isinstance(exclude, NSConn):
        return exclude.conn, None
    if isinstance(exclude, Room):
        return exclude.nsconn.conn, None
    if isinstance(exclude, Exclude):
        return None, exclude.id
    raise TypeError(f"cannot exclude a {type(exclude).__name__}; use neffos.exclude(id)")


def load_transport(name: str) -> Any:
    """Import ``neffos.transports.<name>``.

    Raises:
        ValueError: unknown transport name.
        ImportError: its library is missing (names the pip extra).
    """
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; choose one of {', '.join(TRANSPORTS)}")
    return importlib.import_module(f"neffos.transports.{name}")


async def serve(
    server: Server,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    path: str | None = None,
    transport: str | None = None,
    on_listen: Callable[[Listener], Any] | None = None,
    **options: Any,
) -> None:
    """Run ``server`` on ``host:port`` until cancelled, then close it.

    ``on_listen(listener)`` is called once listening (e.g. to print
    ``listener.url`` when ``port=0``).
    """
    listener = await server.listen(host, port, path=path, transport=transport, **options)
    log.info("neffos server listening on %s (%s)", listener.url, listener.transport)
    if on_listen is not None:
        on_listen(listener)
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await listener.close()
        await server.close()
