"""Scale-out: one chat application on several server processes sharing a bus.

Each server is the chat server of examples/chat.py plus one line,
``server.use_stack_exchange(...)``: a broadcast reaches the clients of every
server that uses the same Redis (or NATS) and the same prefix, so people on
different servers share rooms. Lines are stamped with the sender's server.

    redis-server --port 6379
    python examples/scale_out/server.py --port 8080 --redis 127.0.0.1:6379
    python examples/scale_out/server.py --port 8081 --redis 127.0.0.1:6379
    python examples/scale_out/client.py --url ws://127.0.0.1:8080/echo --user kim
    python examples/scale_out/client.py --url ws://127.0.0.1:8081/echo --user lee

With NATS: ``--nats nats://127.0.0.1:4222`` instead of ``--redis``. ``--prefix``
is the channel (Redis) or subject (NATS) prefix; servers that must see each
other use the same one. Go neffos servers with the same bus and prefix join in.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from dataclasses import dataclass

import neffos
from neffos.exchange import StackExchange


@dataclass
class ChatLine:
    sender: str
    server: str  # which server the sender is connected to
    text: str


NODE = {"name": ""}  # this server's name in chat lines (its port by default)


def username(request: neffos.Request) -> str:
    return request.headers.get("X-Username") or uuid.uuid4().hex[:8]


def relay(ns: neffos.NSConn, msg: neffos.Message) -> None:
    if ns.room(msg.room) is None:
        return  # only members may talk to a room
    line = ChatLine(sender=ns.conn.id, server=NODE["name"], text=msg.text)
    # To the room on every server, except the sender.
    ns.broadcast_others(neffos.Message(event="chat", room=msg.room, body=neffos.marshal(line)))


def on_joined(ns: neffos.NSConn, msg: neffos.Message) -> None:
    announce(ns, msg.room, f"{ns.conn.id} joined on {NODE['name']}")


def on_left(ns: neffos.NSConn, msg: neffos.Message) -> None:
    announce(ns, msg.room, f"{ns.conn.id} left")


def announce(ns: neffos.NSConn, room: str, text: str) -> None:
    print(f"[{room}] {text}", flush=True)
    ns.broadcast_others(neffos.Message(event="notice", room=room, body=text))


events = {
    "chat": {
        "chat": relay,
        neffos.ON_ROOM_JOINED: on_joined,
        neffos.ON_ROOM_LEFT: on_left,
    }
}


def bus(args: argparse.Namespace) -> StackExchange:
    if args.nats:
        from neffos.exchange.nats import NatsStackExchange

        return NatsStackExchange(args.nats, subject_prefix=args.prefix or "neffos")
    from neffos.exchange.redis import RedisStackExchange

    return RedisStackExchange(args.redis, channel_prefix=args.prefix or "MyChatApp")


async def run_server(args: argparse.Namespace) -> None:
    exchange = bus(args)
    server = neffos.Server(
        events,
        id_generator=username,
        on_connect=lambda conn: print(f"{conn.id} connected", flush=True),
        on_disconnect=lambda conn: print(f"{conn.id} disconnected", flush=True),
    )
    server.use_stack_exchange(exchange)  # before the server starts
    try:
        async with server:  # connects to the broker first
            listener = await server.listen(args.host, args.port, path="/echo")
            NODE["name"] = args.name or str(listener.port)
            print(f"listening on {listener.url}", flush=True)
            print(f"sharing rooms over {exchange!r}", flush=True)
            await asyncio.Event().wait()  # serve until Ctrl-C
    finally:
        # pub/sub is at-most-once: what could not be published is counted here
        stats = exchange.stats
        print(f"bus: {stats.published} published, {stats.publish_failed} lost, "
              f"{stats.received} received, {stats.reconnects} reconnection(s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    broker = parser.add_mutually_exclusive_group()
    broker.add_argument("--redis", default="127.0.0.1:6379", metavar="HOST:PORT",
                        help="the Redis server (default %(default)s)")
    broker.add_argument("--nats", metavar="URL", help="a NATS server, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--prefix", help="channel/subject prefix (MyChatApp / neffos)")
    parser.add_argument("--name", help="this server's name in chat lines (default: its port)")
    args = parser.parse_args()
    # reconnections and losses of the bus are logged as warnings
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    try:
        asyncio.run(run_server(args))
    except KeyboardInterrupt:
        pass
    except ConnectionError as exc:  # the broker cannot be reached at start
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
