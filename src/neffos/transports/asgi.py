"""Serving a neffos server through ASGI: uvicorn, hypercorn, Starlette, FastAPI.

:class:`ASGIApp` is an ASGI application. As the whole application of an ASGI
server it serves the endpoint and answers other paths 404 (or hands them to
``other_asgi_app``); mounted in Starlette or FastAPI it serves what the
framework routes to it. The ASGI server does the WebSocket handshake and the
framing; this module turns the ASGI messages into the engine's
:class:`~neffos.transports.base.Socket` calls:

* ``websocket.receive`` -> ``receiver.feed``; ``websocket.disconnect`` -> the
  end of the socket.
* ``Socket.send`` never waits: it runs the ASGI ``send`` coroutine at once,
  which ASGI servers finish without waiting while the peer keeps up (no task
  per message). A send that must wait (backpressure) is finished by a task,
  and later messages queue behind it in order; what is queued is what ``send``
  reports, so ``send_buffer`` and the slow-consumer close hold.
* ASGI has no ping: the ASGI server keeps connections alive itself (uvicorn's
  ``--ws-ping-interval``), so ``ping`` counts as answered.
* ASGI has no abort either (ending the application closes the connection
  gracefully, which waits for a peer that may never read): an abort drops the
  ASGI server's TCP transport where it can be found (uvicorn, hypercorn, also
  through Starlette's WebSocket), and ends the application's coroutine.

Requests the endpoint refuses (its HTTP rules, ``before_upgrade``) are answered
with their status when the ASGI server offers the ``websocket.http.response``
extension (uvicorn, hypercorn), and with 403 otherwise (the ASGI spec).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import types
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from .._http import Headers, Request, handshake_problem, header_text, plain_text
from .base import Endpoint, Receiver
from .frames import Shared

__all__ = ["ASGIApp", "ASGISocket", "request_of"]

NAME = "asgi"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("neffos.transports.asgi")


class WebSocketLike(Protocol):
    """A framework's WebSocket object (Starlette's and FastAPI's ``WebSocket``)."""

    @property
    def scope(self) -> Scope: ...

    async def receive(self) -> Message: ...

    async def send(self, message: Message) -> None: ...


