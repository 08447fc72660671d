"""Regression tests for bugs found in review (engine side); each failed before its fix."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import UNIT, Recorder, environment

import neffos
from neffos import ON_NAMESPACE_CONNECT, ON_NAMESPACE_CONNECTED, ON_NAMESPACE_DISCONNECT


async def test_close_during_an_async_join_leaves_no_index_entry(transport: str) -> None:
    gate = asyncio.Event()
    entered = Recorder()

    async def on_join(ns: neffos.NSConn, msg: neffos.Message) -> None:
        entered.add(ns.conn)
        await gate.wait()

    async with environment(transport) as env:
        server = await env.server({"chat": {neffos.ON_ROOM_JOIN: on_join}})
        client = await env.dial(server, {"chat": {}})
        ns = await client.connect("chat")
        join = asyncio.ensure_future(ns.join_room("r1"))
        (sconn,) = await entered.wait_len(1)
        await client.aclose()
        await asyncio.wait_for(sconn.wait_closed(), 5 * UNIT)
        gate.set()
        with pytest.raises(neffos.ConnectionClosed):
            await join
        assert server.get_total_connections() == 0
        assert server._by_room == {} and server._by_ns == {} and server._by_id == {}


async def test_a_result_that_cannot_be_encoded_keeps_the_connection(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server(
            {"chat": {"bad": lambda ns, m: object(), "ok": lambda ns, m: b"ok"}}
        )
        client = await env.dial(server, {"chat": {}})
        ns = await client.connect("chat")
        with pytest.raises(neffos.RemoteError, match="cannot encode the reply"):
            await ns.ask("bad", timeout=5 * UNIT)
        ns.emit("bad")  # a plain emit too: nothing may escape into the transport
        assert (await ns.ask("ok", timeout=5 * UNIT)).body == b"ok"


@pytest.mark.parametrize("style", ["wait_for", "gather"])
async def test_nested_asks_from_child_tasks(transport: str, style: str) -> None:
    async def x(ns: neffos.NSConn, m: neffos.Message) -> bytes:
        if style == "wait_for":
            r = await asyncio.wait_for(ns.ask("y"), 5 * UNIT)
        else:
            (r,) = await asyncio.gather(ns.ask("y", timeout=5 * UNIT))
        return b"x<" + r.body

    async def y(ns: neffos.NSConn, m: neffos.Message) -> bytes:
        r = await ns.ask("z", timeout=5 * UNIT)  # the server must process one more frame
        return b"y<" + r.body

    async with environment(transport) as env:
        server = await env.server({"app": {"x": x, "z": lambda ns, m: b"z"}})
        client = await env.dial(server, {"app": {"y": y}})
        ns = await client.connect("app")
        assert (await ns.ask("x", timeout=5 * UNIT)).body == b"x<y<z"


async def test_local_connected_handler_can_ask_the_peer(transport: str) -> None:
    out = Recorder()

    async def history(ns: neffos.NSConn, m: neffos.Message) -> bytes:
        r = await ns.ask("last_seen", timeout=5 * UNIT)  # the server asks back
        return b"history since " + r.body

    async def connected(ns: neffos.NSConn, m: neffos.Message) -> None:
        out.add((await ns.ask("history", timeout=5 * UNIT)).body)

    async with environment(transport) as env:
        server = await env.server({"chat": {"history": history}})
        client = await env.dial(server, {"chat": {
            ON_NAMESPACE_CONNECTED: connected, "last_seen": lambda ns, m: b"yesterday",
        }})
        await client.connect("chat", timeout=5 * UNIT)
        assert await out.wait_len(1) == [b"history since yesterday"]


async def test_a_late_empty_reply_is_not_answered(transport: str) -> None:
    gate = asyncio.Event()

    async def slow_join(ns: neffos.NSConn, m: neffos.Message) -> None:
        await gate.wait()

    async with environment(transport) as env:
        server = await env.server({"chat": {"ping": lambda ns, m: b"pong"}})
        client = await env.dial(server, {"chat": {neffos.ON_ROOM_JOIN: slow_join}})
        cns = await client.connect("chat")
        (sconn,) = server.get_connections()
        sent: list[bytes] = []
        real = sconn.socket

        class Tap:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def send(self, data: bytes, binary: bool) -> int:
                sent.append(data)
                return real.send(data, binary)

        sconn.socket = Tap()  # type: ignore[assignment]
        sns = sconn.namespace("chat")
        assert sns is not None
        with pytest.raises(neffos.AskTimeout):
            await sns.join_room("r", timeout=0.05 * UNIT)
        gate.set()  # now the client answers, too late
        # Frames are processed in order: once "ping" is answered, a reply to the
        # late empty reply would already have been sent.
        assert (await cns.ask("ping", timeout=5 * UNIT)).body == b"pong"
        assert [f for f in sent if b"bad namespace" in f] == []


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
