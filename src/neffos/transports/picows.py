"""The default transport: picows (a fast WebSocket library written in Cython).

The server side accepts TCP connections with :class:`neffos._http.HttpFront`
(which implements the HTTP rules of docs/topics/protocol.md#http) and hands upgrade requests
over to picows' protocol; the client side uses ``picows.ws_connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from ssl import SSLContext
from typing import TYPE_CHECKING, Any

try:
    from picows import (
        WSAutoPingStrategy,
        WSCloseCode,
        WSError,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_connect,
    )
    from picows.picows import WSProtocol  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - picows is a dependency
    raise ImportError(
        "the picows transport needs picows: pip install 'neffos' (it is a dependency)"
    ) from exc

from .._http import Request, canonical_upgrade_head, serve_front
from ..errors import DialError
from .base import Endpoint, QuietLog, Receiver, peer_of, tls_failure
from .frames import Outbox, Shared, data_frame
from .messages import Assembler, ProtocolViolation, close_reason, is_valid_close_code

if TYPE_CHECKING:
    from picows import WSFrame

NAME = "picows"


_log = QuietLog(logging.getLogger("neffos.transports.picows"), {})
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG
_CLOSE = WSMsgType.CLOSE
#: small initial read buffer: it grows on demand, and idle connections stay cheap
_READ_BUFFER = 2048


async def _quietly(disconnected: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await disconnected


class PicowsSocket(WSListener):
    """A neffos Socket on top of a picows connection (the client side: picows
    masks and writes every frame; :class:`PicowsServerSocket` batches)."""

    __slots__ = (
        "_assembler",
        "_buffered",
        "_endpoint",
        "_send",
        "_waiter",
        "_ws",
        "receiver",
        "request",
    )

    transport_name = NAME

    def __init__(
        self, request: Request | None, max_size: int, endpoint: Endpoint | None = None
    ) -> None:
        self.receiver: Receiver | None = None
        self.request = request
        self._endpoint = endpoint  # server side: accepts the socket once it is open
        self._ws: WSTransport | None = None
        self._send: Any = None
        self._buffered: Any = None
        self._assembler = Assembler(max_size)  # fragments and the data-frame rules
        self._waiter: asyncio.Task[None] | None = None  # client: takes picows' end

    # -- picows callbacks --------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._ws = transport
        # bound methods looked up once: send() is the hottest call of a server
        self._send = transport.send
        self._buffered = transport.underlying_transport.get_write_buffer_size
        if self._endpoint is not None:
            # picows keeps its own parsed copy of the handshake for the life of
            # the connection; neffos has the request already (self.request), so
            # drop picows' header maps (~700 bytes per connection).
            for message in (transport.request, transport.response):
                with contextlib.suppress(AttributeError, TypeError):
                    message.headers = None  # type: ignore[assignment]
            self._opened(transport)
            self._endpoint.accept(self)
        else:
            # picows keeps a client's protocol error for wait_disconnected();
            # neffos reports the end through socket_closed: take it there.
            self._waiter = asyncio.get_running_loop().create_task(
                _quietly(transport.wait_disconnected())
            )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        try:
            if msg_type is _TEXT or msg_type is _BINARY:
                binary = msg_type is _BINARY
                data = self._assembler.data(
                    frame.get_payload_as_bytes(), binary, frame.fin,
                    frame.rsv1 or frame.rsv2 or frame.rsv3,
                )
                receiver = self.receiver
                if data is not None and receiver is not None:
                    receiver.feed(data, binary)
            elif msg_type is _CONTINUATION:
                message = self._assembler.continuation(
                    frame.get_payload_as_bytes(), frame.fin, frame.rsv1 or frame.rsv2 or frame.rsv3
                )
                receiver = self.receiver
                if message is not None and receiver is not None:
                    receiver.feed(*message)
            elif frame.rsv1 or frame.rsv2 or frame.rsv3:  # a control frame
                raise ProtocolViolation(1002, "reserved bits set without an extension")
            elif msg_type is _PING:
                # Answered here, not by picows, so that pongs count against
                # send_buffer like everything else we write.
                self._write_queued()
                transport.send_pong(frame.get_payload_as_bytes())
                receiver = self.receiver
                if receiver is not None:
                    receiver.control_sent(self._buffered())
            elif msg_type is _PONG:
                receiver = self.receiver
                if receiver is not None:
                    receiver.alive()
            elif msg_type is _CLOSE:
                self._peer_closed(transport, frame)
        except ProtocolViolation as exc:
            _log.debug("closing: %s", exc.reason)
            self._closing_on_our_own()
            self._close_now(exc.code, exc.reason)

    def _peer_closed(self, transport: WSTransport, frame: WSFrame) -> None:
        # picows checked the reason's UTF-8 and most codes; the rest of RFC 6455 §7.4.
        code = frame.get_close_code()
        if frame.payload_size and not is_valid_close_code(code.value):
            raise ProtocolViolation(1002, f"invalid close code {code.value}")
        self._closing_on_our_own()
        if not transport.is_close_frame_sent:
            self._write_queued()
            transport.send_close(code if frame.payload_size else WSCloseCode.OK)
        transport.disconnect()

    def _closing_on_our_own(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.socket_closing()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        receiver = self.receiver
        if receiver is not None:
            self.receiver = None
            receiver.socket_closed(None)

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writing_paused()

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writing_resumed()

    # -- Socket ---------------------------------------------------------------------

    def send(self, data: bytes, binary: bool) -> int:
        self._send(_BINARY if binary else _TEXT, data)
        return self._buffered()  # type: ignore[no-any-return]

    def send_shared(self, shared: Shared) -> int:
        return self.send(shared.data, shared.binary)

    def ping(self) -> None:
        if self._ws is not None:
            self._write_queued()
            self._ws.send_ping()

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._close_now(code if is_valid_close_code(code) else 1000, reason)

    def abort(self) -> None:
        self._drop_queued()
        ws = self._ws
        if ws is not None and not ws.is_disconnected:
            ws.disconnect(graceful=False)

    def _close_now(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws is None or ws.is_disconnected:
            return
        if not ws.is_close_frame_sent:
            self._write_queued()
            ws.send_close(WSCloseCode(code), close_reason(reason))
        ws.disconnect()

    # -- the server side's batching (no-ops here) -------------------------------------

    def _opened(self, transport: WSTransport) -> None:
        pass

    def _write_queued(self) -> None:
        pass

    def _drop_queued(self) -> None:
        pass

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return peer_of(self._ws.underlying_transport if self._ws is not None else None)

    @property
    def close_code(self) -> int | None:
        handshake = self._ws.close_handshake if self._ws is not None else None
        info = None if handshake is None else handshake.recv or handshake.sent
        return None if info is None else int(info.code.value)


class PicowsServerSocket(PicowsSocket):
    """The server side: frames built by neffos (once per broadcast, see
    :mod:`neffos.transports.frames`) and written at most twice per loop turn,
    straight to the TCP transport under picows."""

    __slots__ = ("_outbox",)

    def __init__(self, request: Request, max_size: int, endpoint: Endpoint) -> None:
        super().__init__(request, max_size, endpoint)
        self._outbox: Outbox | None = None

    def _opened(self, transport: WSTransport) -> None:
        outbox = self._outbox = Outbox(transport.underlying_transport)
        self._buffered = outbox.waiting

    def send(self, data: bytes, binary: bool) -> int:
        return self._outbox.queue(data_frame(data, binary))  # type: ignore[union-attr]

    def send_shared(self, shared: Shared) -> int:
        return self._outbox.queue_shared(shared.frame)  # type: ignore[union-attr]

    def _write_queued(self) -> None:
        if self._outbox is not None:
            self._outbox.write_out()

    def _drop_queued(self) -> None:
        if self._outbox is not None:
            self._outbox.drop()


# -- server -------------------------------------------------------------------------


async def listen(endpoint: Endpoint, host: str, port: int, **options: Any) -> asyncio.Server:
    return await serve_front(endpoint, upgrade, host, port, **options)


def upgrade(
    endpoint: Endpoint, transport: asyncio.Transport, head: bytes, request: Request
) -> None:
    """Hand a TCP connection whose request head HttpFront read over to picows."""
    request.remote_address = peer_of(transport)
    max_size = endpoint.max_message_size
    sock = PicowsServerSocket(request, max_size, endpoint)
    subprotocol = endpoint.subprotocol(request)

    def factory(_upgrade_request: Any) -> Any:
        if subprotocol is None:
            return sock
        response = WSUpgradeResponse.create_101_response(
            extra_headers={"Sec-WebSocket-Protocol": subprotocol}
        )
        return WSUpgradeResponseWithListener(response, sock)

    protocol = WSProtocol(
        None,  # host:port (client only)
        None,  # path (client only)
        False,  # server side
        factory,
        _log,
        True,  # disconnect on exception
        endpoint.handshake_timeout or None,
        False,  # picows' own auto-ping: neffos runs one sweep per server instead
        20.0,
        20.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        False,  # pongs: answered in on_ws_frame, through the send-buffer check
        max_size,
        None,
        _READ_BUFFER,
    )
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    # Replay the request head that HttpFront already read and checked.
    view = memoryview(canonical_upgrade_head(head))
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


# -- client -------------------------------------------------------------------------


async def connect(
    receiver: Receiver,
    url: str,
    headers: list[tuple[str, str]],
    *,
    timeout: float | None,
    max_message_size: int,
    ssl: SSLContext | None = None,
) -> PicowsSocket:
    request = _client_request(url, headers)
    sock = PicowsSocket(request, max_message_size)
    sock.receiver = receiver
    try:
        _, listener = await ws_connect(
            lambda: sock,
            url,
            ssl_context=ssl,  # used for wss:// only; None: the default context
            extra_headers=headers,
            websocket_handshake_timeout=timeout,
            logger_name=_log,
            enable_auto_pong=False,  # answered in on_ws_frame
            max_frame_size=max_message_size,
            read_buffer_init_size=_READ_BUFFER,
            max_redirects=0,
        )
    except (TimeoutError, OSError, WSError, RuntimeError) as exc:
        raise DialError(f"cannot connect to {url}: {tls_failure(exc) or exc}") from exc
    if listener is not sock:
        # picows returns without a listener (and without an error) when the
        # server closes the connection before its answer, e.g. a TLS server
        # that got a plain-text request.
        raise DialError(f"cannot connect to {url}: connection closed during the handshake")
    return sock


def _client_request(url: str, headers: list[tuple[str, str]]) -> Request:
    from urllib.parse import urlsplit

    from .._http import Headers

    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Request("GET", target, Headers(headers))
