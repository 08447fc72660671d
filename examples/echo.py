"""Getting started: an echo server and its client, in one file.

The server knows one namespace, ``v1``, with one event, ``echo``: it answers
every message with ``echo back: <text>``. The client dials the server, connects
to ``v1`` and emits ``echo`` for every line you type (or pipe in); the answers
come back as ``echo`` events and are printed. Both sides use the same event
table; ``ns.conn.is_client`` tells them apart. (To wait for an answer in place
instead, use ``reply = await ns.ask("echo", line)``; see workday.py.)

Run the server, then one or more clients in other terminals::

    python examples/echo.py server                  # ws://127.0.0.1:8080/echo
    python examples/echo.py client                  # type lines, Ctrl-D to quit
    printf 'hi\\nthere\\n' | python examples/echo.py client

Options: ``server --host 0.0.0.0 --port 9000`` (``--port 0`` picks a free
port and prints it), ``client --url ws://127.0.0.1:9000/echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator

import neffos


def on_echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes | None:
    if ns.conn.is_client:
        print(msg.text)  # the server's answer
        return None
    print(f"[{ns.conn.id}] {msg.text}")
    return b"echo back: " + msg.body  # goes back to the client as an "echo" event


events = {"v1": {"echo": on_echo}}


async def run_server(host: str, port: int) -> None:
    server = neffos.Server(
        events,
        on_connect=lambda conn: print(f"[{conn.id}] connected"),
        on_disconnect=lambda conn: print(f"[{conn.id}] disconnected"),
    )
    async with server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


async def run_client(url: str) -> None:
    async with neffos.dial(url, events) as client:
        ns = await client.connect("v1")
        async for line in input_lines():
            ns.emit("echo", line)
        # The server answers the disconnection after the echoes that it sent
        # before, so when this returns every echo has been printed.
        await ns.disconnect()


# -- plumbing --------------------------------------------------------------------


async def input_lines() -> AsyncIterator[str]:
    """The lines typed on (or piped into) stdin, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:  # a daemon thread, so that Ctrl-C never waits for it
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    while (line := await queue.get()) is not None:
        if line:
            yield line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="send stdin lines to the server")
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    args = parser.parse_args()

    try:
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port))
        else:
            asyncio.run(run_client(args.url))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
