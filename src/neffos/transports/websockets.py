"""The websockets transport, built on the sans-I/O core of the ``websockets`` library.

Using ``websockets.server.ServerProtocol``/``websockets.client.ClientProtocol``
directly keeps this transport callback-driven like picows: no task per
connection, writes never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from ssl import SSLContext
from typing import Any

try:
    from websockets.client import ClientProtocol
    from websockets.exceptions import InvalidURI, WebSocketException
    from websockets.frames import Opcode
    from websockets.http11 import Request as WSRequest
    from websockets.http11 import Response as WSResponse
    from websockets.protocol import State
    from websockets.server import ServerProtocol
    from websockets.typing import Subprotocol
    from websockets.uri import parse_uri
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the websockets transport needs the websockets library: pip install 'neffos[websockets]'"
    ) from exc

from .._http import Headers, Request, http_response, plain_text, serve_front
from ..errors import DialError
from .base import Endpoint, QuietLog, Receiver, peer_of, tls_failure
from .frames import Outbox, Shared, data_frame
from .messages import Assembler, ProtocolViolation, close_reason

NAME = "websockets"

_log = QuietLog(logging.getLogger("neffos.transports.websockets"), {})
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_OPEN = State.OPEN
_PING = Opcode.PING
_PONG = Opcode.PONG


class WebsocketsSocket(asyncio.Protocol):
    """A neffos Socket on top of websockets' sans-I/O protocol."""

    __slots__ = (
        "_assembler",
        "_handshake",
        "_headers",
        "_proto",
        "_transport",
        "receiver",
        "request",
    )

    transport_name = NAME

    def __init__(
        self,
        proto: ServerProtocol | ClientProtocol,
        request: Request | None,
        max_size: int,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.receiver: Receiver | None = None
        self.request = request
        self._proto = proto
        self._transport: asyncio.Transport | None = None
        self._assembler = Assembler(max_size)  # UTF-8 and the size of a message
        self._headers = headers
        self._handshake: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses: no isinstance check
        self._transport = transport  # type: ignore[assignment]
        proto = self._proto
        if isinstance(proto, ClientProtocol):
            request = proto.connect()
            for name, value in self._headers or ():
                request.headers[name] = value
            proto.send_request(request)
            self._flush()

    def data_received(self, data: bytes) -> None:
        proto = self._proto
        proto.receive_data(data)
        self._flush()
        self._handle(proto.events_received())

    def eof_received(self) -> bool | None:
        self._proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        fut = self._handshake
        if fut is not None and not fut.done():
            cause = f": {exc}" if exc is not None else ""
            fut.set_exception(DialError(f"connection lost during the handshake{cause}"))
        receiver = self.receiver
        if receiver is not None:
            self.receiver = None
            receiver.socket_closed(exc)

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writing_paused()

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writing_resumed()

    # -- internals -----------------------------------------------------------------

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        chunks = self._proto.data_to_send()
        if chunks:
            self._write_queued()  # what neffos queued goes first
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:  # end of stream: the protocol wants the TCP connection closed
                transport.close()
        if self._proto.close_expected() and isinstance(self._proto, ServerProtocol):
            if self.receiver is not None:
                self.receiver.socket_closing()
            transport.close()

    def _handle(self, events: list[Any]) -> None:
        # websockets already checked RSV bits, masking, control frames and the
        # order of fragments; the assembler adds UTF-8 and the size of a message.
        assembler = self._assembler
        for event in events:
            if isinstance(event, WSResponse):
                self._handshake_done()
                continue
            opcode = event.opcode
            receiver = self.receiver
            try:
                if opcode is _TEXT or opcode is _BINARY:
                    binary = opcode is _BINARY
                    data = assembler.data(bytes(event.data), binary, event.fin, False)
                    if data is not None and receiver is not None:
                        receiver.feed(data, binary)
                elif opcode is _CONT:
                    message = assembler.continuation(bytes(event.data), event.fin, False)
                    if message is not None and receiver is not None:
                        receiver.feed(*message)
                elif opcode is _PING and receiver is not None:
                    # websockets answered it already: count the pong as written.
                    transport = self._transport
                    if transport is not None:
                        receiver.control_sent(transport.get_write_buffer_size())
                elif opcode is _PONG and receiver is not None:
                    receiver.alive()
            except ProtocolViolation as exc:
                if receiver is not None:
                    receiver.socket_closing()
                self._proto.fail(exc.code, exc.reason)
                self._flush()
                if self._transport is not None:
                    self._transport.close()
                return

    def _handshake_done(self) -> None:
        fut = self._handshake
        if fut is None or fut.done():
            return
        exc = self._proto.handshake_exc
        if exc is not None:
            fut.set_exception(DialError(f"WebSocket handshake failed: {exc}"))
        else:
            fut.set_result(None)

    # -- Socket ------------------------------------------------------------------------

    def send(self, data: bytes, binary: bool) -> int:
        proto = self._proto
        if binary:
            proto.send_binary(data)
        else:
            proto.send_text(data)
        transport = self._transport
        assert transport is not None
        for chunk in proto.data_to_send():
            transport.write(chunk)
        return transport.get_write_buffer_size()

    def send_shared(self, shared: Shared) -> int:
        return self.send(shared.data, shared.binary)

    def _write_queued(self) -> None:
        pass  # the server side batches (WebsocketsServerSocket)

    def ping(self) -> None:
        try:
            self._proto.send_ping(b"")
        except WebSocketException:
            return
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(WebSocketException):
            self._proto.send_close(code, close_reason(reason).decode())
        self._flush()
        transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return peer_of(self._transport)

    @property
    def close_code(self) -> int | None:
        proto = self._proto
        frame = proto.close_rcvd or proto.close_sent
        return None if frame is None else int(frame.code)


class WebsocketsServerSocket(WebsocketsSocket):
    """The server side: data frames built by neffos (once per broadcast) and
    written at most twice per loop turn (:mod:`neffos.transports.frames`); websockets
    still writes the control frames, after what was queued."""

    __slots__ = ("_outbox",)

    def __init__(self, proto: ServerProtocol, request: Request, max_size: int) -> None:
        super().__init__(proto, request, max_size)
        self._outbox: Outbox | None = None

    def start_batching(self, transport: asyncio.Transport) -> None:
        """The handshake is answered: data frames are batched from now on."""
        self._outbox = Outbox(transport)

    def send(self, data: bytes, binary: bool) -> int:
        if self._proto.state is not _OPEN:
            raise ConnectionResetError("the WebSocket is closed")
        return self._outbox.queue(data_frame(data, binary))  # type: ignore[union-attr]

    def send_shared(self, shared: Shared) -> int:
        if self._proto.state is not _OPEN:
            raise ConnectionResetError("the WebSocket is closed")
        return self._outbox.queue_shared(shared.frame)  # type: ignore[union-attr]

    def _write_queued(self) -> None:
        if self._outbox is not None:
            self._outbox.write_out()

    def abort(self) -> None:
        if self._outbox is not None:
            self._outbox.drop()
        super().abort()


# -- server ----------------------------------------------------------------------------


async def listen(endpoint: Endpoint, host: str, port: int, **options: Any) -> asyncio.Server:
    return await serve_front(endpoint, upgrade, host, port, **options)


def upgrade(
    endpoint: Endpoint, transport: asyncio.Transport, head: bytes, request: Request
) -> None:
    """Hand a TCP connection whose request head HttpFront read over to websockets."""
    request.remote_address = peer_of(transport)
    max_size = endpoint.max_message_size
    subprotocol = endpoint.subprotocol(request)
    proto = ServerProtocol(
        max_size=max_size,
        logger=_log,
        subprotocols=None if subprotocol is None else [Subprotocol(subprotocol)],
    )
    sock = WebsocketsServerSocket(proto, request, max_size)
    transport.set_protocol(sock)
    sock.connection_made(transport)
    proto.receive_data(head)
    events = proto.events_received()
    if not events or not isinstance(events[0], WSRequest):
        # HttpFront checked the head; websockets still refused it: say so
        transport.write(http_response(*plain_text(400, "Bad Request")))
        transport.close()
        return
    response = proto.accept(events[0])
    proto.send_response(response)
    for chunk in proto.data_to_send():
        if chunk:
            transport.write(chunk)
    if response.status_code != 101:
        transport.close()
        return
    sock.start_batching(transport)
    endpoint.accept(sock)
    sock._handle(events[1:])  # frames that came with the head


# -- client ----------------------------------------------------------------------------


async def connect(
    receiver: Receiver,
    url: str,
    headers: list[tuple[str, str]],
    *,
    timeout: float | None,
    max_message_size: int,
    ssl: SSLContext | None = None,
) -> WebsocketsSocket:
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise DialError(str(exc)) from exc
    target = uri.resource_name
    request = Request("GET", target, Headers(headers))
    sock = WebsocketsSocket(
        ClientProtocol(uri, max_size=max_message_size, logger=_log),
        request,
        max_message_size,
        headers,
    )
    loop = asyncio.get_running_loop()
    sock._handshake = loop.create_future()
    sock.receiver = receiver
    try:
        async with asyncio.timeout(timeout):
            # wss: the given context, or asyncio's default one (it verifies the certificate)
            context = (True if ssl is None else ssl) if uri.secure else None
            await loop.create_connection(lambda: sock, uri.host, uri.port, ssl=context)
            await sock._handshake
    except (OSError, TimeoutError) as exc:
        sock.receiver = None
        if sock._transport is not None:
            sock._transport.abort()
        raise DialError(f"cannot connect to {url}: {tls_failure(exc) or repr(exc)}") from exc
    except BaseException:
        sock.receiver = None
        if sock._transport is not None:
            sock._transport.abort()
        raise
    return sock