class _Server(Protocol):
    """What the adapter needs from a :class:`neffos.Server`."""

    def endpoint(self, path: str | None = None) -> Endpoint: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def request_of(scope: Scope, native: Any = None) -> Request:
    """The neffos :class:`~neffos.Request` of an ASGI ``http`` or ``websocket`` scope.

    ``request.scope`` is the scope itself and ``request.native`` the framework's
    object (``native``) or the scope.
    """
    headers = Headers([(header_text(k), header_text(v)) for k, v in scope.get("headers", ())])
    subprotocols = scope.get("subprotocols")
    if subprotocols and "Sec-WebSocket-Protocol" not in headers:
        # some servers (uvicorn on wsproto) pass the offer only as "subprotocols"
        headers.add("Sec-WebSocket-Protocol", ", ".join(subprotocols))
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else urllib.parse.quote(scope["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    target = f"{path}?{query}" if query else path
    client = scope.get("client")
    remote = (str(client[0]), int(client[1])) if client else None
    method = scope.get("method", "GET")  # a websocket scope has none: it is a GET
    request = Request(method, target, headers, remote, f"HTTP/{scope.get('http_version', '1.1')}")
    request.scope = scope
    request.native = scope if native is None else native
    return request


class ASGISocket:
    """A neffos Socket on top of an ASGI WebSocket connection."""

    __slots__ = (
        "_aborted",
        "_asgi_send",
        "_closing",
        "_pending",
        "_queue",
        "_task",
        "_writer",
        "close_code",
        "receiver",
        "request",
    )

    transport_name = NAME

    def __init__(self, request: Request, send: Send) -> None:
        self.receiver: Receiver | None = None
        self.request: Request | None = request
        self._asgi_send = send
        self._queue: collections.deque[tuple[Message, int]] = collections.deque()
        self._pending = 0  # bytes queued or in the send under way
        self._writer: asyncio.Task[None] | None = None  # only while a send waits
        self._task: asyncio.Task[Any] | None = None  # the application's coroutine
        self._closing = False
        self._aborted = False
        #: how the connection ended (see transports.base.Socket)
        self.close_code: int | None = None

    def start(self) -> None:
        self._task = asyncio.current_task()

    # -- Socket ----------------------------------------------------------------------

    def send(self, data: bytes, binary: bool) -> int:
        if self._closing:
            raise ConnectionResetError("the WebSocket is closed")
        if binary:
            message: Message = {"type": "websocket.send", "bytes": data}
        else:
            message = {"type": "websocket.send", "text": data.decode()}
        return self._put(message, len(data))

    def _put(self, message: Message, size: int) -> int:
        if self._writer is not None:  # a send is waiting: keep the order
            self._queue.append((message, size))
            self._pending += size
            return self._pending
        # Run the ASGI send at once: ASGI servers write to the transport and
        # return without waiting unless the peer is behind, so most sends
        # finish here, with no task and no wake-up per message.
        step: Any = self._asgi_send(message)
        if not isinstance(step, types.CoroutineType):
            # an awaitable of another kind (e.g. granian's): a task awaits it
            self._pending += size
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(step, None, size, started=False)
            )
            return self._pending
        try:
            waiting = step.send(None)  # the coroutine, driven by hand
        except StopIteration:
            return self._pending
        except Exception as exc:
            self._lost(exc)
            raise ConnectionResetError("the WebSocket is closed") from exc
        # It waits (backpressure): a task finishes it, then sends what queued.
        self._pending += size
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(step, waiting, size)
        )
        return self._pending

    def send_shared(self, shared: Shared) -> int:
        return self.send(shared.data, shared.binary)

    def ping(self) -> None:
        # The ASGI server pings on its own and drops dead peers; ASGI gives an
        # application no way to ping, so the engine's check counts as answered.
        if not self._closing:
            asyncio.get_running_loop().call_soon(self._pong)

    def _pong(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.alive()

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(ConnectionResetError):
            self._put({"type": "websocket.close", "code": code, "reason": reason}, 0)

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._closing = True
        self._queue.clear()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        # ASGI cannot drop a connection (ending the app closes it gracefully,
        # which waits for a peer that may never read): where the server's
        # transport can be found (uvicorn), drop it.
        transport = _transport_of(self._asgi_send)
        if transport is not None:
            transport.abort()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()  # serve() takes it as the end of the connection
        # from the app's own task, read_loop returns after the frame at hand

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.request.remote_address if self.request is not None else None

    # -- sends that wait -------------------------------------------------------------

    async def _write_loop(
        self, first: Any, waiting: Any, size: int, *, started: bool = True
    ) -> None:
        """Finish a send that started in ``_put``, then the ones queued behind it."""
        queue = self._queue
        try:
            if not started:
                await first
            else:
                while True:
                    # Resume the started coroutine the way a task would: wait
                    # for what it waits for, then let it go on (it reads the
                    # outcome, an exception or a cancellation included).
                    if waiting is None:
                        await asyncio.sleep(0)
                    else:
                        waiting._asyncio_future_blocking = False  # as Task.__step does
                        with contextlib.suppress(BaseException):
                            await waiting
                    try:
                        waiting = first.send(None)
                    except StopIteration:
                        break
            self._pending -= size
            while queue:
                message, size = queue.popleft()
                await self._asgi_send(message)
                self._pending -= size
        except asyncio.CancelledError:
            if started:
                first.close()
            raise
        except Exception as exc:  # the ASGI server lost the connection
            self._lost(exc)
        finally:
            self._writer = None

    def _lost(self, exc: BaseException) -> None:
        log.debug("ASGI send failed: %r", exc)
        self._closing = True
        self._queue.clear()

    async def read_loop(self, receive: Receive, max_size: int) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            receiver = self.receiver
            if kind == "websocket.receive":
                if receiver is None:
                    continue
                text = message.get("text")
                if text is not None:
                    data: bytes = text.encode()
                    binary = False
                else:
                    data = message.get("bytes") or b""
                    binary = True
                if len(data) > max_size:
                    self.close_code = 1009
                    receiver.socket_closing()
                    self.close(1009, "message too big")
                    continue
                receiver.feed(data, binary)
                if self._aborted:
                    return
            elif kind == "websocket.disconnect":
                # the ASGI server's code: the peer's close frame, 1006 without one
                self.close_code = self.close_code or message.get("code", 1005)
                return

    def finish(self) -> None:
        """The connection is over: stop the writer, tell the receiver (once)."""
        self._closing = True
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        receiver = self.receiver
        self.receiver = None
        if receiver is not None:
            receiver.socket_closed(None)


def _transport_of(send: Any) -> Any:
    """The asyncio transport behind an ASGI ``send``, where it can be found.

    uvicorn's ``send`` is a method of its protocol, which has ``transport``;
    hypercorn's is a method of a stream whose ``send`` reaches a server with a
    ``writer``; Starlette's WebSocket wraps the server's ``send`` as ``_send``.
    """
    for _ in range(4):
        owner = getattr(send, "__self__", None)
        if owner is None:
            return None
        for transport in (
            getattr(owner, "transport", None),
            getattr(getattr(owner, "writer", None), "transport", None),
        ):
            if transport is not None and callable(getattr(transport, "abort", None)):
                return transport
        send = getattr(owner, "_send", None) or getattr(owner, "send", None)
    return None


class ASGIApp:
    """An ASGI application that serves a neffos :class:`~neffos.Server`.

    Args:
        server: the neffos server (its handlers, hooks, limits and exchanges).
        other_asgi_app: the ASGI application that gets every request that is
            not for the endpoint (and the lifespan events, wrapped so that the
            server starts and closes with it).
        path: the URL path of the endpoint, relative to where the app is
            mounted (``None``: every path that reaches this app; then there
            is no other app to hand requests to).

    As the top-level application, the app starts the server at lifespan
    startup and closes it at shutdown. Mounted in a framework, it starts the
    server with its first connection; close it in the framework's lifespan
    (``async with server:``).
    """

    def __init__(
        self,
        server: _Server,
        other_asgi_app: ASGI | None = None,
        *,
        path: str | None = None,
    ) -> None:
        if other_asgi_app is not None and path is None:
            raise ValueError("ASGIApp(server, other_asgi_app) needs path=: the endpoint's path")
        self.server = server
        self.other_asgi_app = other_asgi_app
        self.path = path
        self._endpoint = server.endpoint(None)  # paths are matched here (mounts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind in ("http", "websocket") and self._matches(scope):
            if kind == "websocket":
                await self._websocket(scope, receive, send, None)
            else:
                await self._http(scope, send)
        elif self.other_asgi_app is not None:
            await self.other_asgi_app(scope, receive, send)
        elif kind == "http":
            await _respond(send, *plain_text(404, "404 page not found"))
        elif kind == "websocket":
            await _refuse(scope, send, *plain_text(404, "404 page not found"))

    async def serve(self, websocket: WebSocketLike) -> None:
        """Serve one WebSocket that a framework routed here, e.g. in FastAPI::

            @app.websocket("/echo")
            async def echo(websocket: WebSocket) -> None:
                await neffos_app.serve(websocket)

        Handlers then find ``websocket`` as ``conn.request.native``.

        Raises:
            RuntimeError: the WebSocket was accepted already (neffos accepts
                it, after its own checks and with the subprotocol).
        """
        state = getattr(websocket, "client_state", None)
        if state is not None and getattr(state, "name", "CONNECTING") != "CONNECTING":
            raise RuntimeError(
                "ASGIApp.serve() needs a WebSocket that is not accepted yet: "
                "do not call websocket.accept() before it"
            )
        await self._websocket(websocket.scope, websocket.receive, websocket.send, websocket)

    # -- the parts ------------------------------------------------------------------------

    def _matches(self, scope: Scope) -> bool:
        if self.path is None:
            return True
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: the path still has the prefix
            path = path[len(root):] or "/"
        return path == self.path

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        other = self.other_asgi_app
        if other is not None:

            async def lifespan_receive() -> Message:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.server.start()
                elif message["type"] == "lifespan.shutdown":
                    await self.server.close()
                return message

            await other(scope, lifespan_receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.server.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.server.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, send: Send) -> None:
        """A plain HTTP request at the endpoint: the rules of docs/topics/protocol.md#http."""
        request = request_of(scope)
        answer = self._endpoint.route(request) or handshake_problem(request)
        if answer is None:  # the ASGI server passed an upgrade as HTTP: it lacks WebSockets
            answer = plain_text(501, "Not Implemented: the ASGI server has no WebSocket support")
        await _respond(send, *answer)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, native: Any) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            await self.server.start()
        except Exception:
            log.exception("the neffos server could not start")
            await _refuse(scope, send, *plain_text(500, "Internal Server Error"))
            return
        endpoint = self._endpoint
        request = request_of(scope, native)
        answer = endpoint.route(request)
        if answer is not None:
            await _refuse(scope, send, *answer)
            return
        accept: Message = {"type": "websocket.accept"}
        subprotocol = endpoint.subprotocol(request)
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await send(accept)
        sock = ASGISocket(request, send)
        sock.start()
        try:
            endpoint.accept(sock)
            await sock.read_loop(receive, endpoint.max_message_size)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not sock._aborted or task is None:
                raise
            task.uncancel()  # an abort: the application returns, the server drops the TCP
        except Exception as exc:  # the ASGI server lost the connection
            log.debug("ASGI receive failed: %r", exc)
        finally:
            sock.finish()


def _raw_headers(headers: list[tuple[str, str]], body: bytes) -> list[tuple[bytes, bytes]]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    return raw


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    raw = _raw_headers(headers, body)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _refuse(
    scope: Scope, send: Send, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Refuse a WebSocket before accepting it: with ``status`` if the server can say it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        raw = _raw_headers(headers, body)
        await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
