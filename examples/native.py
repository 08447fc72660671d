"""Native messages: any WebSocket client can talk to a neffos server.

A server whose only handler is ``_OnNativeMessage`` in the namespace ``""``
runs in *native-only* mode: no neffos handshake, no neffos framing. Every text
or binary frame a client sends arrives as a message with ``is_native`` set and
the raw frame as its body; a message written with ``is_native=True`` goes out
as a raw frame. This server answers every frame with ``echo back: <frame>``.

The client here is not neffos at all: it uses the ``websockets`` library
directly (``pip install neffos[websockets]``); a browser's ``new WebSocket(url)``
works just as well.

Run::

    python examples/native.py server                  # ws://127.0.0.1:8080/echo
    python examples/native.py client                  # type lines, Ctrl-D to quit
    printf 'ping\\n' | python examples/native.py client

Options: ``server --host H --port P`` (``--port 0`` picks a free port),
``client --url ws://H:P/echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator

import neffos


def on_native(ns: neffos.NSConn, msg: neffos.Message) -> None:
    print(f"[{ns.conn.id}] {msg.text}")
    # Returning a value would not answer a native frame: write one explicitly.
    ns.conn.write(neffos.Message(body=b"echo back: " + msg.body, is_native=True))


events = {"": {neffos.ON_NATIVE_MESSAGE: on_native}}  # native-only mode


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
    try:
        from websockets.asyncio.client import connect  # a plain WebSocket client
    except ImportError:
        sys.exit("this client needs the websockets library: pip install neffos[websockets]")

    async with connect(url) as websocket:
        async for line in input_lines():
            await websocket.send(line)
            print(await websocket.recv())


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
    server = modes.add_parser("server", help="run the native echo server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="send stdin lines with a plain WebSocket client")
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    args = parser.parse_args()

    try:
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port))
        else:
            asyncio.run(run_client(args.url))
    except KeyboardInterrupt:
        pass
    except (OSError, neffos.NeffosError) as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
