"""A neffos server on a route of an existing ``aiohttp.web.Application``.

The application keeps its own routes, middlewares and listener; the neffos
endpoint is one more route::

    app = web.Application()
    app.router.add_get("/", index)
    neffos.attach_aiohttp(app, server, "/echo")
    web.run_app(app)

:func:`attach` adds the route for every method (so the endpoint's HTTP rules
answer ``HEAD`` probes and other methods, as on neffos' own listener) and ties
the server to the application's startup and shutdown. :func:`handler` is the
route handler alone, for applications that register routes themselves.

Handlers find aiohttp's ``web.Request`` as ``conn.request.native``. Here
aiohttp reads the frames with its own rules: unlike neffos' own aiohttp
listener, unmasked client frames are not refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "attaching to an aiohttp application needs aiohttp: pip install 'neffos[aiohttp]'"
    ) from exc

from .._http import Headers, Request, handshake_problem, header_text
from .aiohttp import serve_websocket
from .base import Endpoint

__all__ = ["attach", "handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Server(Protocol):
    """What the adapter needs from a :class:`neffos.Server`."""

    def endpoint(self, path: str | None = None) -> Endpoint: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def request_of(http_request: web.BaseRequest) -> Request:
    """The neffos :class:`~neffos.Request` of an aiohttp request (``native``: the request)."""
    headers = Headers(
        [(header_text(name), header_text(value)) for name, value in http_request.raw_headers]
    )
    version = http_request.version
    peer = http_request.transport.get_extra_info("peername") if http_request.transport else None
    remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
    request = Request(
        http_request.method,
        http_request.raw_path,
        headers,
        remote,
        f"HTTP/{version.major}.{version.minor}",
    )
    request.native = http_request
    return request


def handler(server: _Server) -> Handler:
    """An aiohttp route handler that serves ``server`` (any method; any path routed to it)."""
    endpoint = server.endpoint(None)  # aiohttp routed the path here

    async def serve(http_request: web.Request) -> web.StreamResponse:
        await server.start()  # once; it is a no-op afterwards
        request = request_of(http_request)
        answer = endpoint.route(request) or handshake_problem(request)
        if answer is not None:
            status, headers, body = answer
            return web.Response(status=status, headers=headers, body=body)
        return await serve_websocket(endpoint, http_request, request, http_request.transport)

    return serve


def attach(app: web.Application, server: _Server, path: str = "/echo") -> None:
    """Serve ``server`` at ``path`` of ``app``; start and close it with the application."""

    async def start(_app: web.Application) -> None:
        await server.start()

    async def close(_app: web.Application) -> None:
        await server.close()

    app.router.add_route("*", path, handler(server))
    app.on_startup.append(start)
    app.on_shutdown.append(close)
