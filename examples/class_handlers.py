"""Class-based handlers: methods of objects become events (``neffos.from_object``).

Two shapes, both in the namespace ``v1`` of one server:

* ``Session`` has a ``conn`` attribute, so it is a *per-connection* handler:
  every connection gets its own shallow copy of the prototype (with ``conn``
  set to its ``NSConn``) and methods take ``(self, msg)``. The copy keeps the
  connection's state, here a message counter. Fields set on the prototype are
  shared by all copies (``stats`` below), so mutable state that belongs to one
  connection must be created per copy, never on the prototype.
* ``Stats`` has no ``conn``: one *shared* object serves every connection and
  its methods take ``(self, ns, msg)``.

``event_matcher=neffos.event_trim_prefix_matcher("on_")`` turns ``on_chat``
into the event ``chat`` and skips methods without the prefix. Methods named
after a system event (``on_namespace_connected``, ``on_namespace_disconnect``,
``on_room_joined``...) handle that event.

Run::

    python examples/class_handlers.py server          # ws://127.0.0.1:8080/echo
    python examples/class_handlers.py client          # type lines, Ctrl-D to quit
    printf 'hi\\nthere\\n' | python examples/class_handlers.py client

    #1 hi
    #2 there
    stats: 2 messages in total, 1 connection(s) now

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


class Stats:
    """Shared by all connections: methods take ``(self, ns, msg)``."""

    def __init__(self) -> None:
        self.messages = 0

    def on_stats(self, ns: neffos.NSConn, msg: neffos.Message) -> str:
        server = ns.conn.server
        assert server is not None
        online = len(server.get_connections_by_namespace(ns.namespace))
        return f"{self.messages} messages in total, {online} connection(s) now"


class Session:
    """One copy per connection: methods take ``(self, msg)``; ``self.conn`` is the NSConn."""

    conn: neffos.NSConn

    def __init__(self, stats: Stats) -> None:
        self.stats = stats  # set on the prototype: every copy shares this object
        self.count = 0  # an int is replaced, never mutated: each copy counts alone

    def on_namespace_connected(self, msg: neffos.Message) -> None:
        print(f"[{self.conn.conn.id}] connected to {msg.namespace}")

    def on_namespace_disconnect(self, msg: neffos.Message) -> None:
        print(f"[{self.conn.conn.id}] left after {self.count} message(s)")

    def on_chat(self, msg: neffos.Message) -> str:
        self.count += 1
        self.stats.messages += 1
        return f"#{self.count} {msg.text}"

    def helper(self) -> None:
        """Not an event: the matcher only takes methods that start with "on_"."""


async def run_server(host: str, port: int) -> None:
    stats = Stats()
    on = neffos.event_trim_prefix_matcher("on_")
    handler = neffos.join_conn_handlers(  # both fill the namespace "v1"
        neffos.from_object(Session(stats), namespace="v1", event_matcher=on),
        neffos.from_object(stats, namespace="v1", event_matcher=on),
    )
    async with neffos.Server(handler) as server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


async def run_client(url: str) -> None:
    async with neffos.dial(url, {"v1": {}}) as client:
        ns = await client.connect("v1")
        async for line in input_lines():
            reply = await ns.ask("chat", line, timeout=5)
            print(reply.text)
        reply = await ns.ask("stats", timeout=5)
        print(f"stats: {reply.text}")


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
    server = modes.add_parser("server", help="run the server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="send stdin lines, then ask for the stats")
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
