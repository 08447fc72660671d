"""The demo chat server: the Go neffos "basic" example, with its browser page, on one port.

What it speaks is the original's, so the same page works against either server:
the endpoint ``/echo``, the namespace ``default``, rooms that clients choose,
the event ``chat`` with the JSON body ``{"from": ..., "text": ...}`` sent to the
others in the sender's room (to the whole namespace outside a room), and the
event ``notify`` with a line of text when someone joins or leaves a room
(leaving includes disconnecting). The ``X-Username`` header (for browsers, the
``X-Websocket-Header-X-Username`` query parameter) becomes the connection ID.

Two things are stricter than the original: a ``chat`` message reaches a room
only from a member of it, and its ``from`` is set to the sender's connection ID
(a client cannot speak under another name).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import neffos

from .assets import PageFiles, page_files, prepare_neffos_js

__all__ = [
    "ENDPOINT", "NAMESPACE", "Demo", "DemoPages", "chat_line", "connection_id", "run", "start",
]

ENDPOINT = "/echo"
NAMESPACE = "default"

Say = Callable[[str], object]
#: ``(status, headers, body)``: what ``Server.listen(pages=...)`` answers with
Answer = tuple[int, list[tuple[str, str]], bytes]


class NameTaken(Exception):
    """A second connection asked for a name that is connected already."""


def say_line(line: str) -> None:
    """Print one line at once (the demo's output is read by people and by tests)."""
    print(line, flush=True)


def connection_id(request: neffos.Request) -> str:
    """The ``X-Username`` header, or a random ID when there is none."""
    name = (request.headers.get("X-Username") or "").strip()
    return name or uuid.uuid4().hex[:8]


# -- the chat ------------------------------------------------------------------------


def chat_events(say: Say) -> dict[str, dict[str, Callable[..., Any]]]:
    """The server's handler of the namespace ``default``; ``say`` gets the server's log lines."""

    def relay(ns: neffos.NSConn, msg: neffos.Message) -> None:
        if msg.room and ns.room(msg.room) is None:
            return  # a room hears only its members
        line = chat_line(msg.body)
        if line is None:
            say(f"[{ns.conn.id}] sent a chat message without a text: dropped")
            return
        body = neffos.marshal({"from": ns.conn.id, "text": line[1]})
        ns.broadcast_others(neffos.Message(event="chat", room=msg.room, body=body))

    def joined(ns: neffos.NSConn, msg: neffos.Message) -> None:
        notify(ns, msg.room, f"[{ns.conn.id}] joined to room [{msg.room}].")

    def left(ns: neffos.NSConn, msg: neffos.Message) -> None:
        notify(ns, msg.room, f"[{ns.conn.id}] left from room [{msg.room}].")

    def notify(ns: neffos.NSConn, room: str, text: str) -> None:
        say(text)
        ns.broadcast_others(neffos.Message(event="notify", room=room, body=text))

    def connected(ns: neffos.NSConn, msg: neffos.Message) -> None:
        say(f"[{ns.conn.id}] connected to namespace [{msg.namespace}].")

    def disconnected(ns: neffos.NSConn, msg: neffos.Message) -> None:
        say(f"[{ns.conn.id}] disconnected from namespace [{msg.namespace}].")

    return {
        NAMESPACE: {
            "chat": relay,
            neffos.ON_ROOM_JOINED: joined,
            neffos.ON_ROOM_LEFT: left,  # also fired when the connection is lost
            neffos.ON_NAMESPACE_CONNECTED: connected,
            neffos.ON_NAMESPACE_DISCONNECT: disconnected,
        }
    }


def chat_line(body: bytes) -> tuple[str, str] | None:
    """``(from, text)`` of a ``{"from": ..., "text": ...}`` body, or ``None`` if it is not one."""
    try:
        decoded = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("text"), str):
        return None
    sender = decoded.get("from")
    return (sender if isinstance(sender, str) else ""), decoded["text"]


# -- the page --------------------------------------------------------------------------

_PLAIN = "text/plain; charset=utf-8"


