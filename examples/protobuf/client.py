"""A chat whose messages are protocol buffers: the terminal client.

Each line you type (or pipe in) becomes a protobuf ``Post`` (chat.proto), sent
as a binary neffos message: ``ns.emit_binary("post", post.SerializeToString())``.
The server relays every post to everybody as a ``ChatLine``, yours included,
and tells the others when someone joins or leaves; each line is decoded from
``msg.body`` and printed with its local time and its number::

    connected as kim
    14:02:11 #2 * lee joined
    14:02:15 #3 kim: hi @lee
    14:02:20 #4 lee: hello kim  (mentions you)
    14:02:31 #5 * lee left

Start server.py first, then one client per user, each in its own terminal::

    python examples/protobuf/client.py --user kim
    printf 'hi @lee\\n' | python examples/protobuf/client.py --user lee

Ctrl-D quits. Options: ``--url ws://H:P/echo`` (default ws://127.0.0.1:8080/echo),
``--user NAME`` (sent as the ``X-Username`` header; without it the server picks
a random ID). Needs ``pip install protobuf grpcio-tools``, as the server does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import sys
import threading
from collections.abc import AsyncIterator, Awaitable

from schema import ChatLine, Post

import neffos


def show_line(ns: neffos.NSConn, msg: neffos.Message) -> None:
    """A ChatLine from the server: decode the binary body, print one line."""
    line = ChatLine.FromString(msg.body)
    at = line.sent_at.ToDatetime(tzinfo=datetime.UTC).astimezone().strftime("%H:%M:%S")
    if line.kind == ChatLine.KIND_POST:
        note = "  (mentions you)" if ns.conn.id in line.mentions else ""
        print(f"{at} #{line.seq} {line.user}: {line.text}{note}", flush=True)
    else:
        what = "joined" if line.kind == ChatLine.KIND_JOINED else "left"
        print(f"{at} #{line.seq} * {line.user} {what}", flush=True)


def show_refusal(ns: neffos.NSConn, msg: neffos.Message) -> None:
    """The server answered a post with an error (``bad post: ...``)."""
    if msg.err is not None:
        print(f"refused: {msg.err}", flush=True)


events = {"chat": {"chat": show_line, "post": show_refusal}}


async def run_client(url: str, user: str | None) -> None:
    headers = {"X-Username": user} if user else None
    async with neffos.dial(url, events, headers=headers) as client:
        ns = await client.connect("chat")
        print(f"connected as {client.id}", flush=True)
        async for text in input_lines(until=client.wait_closed()):
            ns.emit_binary("post", Post(text=text).SerializeToString())
        if client.is_closed:
            raise neffos.ConnectionClosed("the server closed the connection")
        # The server handles the disconnection after the posts sent before it,
        # so by the time this returns their lines have been printed.
        await ns.disconnect()


# -- plumbing --------------------------------------------------------------------


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
    args = parser.parse_args()
    try:
        asyncio.run(run_client(args.url, args.user))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
