"""The neffos server: hooks, lifecycle, broadcast, ask, and the server side of a connection.

Where the rest lives: the handshake of a server connection in
:mod:`neffos.handshake`, the indexes and delivery in :mod:`neffos.registry`,
server asks in :mod:`neffos.asks`, listening sockets in :mod:`neffos.listener`,
the HTTP side in :mod:`neffos._http`, WebSocket libraries in
:mod:`neffos.transports`, and the bus of scale-out in :mod:`neffos.exchange`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import transports
from ._http import (
    HttpAnswer,
    Request,
    apply_url_headers,
    forwarded_client,
    has_forbidden_characters,
    plain_text,
    reconnect_tries,
    trusted_networks,
)
from .asks import ServerAsks, answer_within
from .config import Config, Tasks
from .conn import Conn, Exclude, Exclusion, NSConn, Room, exclude
from .errors import AskTimeout, NeffosError
from .handlers import ConnHandler, HandlerSpec
from .handshake import OnConnect, ServerHandshake
from .listener import Listener
from .processing import hand_off
from .protocol import Message, TokenGenerator, bus_token
from .registry import Registry, exclusion
from .stats import Counters, ServerStats, snapshot

if TYPE_CHECKING:
    from .exchange.base import StackExchange
    from .exchange.node import BusNode
    from .transports.base import Endpoint, Socket

__all__ = ["Exclude", "Server", "ServerConn", "UpgradeError", "exclude", "serve"]

log = logging.getLogger("neffos.server")

OnDisconnect = Callable[[Conn], Any]
#: ``fn(request) -> (status, headers, body)`` or ``None`` (404): plain HTTP
#: answers for paths other than the endpoint's, on the same port
Pages = Callable[[Request], "HttpAnswer | None"]


class UpgradeError(NeffosError):
    """An HTTP request on the endpoint was answered without upgrading it.

    Passed to ``Server.on_upgrade_error``. ``status`` is the HTTP status sent.
    A ``before_upgrade`` hook raises one to refuse a request with ``status``,
    ``text`` as the body and extra ``headers`` (e.g. ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        text: str,
        request: Request | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.request = request
        self.headers = headers or []

    @property
    def is_trying_to_reconnect(self) -> bool:
        """True for the ``HEAD`` probe of a reconnecting neffos.js client (Go's
        ``IsTryingToReconnect``)."""
        return self.request is not None and self.request.method == "HEAD"


def _default_id(request: Request) -> str:
    return str(uuid.uuid4())


class ServerConn(ServerHandshake):
    """A server-side connection."""

    __slots__ = ("_server",)

    def __init__(self, server: Server, socket: Socket, conn_id: str) -> None:
        super().__init__(
            socket, server.handler, server._cfg, server._tasks, server._tokens, conn_id
        )
        self._server = server

    @property
    def server(self) -> Server:
        return self._server

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port); behind a trusted proxy, the client's (see
        ``Server(trusted_proxies=)``), with port 0 when the proxy does not say it."""
        request = self.socket.request
        if self._server._trusted_proxies and request is not None:
            settled = request.remote_address  # by Server._accept
            if settled is not None:
                return settled
        return self.socket.remote_address

    def _open(self) -> None:
        self._begin_handshake(self._server.on_connect)

    # -- what the server counts about its connections (the rest is counted inline) --

    def _close(self, code: int, reason: str, abort: bool) -> None:
        if not self._closed:
            self._cfg.stats.closed(code)
        super()._close(code, reason, abort)

    def socket_closed(self, exc: BaseException | None) -> None:
        if not self._closed:  # the peer's (or the transport's) close code; none: 1006
            self._cfg.stats.closed(self.socket.close_code or 1006)
        super().socket_closed(exc)

    def _overflowed(self, pending: int) -> None:
        self._cfg.stats.send_buffer_drops += 1
        super()._overflowed(pending)

    # -- answers: asks of this connection, then the server's and the bus's -----------

    def _may_be_answer(self, wait: str) -> bool:
        # "$..." tokens are the client's own asks (docs/topics/protocol.md#tokens)
        return wait[0] != "$"

    def _resolve_other_answer(self, msg: Message) -> bool:
        server = self._server
        if server._asks.resolve(msg):
            return True
        bus = server._bus
        return bus is not None and bus.answer_forwarded(msg, self)

    # -- the server's indexes ------------------------------------------------------------

    def _ns_added(self, ns: NSConn) -> None:
        self._cfg.stats.namespace_connects += 1
        self._server._registry.namespace_added(self, ns.namespace)

    def _ns_removed(self, ns: NSConn) -> None:
        self._server._registry.namespace_removed(self, ns.namespace)

    def _room_added(self, ns: NSConn, room: Room) -> None:
        self._cfg.stats.room_joins += 1
        self._server._registry.room_added(self, ns.namespace, room.name)

    def _room_removed(self, ns: NSConn, room: Room) -> None:
        self._server._registry.room_removed(self, ns.namespace, room.name)

    async def _after_close(self) -> None:
        server = self._server
        server._registry.remove(self)
        for ns in list(self._namespaces.values()):  # normally gone already
            self._remove_namespace(ns)
        if self._accepted or server.fire_disconnect_always:
            hook = server.on_disconnect
            if hook is not None:
                try:
                    result = hook(self)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("[%s] on_disconnect failed", self.id)


class _PathEndpoint:
    """The server's endpoint on one URL path (what transports serve)."""

    __slots__ = ("_pages", "_server", "path")

    def __init__(self, server: Server, path: str | None, pages: Pages | None = None) -> None:
        self._server = server
        self.path = path
        self._pages = pages

    @property
    def handshake_timeout(self) -> float:
        return self._server._cfg.handshake_timeout or 0.0

    @property
    def max_message_size(self) -> int:
        return self._server._cfg.max_message_size

    @property
    def close_timeout(self) -> float:
        return self._server._cfg.close_timeout

    def route(self, request: Request) -> HttpAnswer | None:
        pages = self._pages
        if pages is not None and self.path is not None and request.path != self.path:
            try:
                answer = pages(request)
            except Exception:
                log.exception("pages failed on %r", request)
                return plain_text(500, "Internal Server Error")
            if answer is not None:
                return answer
        return self._server._route(request, self.path)

    def subprotocol(self, request: Request) -> str | None:
        return self._server._subprotocol(request)

    def accept(self, socket: Socket) -> None:
        self._server._accept(socket)


