"""Per-connection limits: what one peer can make the other side hold is bounded.

Rooms (``max_rooms``, ``max_room_name_length``) are refused with
``LimitExceeded`` on either side; frames waiting before the handshake or behind
a busy handler are bounded in number and bytes (``max_queued_frames``,
``max_queued_bytes``); pongs count against ``send_buffer`` like everything
else written to a peer.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from helpers import UNIT, Recorder, environment
from helpers.raw import RawPeer
from helpers.wire import RawWebSocket

import neffos

WAIT = 5 * UNIT


async def test_a_join_past_max_rooms_is_refused(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"a": {}, "b": {}}, max_rooms=3)
        client = await env.dial(server, {"a": {}, "b": {}})
        a, b = await client.connect("a"), await client.connect("b")
        for name in ("r1", "r2"):
            await a.join_room(name)
        await b.join_room("r1")  # rooms of all namespaces count
        with pytest.raises(neffos.LimitExceeded, match="more than 3 rooms"):
            await b.join_room("r2")
        assert sorted(b.rooms) == ["r1"]
        await a.room("r1").leave()  # type: ignore[union-attr]
        await b.join_room("r2")  # room for one more


async def test_a_room_name_past_the_limit_is_refused(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"a": {}}, max_room_name_length=10)
        client = await env.dial(server, {"a": {}})
        ns = await client.connect("a")
        await ns.join_room("x" * 10)
        with pytest.raises(neffos.LimitExceeded, match="longer than 10"):
            await ns.join_room("x" * 11)  # refused by the server
        assert list(ns.rooms) == ["x" * 10]
        local = await env.dial(server, {"a": {}}, max_room_name_length=4)
        with pytest.raises(neffos.LimitExceeded):  # refused before anything is sent
            await (await local.connect("a")).join_room("x" * 5)


async def test_a_client_refuses_a_server_forcing_too_many_rooms(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"a": {}})
        client = await env.dial(server, {"a": {}}, max_rooms=1)
        await client.connect("a")
        (sconn,) = server.get_connections()
        sns = await sconn.wait_connect("a", timeout=WAIT)
        await sns.join_room("one")
        with pytest.raises(neffos.LimitExceeded):
            await sns.join_room("two")
        assert list(client.namespace("a").rooms) == ["one"]  # type: ignore[union-attr]


async def test_bytes_before_the_hello_are_bounded(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"a": {}}, max_queued_bytes=100_000)
        peer = await RawPeer.connect(env.url(server), max_frame_size=1 << 20)
        try:
            for _ in range(3):
                peer.send(b"x" * 40_000)  # 120,000 bytes, and no "M"
            assert await peer.wait_closed(WAIT) == 1008
        finally:
            peer.close()


async def test_bytes_behind_a_busy_handler_are_bounded(transport: str) -> None:
    gate = asyncio.Event()
    busy = Recorder()

    async def slow(ns: neffos.NSConn, msg: neffos.Message) -> None:
        busy.add(msg.event)
        await gate.wait()

    async with environment(transport) as env:
        server = await env.server({"a": {"slow": slow, "big": lambda ns, m: None}},
                                  max_queued_bytes=100_000)
        client = await env.dial(server, {"a": {}})
        ns = await client.connect("a")
        ns.emit("slow")
        await busy.wait_len(1)  # the handler holds the connection's turn
        ns.emit("big", b"x" * 60_000)  # queued
        ns.emit("big", b"x" * 60_000)  # past 100,000 bytes: the connection is closed
        await asyncio.wait_for(client.wait_closed(), WAIT)
        gate.set()
        assert server.get_total_connections() == 0


async def test_pings_from_a_peer_that_never_reads_close_it(net_transport: str) -> None:
    """Pongs count against send_buffer: a ping flood from a peer that reads nothing
    ends like any slow reader, not with the server holding its pongs."""
    async with environment(net_transport) as env:
        server = await env.server(
            {"": {neffos.ON_NATIVE_MESSAGE: lambda ns, m: m.body}}, send_buffer=32 * 1024
        )
        host, port = env.url(server).removeprefix("ws://").split("/")[0].split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, holds little
        sock.connect((host, int(port)))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        ws = RawWebSocket(reader, writer)
        try:
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            transport = writer.transport
            transport.pause_reading()  # from now on, nothing is read
            (conn,) = server.get_connections()
            ping = b"\x89\xfd" + struct.pack("!I", 0) + b"p" * 125  # masked with a zero key
            for _ in range(20):
                if conn.is_closed:
                    break
                writer.write(ping * 2000)  # 2,000 pings at a time, 250 KB of pongs
                await writer.drain()
            await asyncio.wait_for(conn.wait_closed(), WAIT)
        finally:
            await ws.aclose()
