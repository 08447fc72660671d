"""Benchmark targets, each run as its own process: ``python bench/servers.py <target>``.

Targets:

* ``neffos``   - our server (``--transport picows|websockets|aiohttp``): namespace
  ``bench`` with ``echo`` (answers the ask with the body) and ``chat``
  (broadcast to the room, excluding the sender);
* ``ceiling``  - the raw picows library doing the same work with no framework, and
  with the two tricks neffos uses for fan-out: a chat frame is framed once for all
  the others, and a peer's first frame of a loop turn is written at once (straight
  to the socket when nothing waits, as picows does) while the frames that follow it
  in the same turn leave together in one write; echo answers go out the same way;
* ``ceiling-plain`` - raw picows the plain way: ``transport.send`` per frame (picows
  frames and writes each one), the ceiling of the benchmark issue;
* ``socketio`` - python-socketio (AsyncServer on aiohttp, what a Python user picks
  today) with the same events;
* ``neffos --transport asgi`` and ``socketio-asgi`` - the same two servers as ASGI
  applications under uvicorn (uvloop, httptools, websockets-sansio), side by side.

Each prints ``PORT <n>`` once it listens, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

# ``--src DIR`` runs another checkout's neffos (``run.py --baseline REF``), so a
# change and its baseline are measured in one run.
_SRC = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else os.path.join(
    os.path.dirname(__file__), "..", "src"
)
sys.path.insert(0, _SRC)


async def serve_neffos(args: argparse.Namespace) -> None:
    import neffos

    def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        return msg.body

    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server.broadcast(ns, msg)

    server = neffos.Server(
        {"bench": {"echo": echo, "chat": chat}},
        transport=args.transport,
        send_buffer=16 << 20,
        max_queued_frames=1 << 20,
    )
    if args.exchange == "redis":
        from neffos.exchange.redis import RedisStackExchange

        server.use_stack_exchange(RedisStackExchange(args.broker, channel_prefix="bench"))
    elif args.exchange == "nats":
        from neffos.exchange.nats import NatsStackExchange

        server.use_stack_exchange(NatsStackExchange(args.broker, subject_prefix="bench"))
    if args.transport == "asgi":
        await serve_uvicorn(neffos.ASGIApp(server), args.port)
        return
    listener = await server.listen("127.0.0.1", args.port, backlog=4096)
    print(f"PORT {listener.port}", flush=True)
    await asyncio.get_running_loop().create_future()


async def serve_uvicorn(app: Any, port: int) -> None:
    """Serve an ASGI app with uvicorn as deployed for speed: uvloop (run by main),
    httptools, websockets-sansio, no access log."""
    import socket

    import uvicorn

    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    config = uvicorn.Config(
        app,
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=16 << 20,
        ws_ping_interval=None,
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


async def serve_ceiling(args: argparse.Namespace) -> None:
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    joined: dict[Any, None] = {}

    class Peer(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                return
            data = frame.get_payload_as_bytes()
            if data == b"join":
                joined[transport] = None
            elif data[:1] == b"$":  # an ask: echo it back, that is the answer
                transport.send(WSMsgType.TEXT, data)
            else:  # a chat message: loop-send to everyone else
                for peer in joined:
                    if peer is not transport:
                        peer.send(WSMsgType.TEXT, data)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            joined.pop(transport, None)

    server = await ws_create_server(
        lambda request: Peer(), "127.0.0.1", args.port, backlog=4096,
        read_buffer_init_size=2048,
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().create_future()


async def serve_ceiling_batched(args: argparse.Namespace) -> None:
    from picows import WSListener, WSMsgType, WSTransport, ws_create_server

    loop = asyncio.get_running_loop()
    joined: dict[Any, None] = {}
    dirty: list[Peer] = []

    def frame(data: bytes) -> bytes:  # final, unmasked text frame
        size = len(data)
        if size < 126:
            return bytes((0x81, size)) + data
        if size < 65536:
            return bytes((0x81, 126)) + size.to_bytes(2, "big") + data
        return bytes((0x81, 127)) + size.to_bytes(8, "big") + data

    def write(peer: Peer, data: bytes) -> None:  # straight to the socket when nothing waits
        tcp = peer.tcp
        if tcp.is_closing():
            return
        if not tcp.get_write_buffer_size():
            try:
                sent = os.write(peer.fd, data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        tcp.write(data)

    turn = {"crowded": False, "burst": False}

    def flush() -> None:  # the end of the turn: what followed the first frames
        batch = dirty[:]
        dirty.clear()
        turn["burst"], turn["crowded"] = turn["crowded"], False
        for peer in batch:
            out, peer.out, peer.hot = peer.out, [], False
            if out:
                write(peer, out[0] if len(out) == 1 else b"".join(out))

    class Peer(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.hot = False  # wrote this turn
            self.tcp: Any = None
            self.fd = -1

        def queue(self, data: bytes) -> None:
            if not self.hot:  # the first frame of the turn leaves at once
                self.hot = True
                if not dirty:
                    loop.call_soon(flush)
                dirty.append(self)
                if not turn["burst"]:  # unless the last turn was crowded
                    write(self, data)
                    return
            else:
                turn["crowded"] = True
            self.out.append(data)

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.tcp = transport.underlying_transport
            self.fd = self.tcp.get_extra_info("socket").fileno()

        def on_ws_frame(self, transport: WSTransport, frame_: Any) -> None:
            if frame_.msg_type is not WSMsgType.TEXT:
                return
            data = frame_.get_payload_as_bytes()
            if data == b"join":
                joined[self] = None
            elif data[:1] == b"$":  # an ask: echo it back, that is the answer
                self.queue(frame(data))
            else:  # a chat message: one frame for everyone else
                shared = frame(data)
                for peer in joined:
                    if peer is not self:
                        peer.queue(shared)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            joined.pop(self, None)

    server = await ws_create_server(
        lambda request: Peer(), "127.0.0.1", args.port, backlog=4096,
        read_buffer_init_size=2048,
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().create_future()


async def serve_socketio(args: argparse.Namespace) -> None:
    import socketio
    from aiohttp import web

    asgi = args.target == "socketio-asgi"
    sio = socketio.AsyncServer(
        async_mode="asgi" if asgi else "aiohttp", cors_allowed_origins="*"
    )

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, data: Any) -> Any:
        return data

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    @sio.on("chat")  # type: ignore[untyped-decorator]
    async def chat(sid: str, data: Any) -> None:
        await sio.emit("chat", data, room="room1", skip_sid=sid)

    if asgi:
        await serve_uvicorn(socketio.ASGIApp(sio), args.port)
        return
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    await asyncio.get_running_loop().create_future()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "target", choices=["neffos", "ceiling", "ceiling-plain", "socketio", "socketio-asgi"]
    )
    parser.add_argument("--transport", default="picows")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--exchange", choices=["redis", "nats"], default=None)
    parser.add_argument("--broker", default=None, help="redis host:port or nats URL")
    parser.add_argument("--src", default=None, help="the src/ directory to import neffos from")
    args = parser.parse_args()
    serve = {
        "neffos": serve_neffos,
        "ceiling": serve_ceiling_batched,
        "ceiling-plain": serve_ceiling,
        "socketio": serve_socketio,
        "socketio-asgi": serve_socketio,
    }[args.target]
    coro = serve(args)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
