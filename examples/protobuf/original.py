"""The Go neffos protobuf example's protocol, in Python: a drop-in peer for it.

Go's example (``_examples/protobuf`` of kataras/neffos) sends a ``UserMessage``
(``user_message.proto``: ``Username``, ``Text``) as the body of the event
``chat`` in the namespace ``default`` of the endpoint ``/echo``; its server
passes every chat on, unchanged, to everyone else, and its clients print
``[<username>] says: <text>``. This server and client do the same, so they
mix with the Go server and Go clients of that example (``chat.proto`` and
``server.py``/``client.py`` next to this file are a richer chat of our own)::

    python examples/protobuf/original.py server              # ws://127.0.0.1:8080/echo
    python examples/protobuf/original.py client --user kim   # in other terminals

Needs ``pip install protobuf grpcio-tools`` (see ``schema.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from schema import DecodeError, load

import neffos

UserMessage = load(Path(__file__).resolve().with_name("user_message.proto"))["main.UserMessage"]
NAMESPACE = "default"


def on_chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
    if not ns.conn.is_client:
        server = ns.conn.server
        assert server is not None
        server.broadcast(ns, msg)  # to everyone else, the bytes unchanged (as Go does)
        return
    try:
        user = UserMessage.FromString(msg.body)
    except DecodeError:
        print(f"not a UserMessage: {msg.body!r}", flush=True)
        return
    print(f"[{user.Username}] says: {user.Text}", flush=True)


events = {NAMESPACE: {"chat": on_chat}}


async def run_server(host: str, port: int) -> None:
    server = neffos.Server(
        events,
        on_connect=lambda conn: print(f"[{conn.id}] connected to the server.", flush=True),
        on_disconnect=lambda conn: print(f"[{conn.id}] disconnected from the server.", flush=True),
    )
    async with server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()


async def run_client(url: str, user: str) -> None:
    async with neffos.dial(url, events) as client:
        ns = await client.connect(NAMESPACE)
        print("connected", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            text = line.rstrip("\n")
            if text == "exit":
                break
            if text:
                ns.emit("chat", UserMessage(Username=user, Text=text).SerializeToString())
        await ns.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="chat: stdin lines, 'exit' or Ctrl-D quits")
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    client.add_argument("--user", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port))
        else:
            try:
                asyncio.run(run_client(args.url, args.user))
            except neffos.NeffosError as exc:
                sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
