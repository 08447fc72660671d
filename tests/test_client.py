"""Client: dial errors and timeouts, context manager, reconnect policy."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from typing import Any

import pytest
from helpers import UNIT, Recorder, environment

import neffos
from neffos import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOINED,
)

FAST = neffos.Reconnect(initial_delay=0.01 * UNIT, max_delay=0.05 * UNIT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dial_errors(net_transport: str) -> None:
    port = free_port()
    with pytest.raises(neffos.DialError):
        await neffos.dial(f"ws://127.0.0.1:{port}/echo", {"v1": {}}, transport=net_transport)


async def test_dial_times_out_without_ack(transport: str) -> None:
    never = asyncio.Event()

    async def on_connect(conn: neffos.Conn) -> None:
        await never.wait()

    async with environment(transport) as env:
        server = await env.server({"v1": {}}, on_connect=on_connect)
        with pytest.raises(neffos.DialError):
            await env.dial(server, {"v1": {}}, timeout=0.1 * UNIT)
        never.set()


async def test_client_as_async_context_manager(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"echo": lambda ns, m: m.body}})
        client = await env.dial(server, {"v1": {}})
        async with client as conn:
            ns = await conn.connect("v1")
            assert (await ns.ask("echo", "x", timeout=5 * UNIT)).body == b"x"
        assert client.is_closed


async def test_reconnect_restores_namespaces_and_rooms(transport: str) -> None:
    rec = Recorder()
    local = Recorder()

    def server_events(tag: str) -> dict[str, object]:
        return {"v1": {
            ON_NAMESPACE_CONNECTED: lambda ns, m: rec.add(
                (tag, "connected", ns.conn.reconnect_tries)
            ),
            ON_ROOM_JOINED: lambda ns, m: rec.add((tag, "joined", m.room)),
            "echo": lambda ns, m: m.body,
        }}

    client_events = {"v1": {
        ON_NAMESPACE_DISCONNECT: lambda ns, m: local.add(("disconnect", m.is_forced)),
        ON_NAMESPACE_CONNECTED: lambda ns, m: local.add(("connected", ns.conn.was_reconnected)),
        ON_ROOM_JOINED: lambda ns, m: local.add(("joined", m.room)),
    }}
    async with environment(transport) as env:
        first = await env.server(server_events("first"))
        client = await env.dial(first, client_events, reconnect=FAST)
        ns = await client.connect("v1")
        await ns.join_room("lobby")
        await rec.wait_len(2)
        if transport == "memory":
            # The same server object: drop the connection from the server side.
            (sconn,) = first.get_connections()
            sconn.close()
            second = first
            tag = "first"
        else:
            # A real restart on the same port.
            listener = env.listeners[first]
            port = listener.port
            await listener.close()
            await first.close()
            second = neffos.Server(server_events("second"), ping_interval=None)
            await env.listen(second, port)
            tag = "second"
        await local.wait_len(5)  # connected, joined, disconnect, connected, joined
        assert (tag, "joined", "lobby") in rec.items[2:]
        connected = [i for i in rec.items[2:] if i[1] == "connected"]
        assert connected[0][0] == tag and connected[0][2] >= 1  # X-Websocket-Reconnect
        assert client.namespace("v1") is ns  # the same objects keep working
        assert ns.room("lobby") is not None
        assert (await ns.ask("echo", "again", timeout=5 * UNIT)).body == b"again"
        assert local.items == [
            ("connected", False),
            ("joined", "lobby"),
            ("disconnect", True),
            ("connected", True),
            ("joined", "lobby"),
        ]
        assert client.is_connected and not client.is_closed


async def test_writes_fail_while_offline_and_close_stops_reconnecting(net_transport: str) -> None:
    lost = Recorder()
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(
            server,
            {"v1": {ON_NAMESPACE_DISCONNECT: lambda ns, m: lost.add(m.is_forced)}},
            reconnect=neffos.Reconnect(initial_delay=0.05 * UNIT, max_delay=0.05 * UNIT),
        )
        ns = await client.connect("v1")
        listener = env.listeners[server]
        await listener.close()
        await server.close()
        assert await lost.wait_len(1) == [True]
        assert not client.is_connected
        assert not ns.emit("x", "y")
        with pytest.raises(neffos.NeffosError):
            await ns.ask("x", timeout=1 * UNIT)
        await client.aclose()
        assert client.is_closed


async def test_reconnect_gives_up_after_max_tries(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(
            server, {"v1": {}}, reconnect=neffos.Reconnect(initial_delay=0.01, max_tries=2)
        )
        listener = env.listeners[server]
        await listener.close()
        await server.close()
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
        assert client.is_closed


def test_reconnect_delays() -> None:
    policy = neffos.Reconnect(initial_delay=1, max_delay=8, factor=2, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    jittery = neffos.Reconnect(initial_delay=1, jitter=0.5)
    assert all(0.5 <= jittery.delay(1) <= 1.5 for _ in range(100))


async def test_restore_survives_a_second_drop(transport: str) -> None:
    gate = asyncio.Event()
    restoring = Recorder()
    connected = Recorder()

    async def slow_b(ns: neffos.NSConn, m: neffos.Message) -> None:
        if ns.conn.was_reconnected:
            restoring.add(ns.conn)
            await gate.wait()

    policy = neffos.Reconnect(initial_delay=0.01 * UNIT, max_delay=0.02 * UNIT, jitter=0)
    async with environment(transport) as env:
        server = await env.server({"a": {}, "b": {ON_NAMESPACE_CONNECT: slow_b}, "c": {}})
        handler = {n: {ON_NAMESPACE_CONNECTED: lambda ns, m: connected.add(ns.namespace)}
                   for n in "abc"}
        client = await env.dial(server, handler, reconnect=policy)
        for name in "abc":
            await client.connect(name)
        connected.clear()
        (first,) = server.get_connections()
        first.close()  # drop 1
        (second,) = await restoring.wait_len(1)  # "a" is back, "b" is being restored
        second.close()  # drop 2, in the middle of the restoration
        gate.set()
        await connected.wait_for(lambda items: {"a", "b", "c"} <= set(items[1:]))
        assert sorted(client.namespaces) == ["a", "b", "c"] and client.is_connected


async def _freezing_proxy(target_port: int, frozen: asyncio.Event) -> asyncio.Server:
    """A TCP relay that stops moving bytes (without closing) while ``frozen`` is set."""
    thawed = asyncio.Event()
    thawed.set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if frozen.is_set():
                    continue  # dropped, like packets on a dead path
                writer.write(data)
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("transport_name", ["picows", "websockets"])
async def test_client_reconnects_after_a_ping_timeout(transport_name: str) -> None:
    lost = Recorder()
    back = Recorder()
    frozen = asyncio.Event()
    async with environment(transport_name) as env:
        server = await env.server({"chat": {}})
        proxy = await _freezing_proxy(env.listeners[server].port, frozen)
        url = f"ws://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/echo"
        client = await neffos.dial(
            url,
            {"chat": {
                ON_NAMESPACE_DISCONNECT: lambda ns, m: lost.add(m.is_forced),
                ON_NAMESPACE_CONNECTED: lambda ns, m: back.add(ns.conn.was_reconnected),
            }},
            transport=transport_name,
            ping_interval=0.05 * UNIT,
            reconnect=neffos.Reconnect(initial_delay=0.01 * UNIT, max_delay=0.05 * UNIT),
        )
        env.clients.append(client)
        await client.connect("chat")
        frozen.set()  # a half-open path: nothing flows, nothing closes
        assert await lost.wait_len(1) == [True]  # the ping timed out
        frozen.clear()
        await back.wait_len(2)
        assert back.items == [False, True] and not client.is_closed
        proxy.close()


async def test_a_message_past_max_message_size_is_refused(net_transport: str) -> None:
    """Every client transport refuses it the same way: nothing delivered, the client
    closes, and nothing is left behind (no "exception was never retrieved")."""
    got = Recorder()
    problems: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: problems.append(ctx))
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(
            server, {"v1": {"big": lambda ns, m: got.add(len(m.body))}}, max_message_size=1024
        )
        await client.connect("v1")
        (sconn,) = server.get_connections()
        sns = sconn.namespace("v1")
        assert sns is not None
        assert sns.emit("big", b"x" * 900)  # fits
        await got.wait_len(1)
        assert sns.emit("big", b"x" * 2048)  # does not
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
        await asyncio.wait_for(sconn.wait_closed(), 5 * UNIT)
        assert got.items == [900]
    assert problems == []


async def test_native_dial_gets_what_a_peer_says_before_closing_at_once(net_transport: str) -> None:
    """A plain WebSocket server that answers the upgrade, a message and a close
    frame in one write (Autobahn's getCaseCount does): the dial succeeds, the
    message is delivered, then the connection ends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            + b"\x81\x03299"  # text "299"
            + b"\x88\x02\x03\xe8"  # close 1000
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(20):
            got = Recorder()
            conn = await neffos.dial(
                f"ws://127.0.0.1:{port}/getCaseCount",
                {"": {neffos.ON_NATIVE_MESSAGE: lambda ns, m, got=got: got.add(m.text)}},
                transport=net_transport,
                timeout=5 * UNIT,
            )
            assert await got.wait_len(1) == ["299"]
            await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("how", ["close(4001)", "aclose()"])
async def test_a_closing_client_sends_its_close_frame(net_transport: str, how: str) -> None:
    """The server sees the client's own code (not 1006, a drop), on every client
    transport (the aiohttp client used to close its session under its close frame)."""
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        await client.connect("v1", timeout=5 * UNIT)
        (server_conn,) = server.get_connections()
        if how == "close(4001)":
            client.close(4001, "bye")
        else:
            await client.aclose()
        await asyncio.wait_for(server_conn.wait_closed(), 5 * UNIT)
        assert server.stats.closes == {4001 if how == "close(4001)" else 1000: 1}
        async with asyncio.timeout(5 * UNIT):
            await client.wait_closed()
