"""The neffos client: :func:`dial`, the client connection and its reconnect policy."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import urlsplit

from . import transports
from ._http import RECONNECT_HEADER, Request
from .config import Config, Tasks
from .conn import NSConn
from .dispatch import Dispatcher
from .errors import ConnectionClosed, DialError, HandshakeRefused, NeffosError
from .handlers import ConnHandler, HandlerSpec
from .protocol import ACK_HELLO, TokenGenerator, parse_ack
from .transports import Connector
from .transports.base import Receiver
from .transports.frames import Shared

__all__ = ["ClientConn", "Connector", "Dialing", "Reconnect", "dial"]

log = logging.getLogger("neffos.client")


@dataclass(frozen=True)
class Reconnect:
    """How a client reconnects after losing its connection.

    Delays grow from ``initial_delay`` by ``factor`` up to ``max_delay``
    seconds, each randomised by ``±jitter`` (a fraction). ``max_tries=None``
    retries forever. After reconnecting, the client connects again to the
    namespaces and joins again the rooms it had, and the server sees
    ``X-Websocket-Reconnect: <tries>`` (``conn.reconnect_tries`` there).
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    max_tries: int | None = None

    def delay(self, attempt: int) -> float:
        """The delay before attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.factor ** max(attempt - 1, 0))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


class _Offline:
    """The socket of a client connection that is not connected right now."""

    receiver: Receiver | None = None
    request: Request | None = None
    transport_name = "offline"

    def send(self, data: bytes, binary: bool) -> int:
        raise ConnectionClosed()

    def send_shared(self, shared: Shared) -> int:
        raise ConnectionClosed()

    def ping(self) -> None:
        pass

    def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def abort(self) -> None:
        pass

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return None

    close_code: int | None = None


class ClientConn(Dispatcher):
    """A client connection (returned by :func:`dial`)."""

    __slots__ = (
        "_ack_future",
        "_acked",
        "_connector",
        "_dial_timeout",
        "_headers",
        "_lost_in_open",
        "_online",
        "_reconnect",
        "_reconnect_task",
        "_ssl",
        "_sweeper",
        "_targets",
        "url",
    )

    is_client = True

    def __init__(
        self,
        url: str,
        handler: ConnHandler,
        cfg: Config,
        connector: Connector,
        headers: list[tuple[str, str]],
        dial_timeout: float | None,
        reconnect: Reconnect | None,
        ssl: SSLContext | None = None,
    ) -> None:
        super().__init__(_Offline(), handler, cfg, Tasks(), TokenGenerator("$"))
        #: the server's URL
        self.url = url
        self._acked = False  # "A" received on the current socket
        self._lost_in_open: DialError | None = None  # the socket died while opening
        self._connector = connector
        self._headers = headers
        self._dial_timeout = dial_timeout
        self._reconnect = reconnect
        self._ssl = ssl  # the TLS context of every attempt (reconnections too)
        self._online = False
        self._ack_future: asyncio.Future[str] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: namespaces (and their rooms) to connect again after a reconnection
        self._targets: dict[str, tuple[NSConn, set[str]]] | None = None

    @property
    def is_acknowledged(self) -> bool:
        return self._acked

    @property
    def is_connected(self) -> bool:
        """True while the WebSocket is up and acknowledged (False while reconnecting)."""
        return self._online and self._acked and not self._closed

    async def __aenter__(self) -> ClientConn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- connecting --------------------------------------------------------------

    async def _open(self, tries: int) -> None:
        """One attempt: open the WebSocket and complete the neffos handshake."""
        headers = [(k, v) for k, v in self._headers if k.lower() != RECONNECT_HEADER.lower()]
        if tries:
            headers.append((RECONNECT_HEADER, str(tries)))
        timeout = self._dial_timeout
        native = self.handler.only_native
        # Frames can arrive as soon as the WebSocket is open, even before
        # connect() returns: queue them until "A" (native: until it returned).
        self._preack = []
        fut: asyncio.Future[str] = self._loop.create_future()
        self._ack_future = fut
        self._lost_in_open = None
        try:
            async with asyncio.timeout(timeout):
                sock = await self._connector.connect(
                    self, self.url, headers, timeout=timeout,
                    max_message_size=self._cfg.max_message_size, ssl=self._ssl,
                )
                said_and_left = native and self._lost_in_open is not None and bool(self._preack)
                if self._lost_in_open is not None and not said_and_left:
                    raise self._lost_in_open  # closed before connect() returned
                self.socket = sock
                sock.receiver = self
                self.reconnect_tries = tries
                self._online = True
                if native:
                    self._acked = True
                    if "" not in self._namespaces:
                        self._add_namespace(NSConn(self, "", self.handler.namespaces[""]))
                    for data, binary in self._take_early():
                        self.feed(data, binary)
                else:
                    try:
                        sock.send(ACK_HELLO, False)  # the one frame before the handshake
                    except Exception as exc:
                        raise DialError(f"connection closed during the handshake ({exc!r})")
                    self.id = await fut
                    if self._lost_in_open is not None:  # "A", then the end at once
                        raise self._lost_in_open
        except TimeoutError as exc:
            self._abandon_socket()
            raise DialError(f"no handshake from {self.url} within {timeout}s") from exc
        except BaseException:
            self._abandon_socket()
            raise
        finally:
            self._ack_future = None
        if native and self._lost_in_open is not None:
            # A plain WebSocket peer may send its messages and close at once
            # (before connect() returned): they were delivered above; now the end.
            self.socket_closed(None)
            return
        self._start_timeouts()
        interval = self._cfg.ping_interval
        if interval and self._sweeper is None:
            self._sweeper = self._loop.create_task(self._sweep(interval))

    async def _first_open(self) -> None:
        """The dial: one attempt; a connection that never opened is closed for good."""
        try:
            await self._open(0)
        except BaseException:
            self._closed = True
            raise

    def _abandon_socket(self) -> None:
        sock = self.socket
        self._online = False
        self._take_early()
        self.socket = _Offline()
        sock.receiver = None
        sock.close(1000, "")

    def _feed_preack(self, data: bytes, binary: bool) -> None:
        fut = self._ack_future
        if self.handler.only_native:  # no "A" to wait for: only connect() to return
            if not self._keep_early(data, binary) and fut is not None and not fut.done():
                fut.set_exception(DialError("too many frames before the connection was up"))
            return
        ack = None if binary else parse_ack(data)
        if ack is not None and ack[0] == "A":
            queued = self._take_early()
            self._acked = True
            if fut is not None and not fut.done():
                fut.set_result(ack[1])
            for frame, is_binary in queued:  # frames that overtook the ack
                self.feed(frame, is_binary)
        elif ack is not None and ack[0] == "H":
            if fut is not None and not fut.done():
                fut.set_exception(HandshakeRefused(ack[1]))
        elif not self._keep_early(data, binary) and fut is not None and not fut.done():
            fut.set_exception(DialError("too many frames before the acknowledgement"))

    async def _sweep(self, interval: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            if self._online and self._acked:
                self.heartbeat()

    def write_encoded(self, data: bytes, binary: bool) -> bool:
        if not self._online:
            return False
        return super().write_encoded(data, binary)

    # -- losing the connection -----------------------------------------------------

    def socket_closed(self, exc: BaseException | None) -> None:
        fut = self._ack_future
        if fut is not None:
            # Still opening (maybe still inside the transport's connect): this
            # attempt failed, whether or not "A" came first.
            lost = self._lost_in_open = DialError(
                f"connection closed during the handshake ({exc!r})"
            )
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()  # the dial may have failed already: not "never retrieved"
            return
        if self._closed or not self._online:
            return
        if self._reconnect is None or not self._acked:
            super().socket_closed(exc)
            return
        # Lost, but we will try again: the same forced events as a close, then
        # reconnect in the background and restore namespaces and rooms.
        log.info("[%s] connection lost; reconnecting", self.id)
        self._online = False
        self._acked = False
        self.socket = _Offline()
        # What to restore: what is connected now, plus what an interrupted
        # restoration had not finished yet.
        targets = {ns.namespace: (ns, set(ns.rooms)) for ns in self._namespaces.values()}
        for name, (ns, rooms) in (self._targets or {}).items():
            targets.setdefault(name, (ns, set()))[1].update(rooms)
        self._targets = targets
        self._abort_pending()
        old = self._reconnect_task
        if old is not None:
            old.cancel()
        self._reconnect_task = self._loop.create_task(self._reconnect_loop())

    def _fail(self, code: int, reason: str, *, abort: bool = False) -> None:
        # A dead peer or a timeout is a lost connection: reconnect if allowed.
        if self._reconnect is not None and self._acked and self._online and not self._closed:
            log.info("[%s] closing the connection (%s)", self.id, reason)
            sock = self.socket
            sock.receiver = None
            self._close_socket(sock, code, reason, abort)
            self.socket_closed(None)
            return
        super()._fail(code, reason, abort=abort)

    async def _reconnect_loop(self) -> None:
        policy = self._reconnect
        assert policy is not None
        me = asyncio.current_task()
        gave_up = False
        try:
            await self._force_disconnect_all()
            tries = 0
            while not self._closed:
                tries += 1
                if policy.max_tries is not None and tries > policy.max_tries:
                    log.warning("[%s] giving up after %d reconnection attempts", self.id, tries - 1)
                    gave_up = True
                    break
                await asyncio.sleep(policy.delay(tries))
                if self._closed:
                    return
                try:
                    await self._open(tries)
                except (DialError, OSError) as exc:
                    log.info("[%s] reconnection attempt %d failed: %s", self.id, tries, exc)
                    continue
                log.info("[%s] reconnected after %d attempt(s)", self.id, tries)
                await self._restore()
                return
        except ConnectionClosed:
            return  # lost again while restoring: a new loop took over
        except Exception:
            log.exception("[%s] reconnection failed", self.id)
            gave_up = True
        finally:
            if self._reconnect_task is me:
                self._reconnect_task = None
        if gave_up and not self._closed and not self._online:
            self._closed = True
            self._targets = None
            await self._close_sequence()

    async def _restore(self) -> None:
        targets = self._targets
        while targets:
            name, (ns, rooms) = next(iter(targets.items()))
            try:
                restored = await self._connect_nsconn(ns, timeout=self._dial_timeout)
                for room in sorted(rooms):
                    await restored.join_room(room, timeout=self._dial_timeout)
            except ConnectionClosed:
                raise  # the targets stay for the next attempt
            except (NeffosError, OSError) as exc:
                log.warning("[%s] could not restore namespace %r: %s", self.id, name, exc)
            del targets[name]
        if self._targets is targets:
            self._targets = None

    async def _connect_nsconn(self, ns: NSConn, timeout: float | None) -> NSConn:
        """Connect again a namespace connection object kept across a reconnection."""
        existing = self._namespaces.get(ns.namespace)
        if existing is not None:
            return existing
        ns.rooms.clear()
        return await self._connect_with(ns, timeout)

    def close(self, code: int = 1000, reason: str = "") -> None:
        task = self._reconnect_task
        if task is not None and not self._closed:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if not self._online and not self._closed:
            # Offline (between reconnection attempts): nothing to send.
            self._closed = True
            self._abort_pending()
            self._loop.call_soon(self._begin_close_sequence)
            return
        super().close(code, reason)


class Dialing:
    """What :func:`dial` returns: await it, or use it as ``async with dial(...) as conn``."""

    __slots__ = ("_conn", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, ClientConn]) -> None:
        self._coro = coro
        self._conn: ClientConn | None = None

    def __await__(self) -> Generator[Any, None, ClientConn]:
        return self._coro.__await__()

    async def __aenter__(self) -> ClientConn:
        self._conn = await self._coro
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            await self._conn.aclose()


def dial(
    url: str,
    handler: HandlerSpec,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    timeout: float | None = 10.0,
    reconnect: Reconnect | bool | None = None,
    transport: str | Connector = transports.DEFAULT,
    max_message_size: int = 1 << 20,
    send_buffer: int = 1 << 20,
    max_pending_asks: int = 1024,
    max_queued_frames: int = 4096,
    max_queued_bytes: int = 1 << 20,
    max_rooms: int = 1024,
    max_room_name_length: int = 256,
    close_timeout: float = 5.0,
    ping_interval: float | None = 20.0,
    ssl: SSLContext | None = None,
) -> Dialing:
    """Connect to a neffos server and complete the handshake.

    Args:
        url: ``ws://`` or ``wss://`` endpoint.
        handler: the connection handler (namespaces and events this client knows).
        headers: extra HTTP headers for the handshake (e.g. ``X-Username``).
        timeout: seconds for the WebSocket handshake plus the neffos
            acknowledgement (``None``: wait forever).
        reconnect: ``True`` or a :class:`Reconnect` policy to reconnect after
            the connection is lost (not after :meth:`~Conn.close`).
        transport: ``"picows"`` (default), ``"websockets"``, ``"aiohttp"``, or a
            connector such as :func:`neffos.testing.memory_transport`.
        max_message_size: the largest message accepted from the server, in
            bytes. This and the limits below are those of
            :class:`~neffos.Server`; here they bound what the server can make
            this client hold.
        send_buffer: bytes allowed to wait to be sent to the server.
        max_pending_asks: unanswered asks allowed at once.
        max_queued_frames: frames allowed to wait behind a busy handler or
            before the handshake.
        max_queued_bytes: the bytes of those frames.
        max_rooms: rooms this client may be in (all namespaces together).
        max_room_name_length: the longest room name accepted, in characters.
        close_timeout: seconds a closing connection may take to flush.
        ping_interval: seconds between heartbeat sweeps (``None``: no pings).
        ssl: the TLS context for a ``wss://`` URL, e.g. one that trusts a
            private CA (``ssl.create_default_context(cafile=...)``); ``None``:
            the default context (the system's CAs). Reconnections use it too.

    Returns:
        an awaitable of the client connection, also usable as
        ``async with dial(...) as conn`` (closed on exit).

    Raises:
        HandshakeRefused: the server's ``on_connect`` refused (its text).
        DialError: the connection could not be opened (the server's TLS
            certificate did not verify, among others) or no acknowledgement
            arrived in time.
        ValueError: ``ssl`` with a ``ws://`` URL (use ``wss://`` for TLS).
        TypeError: ``ssl`` is not an ``SSLContext`` (e.g. ``False``: to skip
            certificate checks, pass a context with ``verify_mode = CERT_NONE``).
    """
    if ssl is not None and not isinstance(ssl, SSLContext):
        raise TypeError(f"ssl must be an ssl.SSLContext or None, not {ssl!r}")
    if ssl is not None and urlsplit(url).scheme.lower() == "ws":
        # Silently talking plain text when TLS was asked for would be worse.
        raise ValueError("ssl= was given for a ws:// URL; use wss:// to enable TLS")
    cfg = Config(
        log=log,
        send_buffer=send_buffer,
        max_pending_asks=max_pending_asks,
        max_message_size=max_message_size,
        handshake_timeout=timeout,
        ping_interval=ping_interval,
        max_queued_frames=max_queued_frames,
        max_queued_bytes=max_queued_bytes,
        max_rooms=max_rooms,
        max_room_name_length=max_room_name_length,
        close_timeout=close_timeout,
    )
    return Dialing(_dial(url, handler, headers, timeout, reconnect, transport, cfg, ssl))


async def _dial(
    url: str,
    handler: HandlerSpec,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
    timeout: float | None,
    reconnect: Reconnect | bool | None,
    transport: str | Connector,
    cfg: Config,
    ssl: SSLContext | None,
) -> ClientConn:
    compiled = ConnHandler.compile(handler)
    connector = transports.load(transport) if isinstance(transport, str) else transport
    header_list = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    policy = Reconnect() if reconnect is True else (reconnect or None)
    conn = ClientConn(url, compiled, cfg, connector, header_list, timeout, policy, ssl)
    await conn._first_open()
    return conn
