"""ASGI servers in the test's event loop: uvicorn and hypercorn on 127.0.0.1, port 0.

:func:`host` serves an ASGI application and gives back an :class:`AsgiHost`
with the URL of the WebSocket endpoint, like a neffos Listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

__all__ = ["AsgiHost", "host"]


class AsgiHost:
    """An ASGI server serving one application; ``close()`` stops it."""

    def __init__(
        self, kind: str, port: int, task: asyncio.Task[Any], stop: Any, sock: socket.socket
    ) -> None:
        self._sock = sock
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = port
        self.path = "/echo"
        self._task = task
        self._stop = stop

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self._stop()
        try:
            await asyncio.wait_for(self._task, 10)
        finally:
            self._sock.close()


async def host(app: Any, kind: str = "uvicorn", port: int = 0, **options: Any) -> AsgiHost:
    """Serve ``app`` until ``close()`` with ``kind``: "uvicorn" (its default WebSocket
    implementation, websockets-sansio), "uvicorn-wsproto" or "hypercorn"."""
    sock = _listening_socket(port)
    if kind == "uvicorn":
        return await _uvicorn(app, sock, **options)
    if kind == "uvicorn-wsproto":
        return await _uvicorn(app, sock, ws="wsproto", **options)
    if kind == "hypercorn":
        return await _hypercorn(app, sock, **options)
    raise ValueError(kind)


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # clients wait in the backlog until the server accepts
    return sock


async def _uvicorn(app: Any, sock: socket.socket, **options: Any) -> AsgiHost:
    import uvicorn

    options.setdefault("ws", "websockets-sansio")
    options.setdefault("lifespan", "on")
    config = uvicorn.Config(app, log_level="warning", loop="none", **options)
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    port = sock.getsockname()[1]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))

    def stop() -> None:
        server.should_exit = True

    return AsgiHost("uvicorn", int(port), task, stop, sock)


async def _hypercorn(app: Any, sock: socket.socket, **options: Any) -> AsgiHost:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes its own
    config.loglevel = "WARNING"
    config.accesslog = None
    for key, value in options.items():
        setattr(config, key, value)
    stopped = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve(app, config, shutdown_trigger=stopped.wait)  # type: ignore[arg-type]
    )
    return AsgiHost("hypercorn", int(port), task, stopped.set, sock)
