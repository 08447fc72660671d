"""Namespaces: connect/disconnect in both directions, refusals, event order.

Wire protocol: docs/topics/protocol.md#namespaces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import UNIT, Recorder, environment
from helpers.events import of, recording

import neffos
from neffos import (
    ON_ANY_EVENT,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
)


async def test_client_connect_and_disconnect_event_order(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        ns = await client.connect("v1")
        assert client.namespace("v1") is ns
        await rec.wait_len(4)
        assert of(rec, "c") == [
            (ON_NAMESPACE_CONNECT, "", True, False),
            (ON_NAMESPACE_CONNECTED, "", True, False),
        ]
        assert of(rec, "s") == [
            (ON_NAMESPACE_CONNECT, "", False, False),
            (ON_NAMESPACE_CONNECTED, "", False, False),
        ]
        assert [n.namespace for n in server.get_connections_by_namespace("v1")] == ["v1"]
        rec.clear()
        await ns.disconnect()
        await rec.wait_len(2)
        assert of(rec, "s") == [(ON_NAMESPACE_DISCONNECT, "", False, False)]
        assert of(rec, "c") == [(ON_NAMESPACE_DISCONNECT, "", True, False)]
        assert client.namespace("v1") is None
        assert server.get_connections_by_namespace("v1") == []


async def test_connect_twice_is_a_no_op(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        first = await client.connect("v1")
        await rec.wait_len(4)
        assert await client.connect("v1") is first
        # a second raw request is answered with an empty reply and no events
        assert len(rec.items) == 4


async def test_undeclared_namespace(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"x": lambda ns, m: None}})
        client = await env.dial(server, {"v1": {}, "v2": {}})
        with pytest.raises(neffos.BadNamespace):
            await client.connect("nope")  # not declared locally: nothing is sent
        with pytest.raises(neffos.BadNamespace) as info:
            await client.connect("v2")  # declared locally, unknown to the server
        assert str(info.value) == "bad namespace"
        assert client.namespace("v2") is None
        assert (await client.connect("v1")).namespace == "v1"


@pytest.mark.parametrize("style", ["return", "raise", "async-raise", "any-event"])
async def test_server_refuses_connect(transport: str, style: str) -> None:
    class Forbidden(Exception):
        pass

    def returns(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        return Forbidden("not allowed")

    def raises(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        raise Forbidden("not allowed")

    async def async_raises(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        await asyncio.sleep(0)
        raise Forbidden("not allowed")

    def any_event(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        if msg.event == ON_NAMESPACE_CONNECT:
            return Forbidden("not allowed")
        return None

    handler = {"return": returns, "raise": raises, "async-raise": async_raises}.get(style)
    events = {ON_NAMESPACE_CONNECT: handler} if handler else {ON_ANY_EVENT: any_event}
    async with environment(transport) as env:
        server = await env.server({"v1": events})
        client = await env.dial(server, {"v1": {}})
        with pytest.raises(neffos.RemoteError) as info:
            await client.connect("v1")
        assert str(info.value) == "not allowed"
        assert client.namespace("v1") is None
        assert server.get_connections_by_namespace("v1") == []


async def test_client_local_refusal_sends_nothing(transport: str) -> None:
    seen = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {ON_NAMESPACE_CONNECT: lambda ns, m: seen.add(m)}})
        client = await env.dial(
            server, {"v1": {ON_NAMESPACE_CONNECT: lambda ns, m: ValueError("local no")}}
        )
        with pytest.raises(ValueError, match="local no"):
            await client.connect("v1")
        assert seen.items == []


async def test_server_forces_connect_and_disconnect(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        (sconn,) = server.get_connections()
        ns = await sconn.connect("v1")
        cns = await client.wait_connect("v1", timeout=5 * UNIT)
        assert cns.namespace == "v1"
        await rec.wait_len(4)
        assert of(rec, "s") == [
            (ON_NAMESPACE_CONNECT, "", True, False),
            (ON_NAMESPACE_CONNECTED, "", True, False),
        ]
        assert of(rec, "c") == [
            (ON_NAMESPACE_CONNECT, "", False, False),
            (ON_NAMESPACE_CONNECTED, "", False, False),
        ]
        rec.clear()
        await ns.join_room("r")
        await rec.wait_len(4)
        rec.clear()
        await ns.disconnect()
        await rec.wait_for(
            lambda items: any(i[:2] == ("c", ON_NAMESPACE_DISCONNECT) for i in items)
        )
        # the server's forced leave happens locally on both sides, client cannot refuse
        assert of(rec, "s") == [
            (ON_ROOM_LEAVE, "r", True, True),
            (ON_ROOM_LEFT, "r", True, True),
            (ON_NAMESPACE_DISCONNECT, "", True, False),
        ]
        assert of(rec, "c") == [
            (ON_ROOM_LEAVE, "r", False, True),
            (ON_ROOM_LEFT, "r", False, True),
            (ON_NAMESPACE_DISCONNECT, "", False, False),
        ]
        assert client.namespace("v1") is None and sconn.namespace("v1") is None


async def test_client_refuses_server_connect(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        await env.dial(server, {"v1": {ON_NAMESPACE_CONNECT: lambda ns, m: ValueError("no way")}})
        (sconn,) = server.get_connections()
        with pytest.raises(neffos.RemoteError, match="no way"):
            await sconn.connect("v1")
        assert sconn.namespace("v1") is None


async def test_server_refuses_disconnect(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server(
            {"v1": {ON_NAMESPACE_DISCONNECT: lambda ns, m: ValueError("stay")}}
        )
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.RemoteError, match="stay"):
            await ns.disconnect()
        assert client.namespace("v1") is ns
        assert len(server.get_connections_by_namespace("v1")) == 1


async def test_disconnect_not_connected(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        await ns.disconnect()
        with pytest.raises(neffos.BadNamespace):
            await ns.disconnect()


async def test_disconnect_all_and_namespaces(transport: str) -> None:
    async with environment(transport) as env:
        handler = {"a": {}, "b": {}, "c": {}}
        server = await env.server(handler)
        client = await env.dial(server, handler)
        for name in "abc":
            await client.connect(name)
        assert sorted(client.namespaces) == ["a", "b", "c"]
        await client.disconnect_all()
        assert client.namespaces == {}
        assert all(server.get_connections_by_namespace(n) == [] for n in "abc")


async def test_wait_connect_waits_and_fails_on_close(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        waiter = asyncio.ensure_future(client.wait_connect("v1"))
        await asyncio.sleep(0)
        assert not waiter.done()
        ns = await client.connect("v1")
        assert await waiter is ns
        with pytest.raises(neffos.AskTimeout):
            await client.wait_connect("other", timeout=0.05 * UNIT)
        waiter = asyncio.ensure_future(client.wait_connect("later"))
        await asyncio.sleep(0)
        await client.aclose()
        with pytest.raises(neffos.ConnectionClosed):
            await waiter


async def test_close_forces_leave_and_disconnect_on_both_sides(transport: str) -> None:
    rec = Recorder()
    disconnected = asyncio.Event()
    async with environment(transport) as env:
        server = await env.server(
            recording(rec, "s"), on_disconnect=lambda conn: disconnected.set()
        )
        client = await env.dial(server, recording(rec, "c"))
        ns = await client.connect("v1")
        await ns.join_room("r1")
        await rec.wait_len(8)
        rec.clear()
        await client.aclose()
        assert client.is_closed
        expected = [
            (ON_ROOM_LEAVE, "r1", True, True),
            (ON_ROOM_LEFT, "r1", True, True),
            (ON_NAMESPACE_DISCONNECT, "", True, True),
        ]
        assert of(rec, "c") == expected
        async with asyncio.timeout(5 * UNIT):
            await disconnected.wait()
        # The server noticed the close: the same forced events, IsLocal true
        # (docs/topics/protocol.md#closing).
        assert of(rec, "s") == expected
        assert server.get_total_connections() == 0


async def test_any_event_receives_system_events(transport: str) -> None:
    rec = Recorder()

    def any_event(ns: neffos.NSConn, msg: neffos.Message) -> None:
        rec.add(msg.event)

    async with environment(transport) as env:
        server = await env.server({"v1": {ON_ANY_EVENT: any_event}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        await ns.join_room("r")
        ns.emit("custom", "x")
        await rec.wait_len(5)
        assert rec.items == [
            ON_NAMESPACE_CONNECT,
            ON_NAMESPACE_CONNECTED,
            ON_ROOM_JOIN,
            ON_ROOM_JOINED,
            "custom",
        ]


async def test_emit_from_connected_handler_arrives_after_connect(transport: str) -> None:
    """The server's _OnNamespaceConnected may emit right after the reply.

    Wire protocol: docs/topics/protocol.md#namespaces.
    """
    rec = Recorder()

    def connected(ns: neffos.NSConn, msg: neffos.Message) -> None:
        ns.emit("welcome", "hi " + ns.conn.id)

    async with environment(transport) as env:
        server = await env.server(
            {"v1": {ON_NAMESPACE_CONNECTED: connected}}, id_generator=lambda r: "kim"
        )
        client = await env.dial(server, {"v1": {"welcome": lambda ns, m: rec.add(m.body)}})
        await client.connect("v1")
        assert await rec.wait_len(1) == [b"hi kim"]
