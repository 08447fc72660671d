"""The demo's terminal client: chat with the browser users of the demo page.

Each line typed on standard input goes to the room as a ``chat`` event; the
``chat`` and ``notify`` events of the others are printed, one line each. The
lines ``/leave`` and ``/join ROOM`` move between rooms; end of input (Ctrl-D)
quits. It speaks to the Go neffos "basic" example's server just as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

import neffos

from .server import NAMESPACE, chat_line, say_line

__all__ = ["DEFAULT_URL", "ChatClient", "client_events", "run_client", "text_lines"]

DEFAULT_URL = "ws://127.0.0.1:8080/echo"

Say = Callable[[str], object]


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes: what others typed
    must not move the cursor, recolour or clear the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def client_events(say: Say) -> dict[str, dict[str, Callable[..., Any]]]:
    """What the client shows: the others' chat lines and notices, its own joins and leaves."""

    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        line = chat_line(msg.body)
        sender, text = line if line is not None else ("?", msg.text)
        where = f"[{printable(msg.room)}] " if msg.room else ""
        say(f"{where}{printable(sender)}: {printable(text)}")

    def notify(ns: neffos.NSConn, msg: neffos.Message) -> None:
        say(printable(msg.text))

    def joined(ns: neffos.NSConn, msg: neffos.Message) -> None:
        say(f"joined room {msg.room}")

    def left(ns: neffos.NSConn, msg: neffos.Message) -> None:
        say(f"left room {msg.room}")

    return {
        NAMESPACE: {
            "chat": chat,
            "notify": notify,
            neffos.ON_ROOM_JOINED: joined,
            neffos.ON_ROOM_LEFT: left,
        }
    }


class ChatClient:
    """One user in the demo chat: a connection, its namespace and the room it is in."""

    def __init__(self, ns: neffos.NSConn, say: Say) -> None:
        #: the connection to the namespace ``default``
        self.ns = ns
        #: the room we are in (``None``: none); changed by :meth:`join` and :meth:`leave`
        self.room: neffos.Room | None = None
        self._say = say

    async def join(self, name: str) -> None:
        if self.room is not None:
            await self.leave()
        self.room = await self.ns.join_room(name, timeout=10)

    async def leave(self) -> None:
        room, self.room = self.room, None
        if room is None:
            self._say("you are in no room")
        else:
            await room.leave(timeout=10)

    def say(self, text: str) -> None:
        """Send a chat line to the room (outside a room: to the whole namespace)."""
        body = neffos.marshal({"from": self.ns.conn.id, "text": text})
        target = self.room if self.room is not None else self.ns
        if not target.emit("chat", body):
            self._say("not sent: the connection is closed")

    async def handle(self, line: str) -> None:
        """One input line: a command or a chat line."""
        command, _, argument = line.partition(" ")
        if command == "/leave":
            await self.leave()
        elif command == "/join" and argument.strip():
            await self.join(argument.strip())
        elif command in ("/join", "/help"):
            self._say("commands: /join ROOM, /leave; end of input (Ctrl-D) quits")
        else:
            self.say(line)


async def run_client(
    url: str,
    user: str,
    room: str,
    *,
    lines: AsyncIterator[str] | None = None,
    say: Say = say_line,
) -> None:
    """Chat as ``user`` in ``room`` until ``lines`` (default: standard input) ends.

    Raises:
        neffos.NeffosError: the server cannot be reached, refused us, or closed
            the connection.
    """
    events = client_events(say)
    async with neffos.dial(url, events, headers={"X-Username": user}, timeout=10) as conn:
        client = ChatClient(await conn.connect(NAMESPACE, timeout=10), say)
        say(f"connected to {url} as {conn.id}: type to chat, /leave, /join ROOM; Ctrl-D quits")
        if room:
            await client.join(room)
        source = lines if lines is not None else text_lines(sys.stdin)
        async for line in until_done(source, conn.wait_closed()):
            await client.handle(line)
        if conn.is_closed:
            raise neffos.ConnectionClosed("the server closed the connection")


async def until_done(source: AsyncIterator[str], done: Awaitable[object]) -> AsyncIterator[str]:
    """The items of ``source`` until it ends or ``done`` completes, whichever is first."""
    stop = asyncio.ensure_future(done)
    try:
        while True:
            item = asyncio.ensure_future(anext(source))
            await asyncio.wait({item, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                return
            try:
                value = item.result()
            except StopAsyncIteration:
                return
            yield value
    finally:
        stop.cancel()


async def text_lines(stream: TextIO) -> AsyncIterator[str]:
    """The non-empty lines of a blocking text stream (stdin), read in a daemon thread.

    A daemon thread, because a blocking read cannot be interrupted: Ctrl-C or
    a lost connection must end the client without waiting for one more line.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def post(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        try:
            for raw in stream:
                post(raw.rstrip("\r\n"))
        finally:
            post(None)

    threading.Thread(target=read, name="neffos-demo-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        if line.strip():
            yield line.strip()
