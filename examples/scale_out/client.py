"""A chat client for examples/scale_out/server.py: join a room, type lines.

Connect to any of the servers; people in the same room hear each other
whichever server they are connected to::

    python examples/scale_out/client.py --url ws://127.0.0.1:8080/echo --user kim
    python examples/scale_out/client.py --url ws://127.0.0.1:8081/echo --user lee

Each line you type goes to the room (``--room``, default ``lobby``); lines from
others show as ``[room] sender@server: text``. Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import neffos


@dataclass
class ChatLine:
    sender: str
    server: str
    text: str


def show_chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
    line = msg.unmarshal(ChatLine)
    print(f"[{msg.room}] {line.sender}@{line.server}: {line.text}", flush=True)


def show_notice(ns: neffos.NSConn, msg: neffos.Message) -> None:
    print(f"[{msg.room}] * {msg.text}", flush=True)


events = {"chat": {"chat": show_chat, "notice": show_notice}}


async def run_client(url: str, user: str | None, room_name: str) -> None:
    headers = {"X-Username": user} if user else None
    async with neffos.dial(url, events, headers=headers) as client:
        print(f"connected as {client.id}", flush=True)
        ns = await client.connect("chat")
        room = await ns.join_room(room_name, timeout=5)
        print(f"joined {room.name}", flush=True)
        async for line in input_lines(until=client.wait_closed()):
            room.emit("chat", line)
        if client.is_closed:
            raise neffos.ConnectionClosed("the server closed the connection")


async def input_lines(until: Awaitable[object]) -> AsyncIterator[str]:
    """The lines typed on (or piped into) stdin, until EOF or until ``until`` is done."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:  # a daemon thread, so that Ctrl-C never waits for it
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.strip())
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    stop = asyncio.ensure_future(until)
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                return
            line = get.result()
            if line is None:
                return
            if line:
                yield line
    finally:
        stop.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    parser.add_argument("--user", help="your name, sent as the X-Username header")
    parser.add_argument("--room", default="lobby")
    args = parser.parse_args()
    try:
        asyncio.run(run_client(args.url, args.user, args.room))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
