"""Chat rooms: join a room, talk to the others in it.

Every line a client types goes to its room; the server stamps it with the
sender's ID and broadcasts it to the other members of the room (never back to
the sender). The server also tells a room when someone joins or leaves it.
Connection IDs come from the ``X-Username`` header (``Server(id_generator=...)``),
so messages show who wrote them.

Run the server, then a few clients in other terminals::

    python examples/chat.py server                  # ws://127.0.0.1:8080/echo
    python examples/chat.py client --user kim       # joins the room "lobby"
    python examples/chat.py client --user lee --room lobby

In a client, type a line to say it, ``/join <room>`` to move to another room,
``/leave`` to leave the room, Ctrl-D to quit.

Options: ``server --host H --port P`` (``--port 0`` picks a free port),
``client --user NAME --room ROOM --url ws://H:P/echo`` (without ``--user``
the server picks a random ID).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import neffos


@dataclass
class ChatLine:
    sender: str
    text: str


# -- server ----------------------------------------------------------------------


def username(request: neffos.Request) -> str:
    """The connection's ID: the X-Username header, or a random one."""
    return request.headers.get("X-Username") or uuid.uuid4().hex[:8]


def relay(ns: neffos.NSConn, msg: neffos.Message) -> None:
    if ns.room(msg.room) is None:
        return  # only members may talk to a room
    line = ChatLine(sender=ns.conn.id, text=msg.text)
    ns.broadcast_others(neffos.Message(event="chat", room=msg.room, body=neffos.marshal(line)))


def on_joined(ns: neffos.NSConn, msg: neffos.Message) -> None:
    announce(ns, msg.room, f"{ns.conn.id} joined")


def on_left(ns: neffos.NSConn, msg: neffos.Message) -> None:
    announce(ns, msg.room, f"{ns.conn.id} left")  # also when the connection is lost


def announce(ns: neffos.NSConn, room: str, text: str) -> None:
    print(f"[{room}] {text}")
    ns.broadcast_others(neffos.Message(event="notice", room=room, body=text))


server_events = {
    "chat": {
        "chat": relay,
        neffos.ON_ROOM_JOINED: on_joined,
        neffos.ON_ROOM_LEFT: on_left,
    }
}


async def run_server(host: str, port: int) -> None:
    server = neffos.Server(
        server_events,
        id_generator=username,
        on_connect=lambda conn: print(f"{conn.id} connected"),
        on_disconnect=lambda conn: print(f"{conn.id} disconnected"),
    )
    async with server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


# -- client ----------------------------------------------------------------------


def show_chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
    line = msg.unmarshal(ChatLine)
    print(f"[{msg.room}] {line.sender}: {line.text}")


def show_notice(ns: neffos.NSConn, msg: neffos.Message) -> None:
    print(f"[{msg.room}] * {msg.text}")


client_events = {"chat": {"chat": show_chat, "notice": show_notice}}


async def run_client(url: str, user: str | None, room_name: str) -> None:
    headers = {"X-Username": user} if user else None
    async with neffos.dial(url, client_events, headers=headers) as client:
        print(f"connected as {client.id}")
        ns = await client.connect("chat")
        room = await join(ns, room_name) if room_name else None

        async for line in input_lines(until=client.wait_closed()):
            if line.startswith("/"):
                room = await command(ns, room, line)
            elif room is None:
                print("you are not in a room; type /join <room>")
            else:
                room.emit("chat", line)
        if client.is_closed:
            raise neffos.ConnectionClosed("the server closed the connection")


async def command(ns: neffos.NSConn, room: neffos.Room | None, line: str) -> neffos.Room | None:
    """Run ``/join <room>`` or ``/leave``; return the room we are in afterwards."""
    name, _, arg = line.partition(" ")
    if name not in ("/join", "/leave") or (name == "/join" and not arg.strip()):
        print("commands: /join <room>, /leave")
        return room
    if room is not None:
        await room.leave(timeout=5)
        print(f"left {room.name}")
    return await join(ns, arg.strip()) if name == "/join" else None


async def join(ns: neffos.NSConn, room_name: str) -> neffos.Room:
    room = await ns.join_room(room_name, timeout=5)
    print(f"joined {room.name}")
    return room


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
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the chat server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="chat from the terminal")
    client.add_argument("--user", help="your name, sent as the X-Username header")
    client.add_argument("--room", default="lobby", help='the room to join first ("": none)')
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    args = parser.parse_args()

    try:
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port))
        else:
            asyncio.run(run_client(args.url, args.user, args.room))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
