"""The aiohttp transport: aiohttp's WebSocket server and client behind the Socket API.

On the server side :class:`neffos._http.HttpFront` reads and checks the request
head like on every transport (HTTP rules, handshake deadline), then hands the
TCP connection to an aiohttp request handler that upgrades it. aiohttp needs a
reading task per connection (its design). Writes stay synchronous: an
uncompressed frame is written to the transport before ``send_frame`` ever
awaits; when aiohttp then wants to wait for the transport to drain, that wait
finishes in a task of its own, and neffos enforces its own send-buffer limit.
"""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext
from typing import Any

try:
    import aiohttp
    from aiohttp import WSMsgType, web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the aiohttp transport needs aiohttp: pip install 'neffos[aiohttp]'"
    ) from exc

from .._http import Headers, Request, serve_front
from ..errors import DialError
from .base import Endpoint, QuietLog, Receiver, peer_of, tls_failure
from .frames import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, Outbox, Shared, data_frame, encode
from .messages import FRAGMENT_COST, close_reason, is_valid_close_code, is_valid_utf8

NAME = "aiohttp"

_log = QuietLog(logging.getLogger("neffos.transports.aiohttp"), {})
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_ENDED = frozenset({WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})
_OP_TEXT, _OP_BINARY, _OP_PING, _OP_PONG = OP_TEXT, OP_BINARY, OP_PING, OP_PONG


