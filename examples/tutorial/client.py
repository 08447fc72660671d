"""The terminal client of the tutorial (docs/tutorial.md): chat with the browser users.

    python examples/tutorial/client.py --name kim
    python examples/tutorial/client.py --name lee --url ws://127.0.0.1:8080/chat

Type a line to say it, /who to see who is here, Ctrl-D (or Ctrl-C) to quit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator

import neffos


# --8<-- [start:handlers]
def show_message(ns: neffos.NSConn, msg: neffos.Message) -> None:
    line = msg.unmarshal()  # {"from": ..., "text": ...}
    print(f"{line['from']}: {line['text']}", flush=True)


def show_notice(ns: neffos.NSConn, msg: neffos.Message) -> None:
    print(f"* {msg.text}", flush=True)


events = {"chat": {"message": show_message, "notice": show_notice}}
# --8<-- [end:handlers]


# --8<-- [start:chat]
async def chat(url: str, name: str) -> None:
    headers = {"X-Username": name}
    async with neffos.dial(url, events, headers=headers, reconnect=True) as conn:
        ns = await conn.connect("chat")
        await show_who(ns)
        async for line in typed_lines():
            if line == "/who":
                await show_who(ns)
            elif line and not ns.emit("say", line):
                print("(not sent: reconnecting)", flush=True)


async def show_who(ns: neffos.NSConn) -> None:
    reply = await ns.ask("who", timeout=5)
    print("here:", ", ".join(reply.unmarshal()), flush=True)
# --8<-- [end:chat]


async def typed_lines() -> AsyncIterator[str]:
    """The lines typed on stdin (read by a thread, so the event loop never waits)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    while (line := await lines.get()) is not None:
        yield line


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the tutorial's terminal chat client")
    parser.add_argument("--name", required=True, help="your name in the chat")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/chat")
    args = parser.parse_args()
    try:
        asyncio.run(chat(args.url, args.name))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # the server is not there, refused us, ...
        sys.exit(f"error: {exc}")