class Server:
    """A neffos server.

    Args:
        handler: the connection handler (see :mod:`neffos.handlers`).
        on_connect: ``fn(conn)`` (plain or async) called for every new
            connection before it is acknowledged; raising or returning an
            exception refuses it (the client's ``dial`` fails with that text).
        on_disconnect: ``fn(conn)`` called after a connection closed, if it had
            been accepted (or always, with ``fire_disconnect_always``).
        before_upgrade: ``fn(request)`` called for every WebSocket request
            that passed the HTTP rules, before the upgrade (a plain function:
            it runs while the request head is being answered). Raise
            :class:`UpgradeError` to refuse the request with its status, e.g.
            ``raise UpgradeError(401, "Unauthorized")``; what it stores on
            ``request`` (e.g. ``request.state["user"]``) is there for the
            connection's handlers.
        subprotocols: WebSocket subprotocols the server speaks, in order of
            preference: the first that the client offers in
            ``Sec-WebSocket-Protocol`` is selected (browsers fail a connection
            that offers protocols and gets none).
        on_upgrade_error: ``fn(UpgradeError)`` called for every request the
            server's HTTP rules answer without an upgrade: ``HEAD`` probes
            (302), other methods (405), other paths (404), ``500`` after
            :meth:`close`, ``403`` for an origin not allowed, ``400`` for a
            bad URL header. (Requests that are not valid HTTP or not a valid
            WebSocket handshake are answered 4xx before routing, without it.)
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
        max_queued_bytes: bytes of those frames allowed to queue (default
            1 MiB); past it the connection is closed.
        max_rooms: rooms one connection may be in, all its namespaces together
            (default 1024); a join past it is refused with
            :class:`~neffos.LimitExceeded`.
        max_room_name_length: the longest room name a join may use, in
            characters (default 256); longer ones are refused the same way.
        handshake_timeout: seconds from TCP accept to the neffos handshake
            (default 10).
        close_timeout: seconds a closing connection may take to flush what it
            was sending (its close frame last) before the TCP connection is
            dropped (default 5). A peer closed for not reading is dropped at
            once.
        ping_interval: seconds between heartbeat sweeps (default 20; ``None``
            disables). A peer silent for a whole interval gets a ping; one that
            stays silent for the next interval too is closed.
        allowed_origins: if set, browsers from other origins get ``403``.
        transport: the WebSocket library used by :meth:`listen`: ``"picows"``
            (default, fastest), ``"websockets"`` or ``"aiohttp"``.
        trusted_proxies: addresses or networks of reverse proxies (e.g.
            ``["127.0.0.1", "10.0.0.0/8"]``; default none). When a connection
            comes from one, ``conn.remote_address`` and
            ``request.remote_address`` are the client's: the right-most
            ``X-Forwarded-For`` address that is not a trusted proxy, else
            ``X-Real-IP``, with port 0. The headers of other peers are never
            read. ``before_upgrade`` still sees the proxy's address.

    Raises:
        ValueError: an entry of ``trusted_proxies`` is not an address or network.
    """

    def __init__(
        self,
        handler: HandlerSpec,
        *,
        on_connect: OnConnect | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_upgrade_error: Callable[[UpgradeError], Any] | None = None,
        before_upgrade: Callable[[Request], Any] | None = None,
        subprotocols: Iterable[str] | None = None,
        id_generator: Callable[[Request], str] | None = None,
        fire_disconnect_always: bool = False,
        max_message_size: int = 1 << 20,
        send_buffer: int = 1 << 20,
        max_pending_asks: int = 1024,
        max_queued_frames: int = 4096,
        max_queued_bytes: int = 1 << 20,
        max_rooms: int = 1024,
        max_room_name_length: int = 256,
        handshake_timeout: float = 10.0,
        close_timeout: float = 5.0,
        ping_interval: float | None = 20.0,
        allowed_origins: Iterable[str] | None = None,
        transport: str = transports.DEFAULT,
        trusted_proxies: str | Iterable[str] | None = None,
    ) -> None:
        self.handler = ConnHandler.compile(handler)
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_upgrade_error = on_upgrade_error
        self.before_upgrade = before_upgrade
        self.subprotocols = tuple(subprotocols or ())
        self.id_generator: Callable[[Request], str] = id_generator or _default_id
        self.fire_disconnect_always = fire_disconnect_always
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.transport = transport
        # the networks whose X-Forwarded-For / X-Real-IP are believed (empty: none)
        self._trusted_proxies = trusted_networks(trusted_proxies or ())
        self._stats = Counters()  # what the server and its connections count (stats)
        self._cfg = Config(
            log=log,
            send_buffer=send_buffer,
            max_pending_asks=max_pending_asks,
            max_message_size=max_message_size,
            handshake_timeout=handshake_timeout,
            ping_interval=ping_interval,
            max_queued_frames=max_queued_frames,
            max_queued_bytes=max_queued_bytes,
            max_rooms=max_rooms,
            max_room_name_length=max_room_name_length,
            close_timeout=close_timeout,
            stats=self._stats,
        )
        self._tasks = Tasks()  # every task of the server and its connections
        self._tokens = TokenGenerator()  # wait tokens of server asks
        self._registry = Registry(self._stats)  # connections and their indexes
        self._asks = ServerAsks()  # pending Server.ask calls
        self._listeners: list[Listener] = []
        self._sweeper: asyncio.Task[None] | None = None  # the heartbeat sweep
        self._exchanges: list[StackExchange] = []  # use_stack_exchange()
        self._bus: BusNode | None = None  # made from the exchanges by start()
        self._closed = False
        self._starting = asyncio.Lock()

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

    @property
    def bus_node(self) -> BusNode | None:
        """The node that connects this server to its exchanges, once started."""
        return self._bus

    async def start(self) -> None:
        """Start the heartbeat sweep and connect the stack exchanges (idempotent).

        ``listen``, ``async with server`` and the ASGI and aiohttp adapters call
        it; concurrent calls start the server once.

        Raises:
            Exception: a stack exchange could not connect to its broker.
        """
        async with self._starting:
            await self._start()

    async def _start(self) -> None:
        if self._exchanges and self._bus is None and not self._closed:
            from .exchange.node import BusNode

            registry = self._registry
            bus = BusNode(
                self._exchanges, local=registry, answers=self._asks, handler=self.handler
            )
            await bus.start()
            self._bus = bus
            registry.interest = bus
            for conn in registry:  # connections accepted before the bus started
                bus.add_id(conn.id)
                for name in conn.namespaces:
                    bus.add_namespace(name)
        interval = self._cfg.ping_interval
        if self._sweeper is None and interval and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(interval))

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for conn in list(self._registry):
                if conn.is_acknowledged and not conn.is_closed:
                    conn.heartbeat()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for listener in list(self._listeners):
            await listener.close()
        await self.close()

    def endpoint(self, path: str | None = None, pages: Pages | None = None) -> Endpoint:
        """The server's endpoint on the URL ``path`` (``None``: any path).

        ``pages`` answers plain HTTP requests for other paths (see :meth:`listen`).

        This is what transports serve: it applies the HTTP rules and accepts
        WebSockets. :meth:`listen` uses it; so do :mod:`neffos.testing` and
        adapters that plug a server into another HTTP server.
        """
        return _PathEndpoint(self, path, pages)

    async def listen(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str | None = None,
        transport: str | None = None,
        pages: Pages | None = None,
        **options: Any,
    ) -> Listener:
        """Listen on ``host:port`` (``port=0`` picks a free port).

        ``path`` restricts the WebSocket endpoint to one URL path (others get
        404). ``pages``, with a ``path``, answers requests for other paths:
        ``pages(request)`` returns ``(status, headers, body)``, or ``None`` for
        the 404 (a plain function, called as the request head is read: serve
        what is in memory, e.g. a chat page next to its endpoint). Extra
        options (``ssl=``, ``reuse_port=``, ``backlog=``) go to
        ``loop.create_server``.

        Raises:
            ImportError: the transport's library is not installed (the message
                names the pip extra).
        """
        name = transport or self.transport
        module = transports.load(name)
        await self.start()
        endpoint = self.endpoint(path, pages)
        aio_server = await module.listen(endpoint, host, port, **options)
        listener = Listener(
            endpoint, name, aio_server, self._listeners.remove, self,
            tls=options.get("ssl") is not None,
        )
        self._listeners.append(listener)
        return listener

    async def close(self, drain: float = 0.0) -> None:
        """Close every connection with 1001 (going away); afterwards the endpoint
        answers 500 (like Go).

        In order: no new connection is accepted; with ``drain``, handlers that
        are running get up to ``drain`` seconds to finish, so that their replies
        and broadcasts go out; every connection is closed (what it was sending
        is flushed before its close frame); pending ``ask`` calls fail; the bus
        closes last. Listeners keep running (use ``async with server`` or close
        them) so that reconnecting neffos.js clients get an answer and stop.
        """
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if drain > 0:
            await self._tasks.wait(drain)
        conns = list(self._registry)
        for conn in conns:
            conn.close(1001, "server closing")
        if conns:
            await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        self._asks.fail_all("server closed")
        await self._tasks.drain(timeout=5)
        if self._bus is not None:
            await self._bus.close()

    # -- HTTP side (docs/topics/protocol.md#http) -------------------------------------

    def _route(self, request: Request, path: str | None) -> HttpAnswer | None:
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
        try:
            apply_url_headers(request)
        except ValueError as exc:
            return self._refuse(request, *plain_text(400, f"Bad Request: {exc}"))
        if self.allowed_origins is not None:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in self.allowed_origins:
                return self._refuse(request, *plain_text(403, "Forbidden: origin not allowed"))
        check = self.before_upgrade
        if check is not None:
            try:
                check(request)
            except UpgradeError as refusal:
                return self._refuse(
                    request, *plain_text(refusal.status, refusal.text, refusal.headers)
                )
            except Exception:
                log.exception("before_upgrade failed")
                return self._refuse(request, *plain_text(500, "Internal Server Error"))
        return None

    def _subprotocol(self, request: Request) -> str | None:
        if not self.subprotocols:
            return None
        offered = {
            part.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for part in value.split(",")
        }
        for name in self.subprotocols:
            if name in offered:
                return name
        return None

    def _refuse(
        self, request: Request, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> HttpAnswer:
        self._stats.refused(status)
        hook = self.on_upgrade_error
        if hook is not None:
            try:
                result = hook(UpgradeError(status, body.decode().strip(), request))
                if inspect.isawaitable(result):
                    self._tasks.spawn(_awaited(result))
            except Exception:
                log.exception("on_upgrade_error failed")
        return status, headers, body

    def _accept(self, socket: Socket) -> None:
        """A transport opened a WebSocket on this server's endpoint."""
        request = socket.request
        assert request is not None
        if self._closed:
            socket.close(1001, "server closing")
            return
        if self._trusted_proxies:  # once per connection, before id_generator reads it
            client = forwarded_client(request, self._trusted_proxies)
            if client is not None:
                request.remote_address = client
        try:
            conn_id = str(self.id_generator(request))
        except Exception:
            log.exception("id_generator failed")
            socket.close(1011, "internal error")
            return
        if not conn_id or has_forbidden_characters(conn_id):
            # IDs travel in frames, bus channels and log lines (often from a header).
            log.warning("refusing a connection: id_generator returned %r", conn_id)
            socket.close(1008, "invalid connection id")
            return
        conn = ServerConn(self, socket, conn_id)
        self._stats.connections_accepted += 1
        conn.reconnect_tries = reconnect_tries(request)
        self._registry.add(conn)
        conn._open()

    # -- queries -------------------------------------------------------------------

    def get_total_connections(self) -> int:
        """The number of open connections on this server."""
        return len(self._registry)

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the server's numbers: connections, namespaces, rooms,
        messages, asks, errors, closes, slow consumers and its bus (counted since
        the server was made; see :mod:`neffos.metrics` for Prometheus)."""
        registry = self._registry
        connected = registry.namespace_sizes()
        namespaces = {name: connected.get(name, 0) for name in self.handler.namespaces}
        return snapshot(
            self._stats, len(registry), namespaces, registry.room_sizes(), list(self._exchanges)
        )

    def get_connections(self) -> list[Conn]:
        """A snapshot of the open connections."""
        return list(self._registry)

    def get_connections_by_namespace(self, namespace: str) -> list[NSConn]:
        """A snapshot of the connections connected to ``namespace``."""
        return [
            ns
            for conn in self._registry.in_namespace(namespace)
            if (ns := conn.namespace(namespace)) is not None
        ]

    def get_connections_by_id(self, conn_id: str) -> list[Conn]:
        """Every open connection with this ID."""
        return list(self._registry.with_id(conn_id))

    async def do(self, fn: Callable[[Conn], Any]) -> None:
        """Call ``fn(conn)`` for every connection (awaiting it when it is async)."""
        pending = []
        for conn in list(self._registry):
            result = fn(conn)
            if inspect.isawaitable(result):
                pending.append(result)
        if pending:
            await asyncio.gather(*pending)

    # -- broadcast (docs/topics/protocol.md#broadcast) --------------------------------

    def broadcast(self, exclude: Exclusion, *messages: Message) -> None:
        """Send messages to every connection they target.

        A message goes to the connections connected to ``msg.namespace``; with
        ``msg.room`` only to those in the room; with ``msg.to`` only to the
        connections with that ID. ``exclude`` skips a sender: a ``Conn``,
        ``NSConn`` or ``Room`` (that connection), :func:`exclude` (every
        connection with an ID), or ``None``.

        Delivery never waits for a slow client, each message is encoded once,
        and a message filtered out for a connection never hides the next ones
        (unlike Go, docs/topics/protocol.md#broadcast).
        """
        ex_conn, ex_id = exclusion(exclude)
        write = self._registry.write_to_targets
        bus = self._bus
        # Another node can only be told to skip a connection of this server
        # (even one that closed already: its server-conn-id is still ours).
        ours = ex_conn if ex_conn is not None and ex_conn.server is self else None
        for msg in messages:
            write(msg, ex_conn, ex_id, "")
            if bus is not None:
                bus.publish(msg, ours, ex_id, "")

    # -- server ask (docs/topics/protocol.md#asks) ------------------------------------

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
            # Go's shape for asks over a bus (docs/topics/protocol.md#bus-asks)
            token = bus_token(token)
        fut = self._asks.open(token)
        stats = self._stats
        stats.asks_sent += 1
        started = asyncio.get_running_loop().time()
        try:
            if bus is not None:
                await bus.watch_answers(token)
            self._registry.write_to_targets(msg, None, None, token)
            if bus is not None:
                bus.publish(msg, None, None, token)
            hand_off()
            reply: Message = await answer_within(fut, timeout)
            stats.answered(asyncio.get_running_loop().time() - started)
        except AskTimeout:
            stats.ask_timeouts += 1
            raise
        finally:
            if bus is not None:
                bus.unwatch_answers(token)
            self._asks.finish(token)
        if reply.err is not None:
            raise reply.err
        return reply


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable


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
