"""One port for pages, a REST route and the neffos endpoint: FastAPI or aiohttp.

The application serves a page at ``/``, ``/api/stats`` (JSON: the number of
neffos connections) and the echo endpoint of ``echo.py`` at ``/echo``, so
``echo.py``'s client (or neffos.js) talks to it unchanged::

    python examples/web_app.py server                   # FastAPI under uvicorn, port 8080
    python examples/web_app.py server --stack aiohttp   # an aiohttp application
    python examples/echo.py client                      # then type lines
    curl http://127.0.0.1:8080/api/stats

``--port 0`` picks a free port and prints it. FastAPI needs ``pip install
fastapi uvicorn``; aiohttp needs ``pip install 'neffos[aiohttp]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import neffos

PAGE = "<!doctype html><title>neffos</title><p>The WebSocket endpoint is /echo."


def on_echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
    return b"echo back: " + msg.body


server = neffos.Server({"v1": {"echo": on_echo}})


def stats() -> dict[str, Any]:
    return {"connections": server.get_total_connections()}


def fastapi_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with server:  # closes every connection when the app stops
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/", lambda: HTMLResponse(PAGE))
    app.add_api_route("/api/stats", stats)
    app.router.add_websocket_route("/echo", neffos.ASGIApp(server))
    return app


async def run_fastapi(host: str, port: int) -> None:
    import uvicorn

    sock = socket.create_server((host, port))
    print(f"listening on ws://{host}:{sock.getsockname()[1]}/echo", flush=True)
    config = uvicorn.Config(fastapi_app(), log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


async def run_aiohttp(host: str, port: int) -> None:
    from aiohttp import web

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def api_stats(request: web.Request) -> web.Response:
        return web.json_response(stats())

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/stats", api_stats)
    neffos.attach_aiohttp(app, server, "/echo")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"listening on ws://{host}:{runner.addresses[0][1]}/echo", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    serve = modes.add_parser("server", help="run the web application")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    serve.add_argument("--stack", choices=["fastapi", "aiohttp"], default="fastapi")
    args = parser.parse_args()
    run = run_fastapi if args.stack == "fastapi" else run_aiohttp
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.host, args.port))


if __name__ == "__main__":
    main()
