"""The chat server of the tutorial (docs/tutorial.md builds it step by step).

Everyone who connects to the namespace "chat" is in one conversation: what one
says, all see, with the sender's name; the others are told when someone comes
or goes, and "who" answers with the names of everyone connected. The server
also serves the browser page, index.html, on the same port.

    python examples/tutorial/server.py              # http://127.0.0.1:8080/
    python examples/tutorial/server.py --port 0     # any free port (printed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import neffos


# --8<-- [start:handlers]
def user_name(request: neffos.Request) -> str:
    """The connection's ID: the name the client sends as the X-Username header."""
    return request.headers.get("X-Username", "").strip() or "anonymous"


def on_connected(ns: neffos.NSConn, msg: neffos.Message) -> None:
    ns.broadcast_others(neffos.Message(event="notice", body=f"{ns.conn.id} joined"))


def on_disconnect(ns: neffos.NSConn, msg: neffos.Message) -> None:
    ns.broadcast_others(neffos.Message(event="notice", body=f"{ns.conn.id} left"))


def say(ns: neffos.NSConn, msg: neffos.Message) -> None:
    text = msg.text.strip()
    if text:
        line = {"from": ns.conn.id, "text": text}
        ns.broadcast(neffos.Message(event="message", body=neffos.marshal(line)))


def who(ns: neffos.NSConn, msg: neffos.Message) -> list[str]:
    everyone = ns.conn.server.get_connections_by_namespace("chat")
    return sorted({other.conn.id for other in everyone})  # the reply, as JSON


events = {
    "chat": {
        neffos.ON_NAMESPACE_CONNECTED: on_connected,
        neffos.ON_NAMESPACE_DISCONNECT: on_disconnect,
        "say": say,
        "who": who,
    }
}
# --8<-- [end:handlers]

# --8<-- [start:page]
PAGE = (Path(__file__).parent / "index.html").read_bytes()


def pages(request: neffos.Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """Plain HTTP next to the endpoint: the chat page at "/", 404 elsewhere."""
    if request.path == "/":
        return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE
    return None
# --8<-- [end:page]


# --8<-- [start:main]
async def main(host: str, port: int) -> None:
    server = neffos.Server(events, id_generator=user_name)
    async with server:  # closes every connection on the way out
        listener = await server.listen(host, port, path="/chat", pages=pages)
        print(f"chat on http://{host}:{listener.port}/ (endpoint {listener.url})", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the tutorial's chat server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a quiet stop
        asyncio.run(main(args.host, args.port))
# --8<-- [end:main]