class DemoPages:
    """``pages(request)`` for ``Server.listen``: the page, its script and neffos.js."""

    def __init__(self, files: PageFiles) -> None:
        # path -> (status, content type, body); everything is in memory
        if files.neffos_js is None:
            missing = (
                b"This demo runs without its browser page: neffos.js could not be installed "
                b"from npm (the terminal that runs the demo says why).\n"
                b"Chat from a terminal: python -m neffos demo client --room lobby --user kim\n"
            )
            index = (503, _PLAIN, missing)
            script = (404, _PLAIN, b"neffos.js is not installed\n")
        else:
            index = (200, "text/html; charset=utf-8", files.index_html)
            script = (200, "text/javascript; charset=utf-8", files.neffos_js)
        self._routes: dict[str, tuple[int, str, bytes]] = {
            "/": index,
            "/index.html": index,
            "/app.js": (200, "text/javascript; charset=utf-8", files.app_js),
            "/neffos.js": script,
        }

    def __call__(self, request: neffos.Request) -> Answer | None:
        route = self._routes.get(request.path)
        if route is None:
            return None  # the server's own 404
        status, content_type, body = route
        if request.method not in ("GET", "HEAD"):
            allow = [("Allow", "GET, HEAD"), ("Content-Type", _PLAIN)]
            return 405, allow, b"405 method not allowed\n"
        headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        return status, headers, b"" if request.method == "HEAD" else body


# -- running it ------------------------------------------------------------------------


class Demo:
    """A running demo server (from :func:`start`); closes with ``async with`` or :meth:`aclose`."""

    def __init__(self, server: neffos.Server, listener: neffos.Listener) -> None:
        #: the neffos server
        self.server = server
        #: its listener: the page and the endpoint, on one port
        self.listener = listener

    @property
    def page_url(self) -> str:
        """``http://host:port/``, with a host that a browser can open."""
        return f"http://{self._shown_host()}:{self.listener.port}/"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/echo``."""
        return f"ws://{self._shown_host()}:{self.listener.port}{ENDPOINT}"

    def _shown_host(self) -> str:
        host = self.listener.host
        if host in ("0.0.0.0", "::"):  # every interface: this machine's own name works
            return "127.0.0.1" if host == "0.0.0.0" else "[::1]"
        return f"[{host}]" if ":" in host else host

    async def aclose(self) -> None:
        await self.listener.close()
        await self.server.close()

    async def __aenter__(self) -> Demo:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def start(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    neffos_js: Path | None,
    transport: str | None = None,
    say: Say = say_line,
) -> Demo:
    """Serve the demo: the page at ``/`` and the endpoint at ``/echo``, on one port.

    ``neffos_js`` is the browser build of neffos.js (from
    :func:`~neffos.demo.assets.prepare_neffos_js`); without it ``/`` explains
    how to get the page. One process, no broker.

    Raises:
        OSError: the address is in use or cannot be bound.
    """

    def connected(conn: neffos.Conn) -> None:
        server = conn.server
        if server is not None and len(server.get_connections_by_id(conn.id)) > 1:
            # IDs need not be unique in neffos; in this chat a name is one person
            raise NameTaken(f"the name {conn.id} is taken: choose another")
        say(f"[{conn.id}] connected.")

    def disconnected(conn: neffos.Conn) -> None:
        say(f"[{conn.id}] disconnected.")

    server = neffos.Server(
        chat_events(say), id_generator=connection_id, on_connect=connected,
        on_disconnect=disconnected,
    )
    try:
        listener = await server.listen(
            host, port, path=ENDPOINT, transport=transport, pages=DemoPages(page_files(neffos_js))
        )
    except BaseException:
        await server.close()
        raise
    return Demo(server, listener)


async def run(
    host: str, port: int, *, cache_dir: Path, npm: str = "npm", say: Say = say_line
) -> None:
    """``python -m neffos demo``: install neffos.js if needed, then serve until cancelled."""
    neffos_js = await prepare_neffos_js(cache_dir, npm=npm, say=say)
    async with await start(host, port, neffos_js=neffos_js, say=say) as demo:
        say(f"Demo chat on {demo.page_url} (WebSocket endpoint {demo.ws_url}); Ctrl-C stops it")
        if neffos_js is not None:
            say(f"Open {demo.page_url} in two browser tabs, pick a name and a room in each, chat")
        say(
            "Chat from a terminal: python -m neffos demo client --room lobby --user kim"
            f" --url {demo.ws_url}"
        )
        await asyncio.Event().wait()