class AiohttpSocket:
    """A neffos Socket on top of an aiohttp WebSocket response."""

    __slots__ = (
        "_closing",
        "_masked",
        "_reader",
        "_session",
        "_transport",
        "_ws",
        "close_code",
        "receiver",
        "request",
    )

    transport_name = NAME

    def __init__(
        self,
        ws: Any,
        request: Request,
        transport: asyncio.BaseTransport | None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.receiver: Receiver | None = None
        self.request: Request | None = request
        self._reader: asyncio.Task[None] | None = None  # client side: the reading task
        self._ws = ws
        self._transport: Any = transport  # to read the size of its write buffer
        self._session = session
        self._closing: asyncio.Task[Any] | None = None
        self._masked = session is not None  # a client masks its frames
        #: how the connection ended (see transports.base.Socket)
        self.close_code: int | None = None

    async def read_loop(self) -> None:
        ws = self._ws
        try:
            while True:
                msg = await ws.receive()
                receiver = self.receiver
                kind = msg.type
                if receiver is None:
                    break
                if kind in _ENDED:
                    if kind is WSMsgType.ERROR:  # aiohttp's reader closed: 1002, 1009...
                        self.close_code = ws.close_code
                    receiver.socket_closing()
                    break
                if kind is _TEXT:
                    if not is_valid_utf8(msg.data):
                        self.close_code = 1007
                        receiver.socket_closing()
                        await ws.close(code=1007, message=b"invalid UTF-8 in a text message")
                        break
                    receiver.feed(bytes(msg.data), False)
                elif kind is _BINARY:
                    receiver.feed(bytes(msg.data), True)
                elif kind is WSMsgType.PING:
                    try:
                        pending = self._write(_OP_PONG, bytes(msg.data))
                    except ConnectionResetError:
                        continue  # closing already (e.g. as a slow reader): no pong
                    receiver.control_sent(pending)
                elif kind is WSMsgType.PONG:
                    receiver.alive()
                elif kind is WSMsgType.CLOSE:
                    # aiohttp lets 1006 and codes from 5000 through (RFC 6455 §7.4).
                    code = msg.data or 1000  # 0: a close frame without a code
                    self.close_code = msg.data or 1005
                    receiver.socket_closing()
                    await ws.close(code=code if is_valid_close_code(code) else 1002)
                    break
                msg = None  # an idle connection does not keep its last message
        finally:
            receiver = self.receiver
            self.receiver = None
            if receiver is not None:
                receiver.socket_closed(ws.exception())
            if self._session is not None:
                # Our own close() stopped the reading (aiohttp hands receive() a
                # CLOSING message first): let it write its close frame and read
                # the answer (bounded by aiohttp's ws_close timeout) before the
                # session closes the connection under it.
                try:
                    if self._closing is not None:
                        await asyncio.wait({self._closing})
                finally:  # even when cancelled meanwhile
                    await self._session.close()

    def _write(self, opcode: int, payload: bytes) -> int:
        transport = self._transport
        if transport is None or self._ws.closed or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closed")
        self._write_queued()
        transport.write(encode(opcode, payload, self._masked))
        return int(transport.get_write_buffer_size())

    def send(self, data: bytes, binary: bool) -> int:
        return self._write(_OP_BINARY if binary else _OP_TEXT, data)

    def send_shared(self, shared: Shared) -> int:
        return self.send(shared.data, shared.binary)

    def ping(self) -> None:
        self._write(_OP_PING, b"")

    def _write_queued(self) -> None:
        pass  # the server side batches (AiohttpServerSocket)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing is not None or self._ws.closed:
            return
        self._write_queued()
        self._closing = asyncio.get_running_loop().create_task(
            self._ws.close(code=code, message=close_reason(reason))
        )

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.request.remote_address if self.request is not None else None


class AiohttpServerSocket(AiohttpSocket):
    """The server side: data frames built by neffos (once per broadcast) and
    written at most twice per loop turn (:mod:`neffos.transports.frames`)."""

    __slots__ = ("_outbox",)

    def __init__(self, ws: Any, request: Request, transport: asyncio.BaseTransport) -> None:
        super().__init__(ws, request, transport)
        self._outbox = Outbox(transport)

    def send(self, data: bytes, binary: bool) -> int:
        if self._ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        return self._outbox.queue(data_frame(data, binary))

    def send_shared(self, shared: Shared) -> int:
        if self._ws.closed:
            raise ConnectionResetError("the WebSocket is closed")
        return self._outbox.queue_shared(shared.frame)

    def _write_queued(self) -> None:
        self._outbox.write_out()

    def abort(self) -> None:
        self._outbox.drop()
        super().abort()


# -- server ---------------------------------------------------------------------------


async def listen(endpoint: Endpoint, host: str, port: int, **options: Any) -> asyncio.Server:
    return await serve_front(endpoint, upgrade, host, port, **options)


def upgrade(
    endpoint: Endpoint, transport: asyncio.Transport, head: bytes, request: Request
) -> None:
    """Hand a TCP connection whose request head HttpFront read and checked over to aiohttp."""
    request.remote_address = peer_of(transport)

    async def handle(http_request: web.BaseRequest) -> web.StreamResponse:
        # HttpFront checked the request already
        return await serve_websocket(endpoint, http_request, request, transport)

    # One aiohttp server per connection: it serves this one upgrade request.
    protocol = web.Server(
        handle, handler_cancellation=True, access_log=None, logger=_log
    )()
    guard = _FrameGuard(
        protocol, head.find(b"\r\n\r\n") + 4, endpoint.max_message_size, endpoint.close_timeout
    )
    transport.set_protocol(guard)
    guard.connection_made(transport)
    guard.data_received(head)


async def serve_websocket(
    endpoint: Endpoint,
    http_request: web.BaseRequest,
    request: Request,
    transport: asyncio.BaseTransport | None,
) -> web.StreamResponse:
    """Upgrade an aiohttp request that the endpoint accepted and serve the WebSocket
    until it ends (neffos' listener and applications' routes alike)."""
    subprotocol = endpoint.subprotocol(request)
    ws = web.WebSocketResponse(
        protocols=() if subprotocol is None else (subprotocol,),
        timeout=endpoint.close_timeout,  # for the peer's close frame
        autoping=False,
        autoclose=False,
        compress=False,
        max_msg_size=endpoint.max_message_size,
        decode_text=False,
    )
    try:
        await ws.prepare(http_request)
    except OSError:  # ConnectionError and aiohttp's ClientConnectionResetError too
        return web.Response()  # the client left before the 101: nothing to log
    sock = (
        AiohttpSocket(ws, request, transport)
        if transport is None
        else AiohttpServerSocket(ws, request, transport)
    )
    endpoint.accept(sock)
    await sock.read_loop()
    tcp: Any = transport  # a uvloop or asyncio socket transport (not typed as one)
    if tcp is not None and tcp.get_write_buffer_size():
        # The WebSocket ended, but its TCP connection is still flushing, maybe to
        # a peer that never reads (aiohttp closes it gracefully): drop it after
        # close_timeout, as the other transports do, so it cannot hold its
        # unsent bytes for as long as TCP keeps trying.
        asyncio.get_running_loop().call_later(endpoint.close_timeout, tcp.abort)
    return ws


class _FrameGuard(asyncio.Protocol):
    """Two rules of the other transports that aiohttp's reader does not apply.

    Every frame from a client must be masked (RFC 6455 §5.1: close 1002), and a
    message may have at most ``max_size // 64`` fragments (close 1009, as the
    :class:`~neffos.transports.messages.Assembler` of the other transports).
    It reads only frame headers and forwards all bytes to aiohttp's protocol.
    """

    __slots__ = (
        "_close_timeout", "_fragments", "_head", "_header", "_inner", "_max_fragments",
        "_skip", "_transport",
    )

    def __init__(
        self, inner: asyncio.Protocol, head: int, max_size: int, close_timeout: float
    ) -> None:
        self._inner = inner
        self._close_timeout = close_timeout
        self._max_fragments = max_size // FRAGMENT_COST
        self._transport: asyncio.Transport | None = None
        self._head = head  # the size of the request head that comes first (replayed)
        self._header = bytearray()  # the header of the next frame, as it arrives
        self._skip = 0  # payload bytes of the current frame still to come
        self._fragments = 0  # frames of the data message in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def data_received(self, data: bytes) -> None:
        head, self._head = self._head, 0  # the replayed request head is not frames
        if self._scan(memoryview(data)[head:]):
            self._inner.data_received(data)

    def _scan(self, data: memoryview) -> bool:
        pos, end = 0, len(data)
        header = self._header
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = _header_size(header)
            take = min(need - len(header), end - pos)
            header += data[pos : pos + take]
            pos += take
            if len(header) >= 2 and not header[1] & 0x80:
                self._violation(1002, b"frame from client unmasked")
                return False
            if len(header) == _header_size(header):
                if not self._count(header[0]):
                    self._violation(1009, b"message too big")
                    return False
                self._skip = _payload_size(header)
                header.clear()
        return True

    def _count(self, first: int) -> bool:
        """Count the fragments of data messages; ``False`` past the limit."""
        opcode = first & 0x0F
        if opcode >= 0x8:  # a control frame, between fragments or not
            return True
        self._fragments = self._fragments + 1 if opcode == 0 else 1
        if first & 0x80:  # FIN
            self._fragments = 0
            return True
        return self._fragments <= self._max_fragments

    def _violation(self, code: int, reason: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            # A close frame, then the end of the connection.
            transport.write(bytes((0x88, 2 + len(reason))) + code.to_bytes(2, "big") + reason)
            transport.close()
            asyncio.get_running_loop().call_later(self._close_timeout, transport.abort)


def _header_size(header: bytearray) -> int:
    """The size of a client frame's header, as far as the bytes so far tell (at least 2)."""
    if len(header) < 2:
        return 2
    length = header[1] & 0x7F
    return 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4


def _payload_size(header: bytearray) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return int.from_bytes(header[2:4], "big")
    if length == 127:
        return int.from_bytes(header[2:10], "big")
    return length


# -- client ---------------------------------------------------------------------------


async def connect(
    receiver: Receiver,
    url: str,
    headers: list[tuple[str, str]],
    *,
    timeout: float | None,
    max_message_size: int,
    ssl: SSLContext | None = None,
) -> AiohttpSocket:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            url,
            ssl=True if ssl is None else ssl,  # used for wss:// only; True: verify
            headers=headers,
            autoping=False,
            autoclose=False,
            compress=0,
            max_msg_size=max_message_size,
            decode_text=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout or 10.0),
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await session.close()
        raise DialError(f"cannot connect to {url}: {tls_failure(exc) or repr(exc)}") from exc
    except BaseException:
        await session.close()
        raise
    target = url.split("://", 1)[-1]
    path = "/" + target.split("/", 1)[1] if "/" in target else "/"
    # aiohttp does not publish the client's transport; its writer holds it.
    transport = getattr(getattr(ws, "_writer", None), "transport", None)
    sock = AiohttpSocket(ws, Request("GET", path, Headers(headers)), transport, session)
    sock.receiver = receiver
    # aiohttp needs a task to read; the socket owns it.
    sock._reader = asyncio.get_running_loop().create_task(sock.read_loop())
    return sock
