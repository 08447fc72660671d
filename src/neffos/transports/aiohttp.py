"""The aiohttp transport: aiohttp's WebSocket server and client behind the Socket API.

aiohttp needs a reading task per connection (its design); writes are still
synchronous here: an uncompressed frame is written to the transport before
``send_frame`` ever awaits, and neffos enforces its own send-buffer limit
instead of waiting for the drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

try:
    import aiohttp
    from aiohttp import WSMsgType, web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the aiohttp transport needs aiohttp: pip install 'neffos[aiohttp]'"
    ) from exc

from .._http import Headers, Request
from ..errors import DialError
from .base import Endpoint, Receiver

NAME = "aiohttp"

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY


def _run_sync(coro: Coroutine[Any, Any, Any]) -> None:
    # Run the synchronous part of a send; give up the optional drain wait.
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()


class AiohttpSocket:
    """A neffos Socket on top of an aiohttp WebSocket response."""

    __slots__ = ("_closing", "_reader", "_session", "_ws", "receiver", "request")

    transport_name = NAME

    def __init__(
        self,
        ws: Any,
        request: Request,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.receiver: Receiver | None = None
        self.request: Request | None = request
        self._reader: asyncio.Task[None] | None = None
        self._ws = ws
        self._session = session
        self._closing: asyncio.Task[Any] | None = None

    async def read_loop(self) -> None:
        ws = self._ws
        try:
            async for msg in ws:
                receiver = self.receiver
                if receiver is None:
                    break
                kind = msg.type
                if kind is _TEXT:
                    receiver.feed(bytes(msg.data), False)
                elif kind is _BINARY:
                    receiver.feed(bytes(msg.data), True)
                elif kind is WSMsgType.PING:
                    _run_sync(ws.pong(msg.data))
                elif kind is WSMsgType.PONG:
                    receiver.alive()
        finally:
            receiver = self.receiver
            self.receiver = None
            if receiver is not None:
                receiver.socket_closed(ws.exception())
            if self._session is not None:
                await self._session.close()

    def send(self, data: bytes, binary: bool) -> int:
        _run_sync(self._ws.send_frame(data, _BINARY if binary else _TEXT))
        transport = self._transport()
        return transport.get_write_buffer_size() if transport is not None else 0

    def _transport(self) -> asyncio.Transport | None:
        writer = getattr(self._ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        return transport if hasattr(transport, "get_write_buffer_size") else None

    def ping(self) -> None:
        _run_sync(self._ws.ping())

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing is not None or self._ws.closed:
            return
        self._closing = asyncio.get_running_loop().create_task(
            self._ws.close(code=code, message=reason.encode()[:120])
        )

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.request.remote_address if self.request is not None else None


# -- server ---------------------------------------------------------------------------


async def listen(endpoint: Endpoint, host: str, port: int, **options: Any) -> asyncio.Server:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        neffos_request = Request(
            request.method, request.path_qs, Headers(list(request.headers.items())), remote
        )
        answer = endpoint.route(neffos_request)
        if answer is not None:
            status, headers, body = answer
            return web.Response(status=status, headers=headers, body=body)
        ws = web.WebSocketResponse(
            autoping=False,
            compress=False,
            max_msg_size=endpoint.max_message_size,
            decode_text=False,
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="not a WebSocket handshake\n")
        await ws.prepare(request)
        sock = AiohttpSocket(ws, neffos_request)
        endpoint.accept(sock)
        await sock.read_loop()
        return ws

    loop = asyncio.get_running_loop()
    factory = web.Server(handle, handler_cancellation=True)
    return await loop.create_server(factory, host, port, **options)


# -- client ---------------------------------------------------------------------------


async def connect(
    receiver: Receiver,
    url: str,
    headers: list[tuple[str, str]],
    *,
    timeout: float | None,
    max_message_size: int,
) -> AiohttpSocket:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            url,
            headers=headers,
            autoping=False,
            compress=0,
            max_msg_size=max_message_size,
            decode_text=False,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout or 10.0),
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await session.close()
        raise DialError(f"cannot connect to {url}: {exc!r}") from exc
    except BaseException:
        await session.close()
        raise
    target = url.split("://", 1)[-1]
    path = "/" + target.split("/", 1)[1] if "/" in target else "/"
    sock = AiohttpSocket(ws, Request("GET", path, Headers(headers)), session)
    sock.receiver = receiver
    # aiohttp needs a task to read; the socket owns it.
    sock._reader = asyncio.get_running_loop().create_task(sock.read_loop())
    return sock
