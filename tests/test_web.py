"""A neffos server inside other web stacks: ASGI (uvicorn, hypercorn, Starlette,
FastAPI) and aiohttp applications, next to their own routes on one port.

The integration tests of the other files also run on "asgi" (uvicorn); here
are the parts that only exist in those stacks: the HTTP rules as seen through
them, mounts and routes, the framework's request in handlers, lifespans,
refusals with their status, and subprotocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket  # at module level: FastAPI reads the annotations
from helpers import UNIT, Recorder, asgi
from helpers.wire import http_response, upgrade_request

import neffos

WAIT = 5 * UNIT
ASGI_SERVERS = ["uvicorn", "uvicorn-wsproto", "hypercorn"]


def echo_events(rec: Recorder | None = None) -> dict[str, Any]:
    def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        if rec is not None:
            rec.add(ns.conn.request)
        return msg.body

    return {"v1": {"echo": echo}}


async def exchange(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request head, read the response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        return await http_response(reader)
    finally:
        writer.close()


def plain(method: str, path: str, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


async def round_trip(url: str, **options: Any) -> neffos.ClientConn:
    client = await neffos.dial(url, {"v1": {}}, timeout=WAIT, ping_interval=None, **options)
    ns = await client.connect("v1")
    assert (await ns.ask("echo", "ping", timeout=WAIT)).body == b"ping"
    return client


@contextlib.asynccontextmanager
async def hosted(app: Any, kind: str = "uvicorn") -> AsyncIterator[asgi.AsgiHost]:
    host = await asgi.host(app, kind)
    try:
        yield host
    finally:
        await host.close()


# -- ASGI: the whole application ----------------------------------------------------------


@pytest.mark.parametrize("kind", ASGI_SERVERS)
async def test_asgi_app_serves_the_endpoint_and_the_http_rules(kind: str) -> None:
    rec = Recorder()
    server = neffos.Server(echo_events(rec), ping_interval=None)
    async with hosted(neffos.ASGIApp(server, path="/echo"), kind) as host:
        client = await round_trip(host.url + "?X-Websocket-Header-X-Username=ann&a=1")
        (request,) = await rec.wait_len(1)
        # the request as neffos' own listener gives it, plus the ASGI scope
        assert request.path == "/echo" and request.query["a"] == ["1"]
        assert request.headers.get("X-Username") == "ann"  # docs/topics/protocol.md#url-headers
        assert request.remote_address[0] == "127.0.0.1"
        assert request.scope["type"] == "websocket" and request.native is request.scope
        # plain HTTP at the endpoint: the rules of docs/topics/protocol.md#http
        status, _, _ = await exchange(host.port, plain("HEAD", "/echo"))
        assert status == 302  # neffos.js' reconnection probe
        status, headers, _ = await exchange(host.port, plain("POST", "/echo"))
        assert (status, headers["allow"]) == (405, "GET")
        status, _, body = await exchange(host.port, plain("GET", "/echo"))
        assert status == 400 and b"not a WebSocket handshake" in body
        # other paths, with no other application
        status, _, body = await exchange(host.port, plain("GET", "/elsewhere"))
        assert (status, body) == (404, b"404 page not found\n")
        status, _, body = await exchange(host.port, upgrade_request("/elsewhere"))
        assert status == 404
        await client.aclose()
    assert server.is_closed  # the lifespan shutdown closed it


@pytest.mark.parametrize("kind", ASGI_SERVERS)
async def test_asgi_refusals_keep_their_status(kind: str) -> None:
    refused = Recorder()
    server = neffos.Server(
        echo_events(),
        ping_interval=None,
        allowed_origins=["https://good.example"],
        on_upgrade_error=refused.add,
    )
    async with hosted(neffos.ASGIApp(server, path="/echo"), kind) as host:
        status, _, body = await exchange(
            host.port, upgrade_request(extra=["Origin: https://evil.example"])
        )
        assert (status, body) == (403, b"Forbidden: origin not allowed\n")
        status, _, _ = await exchange(
            host.port, upgrade_request("/echo?X-Websocket-Header-X-Id=a%0d%0ab")
        )
        assert status == 400
        assert [e.status for e in await refused.wait_len(2)] == [403, 400]
        with pytest.raises(neffos.DialError, match="received 403"):
            await neffos.dial(
                host.url, {"v1": {}}, timeout=WAIT, headers={"Origin": "https://evil.example"}
            )


async def test_asgi_other_app_gets_every_other_request() -> None:
    seen: list[str] = []

    async def other(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                seen.append(kind)
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        assert scope["type"] == "http"
        body = f"other: {scope['path']}".encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    server = neffos.Server(echo_events(), ping_interval=None)
    async with hosted(neffos.ASGIApp(server, other, path="/echo")) as host:
        status, _, body = await exchange(host.port, plain("GET", "/index.html"))
        assert (status, body) == (200, b"other: /index.html")
        client = await round_trip(host.url)
        await client.aclose()
    assert seen == ["startup", "shutdown"]  # the other app's lifespan, wrapped
    assert server.is_closed


# -- Starlette and FastAPI ------------------------------------------------------------------


async def test_starlette_routes_mounts_and_lifespan() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Mount, Route, WebSocketRoute

    rec = Recorder()
    server = neffos.Server(echo_events(rec), ping_interval=None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with server:
            yield

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"clients": server.get_total_connections()})

    app = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("home")),
            Route("/api/hello", hello),
            WebSocketRoute("/echo", neffos.ASGIApp(server)),
            Mount("/mounted", app=neffos.ASGIApp(server, path="/ws")),
        ],
        lifespan=lifespan,
    )
    async with hosted(app) as host:
        status, _, body = await exchange(host.port, plain("GET", "/"))
        assert (status, body) == (200, b"home")
        first = await round_trip(host.url)
        second = await round_trip(f"ws://127.0.0.1:{host.port}/mounted/ws")
        status, _, body = await exchange(host.port, plain("GET", "/api/hello"))
        assert (status, body) == (200, b'{"clients":2}')
        requests = await rec.wait_len(2)
        assert [r.path for r in requests] == ["/echo", "/mounted/ws"]
        # the mount answers its own path's plain HTTP with the neffos rules
        status, _, _ = await exchange(host.port, plain("HEAD", "/mounted/ws"))
        assert status == 302
        await first.aclose()
        await second.aclose()
    assert server.is_closed


async def test_fastapi_route_gives_handlers_the_websocket_object() -> None:
    rec = Recorder()
    server = neffos.Server(echo_events(rec), ping_interval=None)
    neffos_app = neffos.ASGIApp(server)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with server:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/users/{name}")
    async def user(name: str) -> dict[str, str]:
        return {"name": name}

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        websocket.state.user = websocket.query_params.get("user")
        await neffos_app.serve(websocket)

    async with hosted(app) as host:
        client = await round_trip(host.url + "?user=bob")
        (request,) = await rec.wait_len(1)
        assert isinstance(request.native, WebSocket)
        assert request.native.state.user == "bob"
        status, _, body = await exchange(host.port, plain("GET", "/api/users/ann"))
        assert (status, body) == (200, b'{"name":"ann"}')
        await client.aclose()


# -- aiohttp applications ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def aiohttp_app(app: Any) -> AsyncIterator[int]:
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_aiohttp_attach_next_to_the_apps_routes() -> None:
    from aiohttp import web

    rec = Recorder()
    server = neffos.Server(echo_events(rec), ping_interval=None)
    async def home(request: web.Request) -> web.Response:
        return web.Response(text="home")

    app = web.Application()
    app.router.add_get("/", home)
    neffos.attach_aiohttp(app, server, "/echo")
    async with aiohttp_app(app) as port:
        status, _, body = await exchange(port, plain("GET", "/"))
        assert (status, body) == (200, b"home")
        client = await round_trip(f"ws://127.0.0.1:{port}/echo?X-Websocket-Header-X-A=1")
        (request,) = await rec.wait_len(1)
        assert isinstance(request.native, web.Request)
        assert request.headers.get("X-A") == "1"
        status, _, _ = await exchange(port, plain("HEAD", "/echo"))
        assert status == 302
        status, headers, _ = await exchange(port, plain("PUT", "/echo"))
        assert (status, headers["allow"]) == (405, "GET")
        await client.aclose()
    assert server.is_closed  # closed with the application


# -- before_upgrade and subprotocols, on every server transport ---------------------------------


async def serve_on(transport: str, server: neffos.Server) -> AsyncIterator[int]:
    if transport.startswith("asgi"):
        kind = transport.partition(":")[2] or "uvicorn"
        async with hosted(neffos.ASGIApp(server, path="/echo"), kind) as host:
            yield host.port
    elif transport == "aiohttp-app":
        from aiohttp import web

        app = web.Application()
        neffos.attach_aiohttp(app, server, "/echo")
        async with aiohttp_app(app) as port:
            yield port
    else:
        listener = await server.listen(path="/echo", transport=transport)
        try:
            yield listener.port
        finally:
            await listener.close()
            await server.close()


SERVER_SIDES = [
    "picows", "websockets", "aiohttp", "asgi", "asgi:uvicorn-wsproto", "asgi:hypercorn",
    "aiohttp-app",
]


@pytest.mark.parametrize("side", SERVER_SIDES)
async def test_before_upgrade_refuses_with_401(side: str) -> None:
    def check(request: neffos.Request) -> None:
        token = request.query.get("token", [""])[0]
        if token != "good":
            raise neffos.UpgradeError(401, "Unauthorized", headers=[("WWW-Authenticate", "Bearer")])
        request.state["user"] = "ann"

    rec = Recorder()
    server = neffos.Server(echo_events(rec), ping_interval=None, before_upgrade=check)
    async with contextlib.asynccontextmanager(serve_on)(side, server) as port:
        status, headers, body = await exchange(port, upgrade_request("/echo?token=bad"))
        assert (status, body) == (401, b"Unauthorized\n")
        assert headers["www-authenticate"] == "Bearer"
        with pytest.raises(neffos.DialError, match="received 401"):
            await neffos.dial(f"ws://127.0.0.1:{port}/echo", {"v1": {}}, timeout=WAIT)
        client = await round_trip(f"ws://127.0.0.1:{port}/echo?token=good")
        (request,) = await rec.wait_len(1)
        assert request.state == {"user": "ann"}
        await client.aclose()


@pytest.mark.parametrize("side", SERVER_SIDES)
async def test_subprotocol_selected_from_the_offer(side: str) -> None:
    server = neffos.Server(echo_events(), ping_interval=None, subprotocols=["neffos", "other"])
    async with contextlib.asynccontextmanager(serve_on)(side, server) as port:
        status, headers, _ = await exchange(
            port, upgrade_request(extra=["Sec-WebSocket-Protocol: jwt.abc, other, neffos"])
        )
        assert status == 101 and headers["sec-websocket-protocol"] == "neffos"
        status, headers, _ = await exchange(port, upgrade_request())
        assert status == 101 and "sec-websocket-protocol" not in headers


async def test_asgi_send_that_returns_another_kind_of_awaitable() -> None:
    """ASGI only says "awaitable" (granian's send returns no coroutine): such
    sends are awaited in order, the same as coroutines."""
    server = neffos.Server(
        {"v1": {"many": lambda ns, m: [ns.emit("n", str(i)) for i in range(200)] and None}},
        ping_interval=None,
    )
    inner = neffos.ASGIApp(server, path="/echo")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        def future_send(message: Any) -> asyncio.Future[None]:
            return asyncio.ensure_future(send(message))  # a Task, not a coroutine

        await inner(scope, receive, future_send)

    got = Recorder()
    async with hosted(app) as host:
        client = await neffos.dial(
            host.url, {"v1": {"n": lambda ns, m: got.add(m.text)}}, timeout=WAIT
        )
        ns = await client.connect("v1")
        ns.emit("many")
        assert await got.wait_len(200) == [str(i) for i in range(200)]
        await client.aclose()


async def test_fastapi_serve_refuses_an_accepted_websocket() -> None:
    server = neffos.Server(echo_events(), ping_interval=None)
    neffos_app = neffos.ASGIApp(server)
    problems: list[str] = []
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await neffos_app.serve(websocket)
        except RuntimeError as exc:
            problems.append(str(exc))
            await websocket.close()

    async with hosted(app) as host:
        with contextlib.suppress(neffos.DialError):
            await neffos.dial(host.url, {"v1": {}}, timeout=1 * UNIT)
        assert problems and "not accepted yet" in problems[0]
    await server.close()


@pytest.mark.parametrize("side", SERVER_SIDES)
async def test_a_client_leaving_before_the_101_logs_no_error(
    side: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = neffos.Server(echo_events(), ping_interval=None)
    async with contextlib.asynccontextmanager(serve_on)(side, server) as port:
        for _ in range(5):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(upgrade_request())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        client = await round_trip(f"ws://127.0.0.1:{port}/echo")  # served after them
        await client.aclose()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_an_other_app_needs_the_endpoints_path() -> None:
    server = neffos.Server(echo_events(), ping_interval=None)
    with pytest.raises(ValueError, match="path="):
        neffos.ASGIApp(server, lambda scope, receive, send: None)
