"""Rooms: join/leave in both directions, refusals, forced leaves (docs/topics/protocol.md#rooms)."""

from __future__ import annotations

import asyncio

import pytest
from helpers import UNIT, Recorder, environment
from helpers.events import of, recording

import neffos
from neffos import ON_ROOM_JOIN, ON_ROOM_JOINED, ON_ROOM_LEAVE, ON_ROOM_LEFT


async def test_client_join_and_leave(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        ns = await client.connect("v1")
        await rec.wait_len(4)
        rec.clear()
        room = await ns.join_room("room1")
        assert room.name == "room1" and ns.room("room1") is room
        assert [r.name for r in ns.get_rooms()] == ["room1"]
        assert await ns.join_room("room1") is room  # already joined: no-op
        await rec.wait_len(4)
        # server: join + joined fire before the reply; client: after it
        # (docs/topics/protocol.md#rooms)
        assert of(rec, "s") == [(ON_ROOM_JOIN, "room1", False, False),
                                (ON_ROOM_JOINED, "room1", False, False)]
        assert of(rec, "c") == [(ON_ROOM_JOIN, "room1", True, False),
                                (ON_ROOM_JOINED, "room1", True, False)]
        (sns,) = server.get_connections_by_namespace("v1")
        assert list(sns.rooms) == ["room1"]
        rec.clear()
        await room.leave()
        await rec.wait_len(4)
        assert of(rec, "s") == [(ON_ROOM_LEAVE, "room1", False, False),
                                (ON_ROOM_LEFT, "room1", False, False)]
        assert of(rec, "c") == [(ON_ROOM_LEAVE, "room1", True, False),
                                (ON_ROOM_LEFT, "room1", True, False)]
        assert ns.room("room1") is None and sns.rooms == {}
        with pytest.raises(neffos.BadRoom) as info:
            await room.leave()
        assert str(info.value) == "bad room"


async def test_server_refuses_join(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {ON_ROOM_JOIN: lambda ns, m: PermissionError(
            "room forbidden") if m.room == "vip" else None}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.RemoteError, match="room forbidden"):
            await ns.join_room("vip")
        assert ns.room("vip") is None
        assert (await ns.join_room("lobby")).name == "lobby"
        (sns,) = server.get_connections_by_namespace("v1")
        assert list(sns.rooms) == ["lobby"]


async def test_empty_room_name_cannot_be_joined(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(ValueError):
            await ns.join_room("")


async def test_server_refuses_leave(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {ON_ROOM_LEAVE: lambda ns, m: ValueError("stay")}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        room = await ns.join_room("r")
        with pytest.raises(neffos.RemoteError, match="stay"):
            await room.leave()
        assert ns.room("r") is room


async def test_join_on_disconnected_namespace(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        await ns.disconnect()
        with pytest.raises(neffos.WriteClosed):
            await ns.join_room("r")


async def test_server_forces_join_and_leave(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        cns = await client.connect("v1")
        await rec.wait_len(4)
        rec.clear()
        (sns,) = server.get_connections_by_namespace("v1")
        room = await sns.join_room("forced")
        assert cns.room("forced") is not None
        await rec.wait_len(4)
        assert of(rec, "c") == [(ON_ROOM_JOIN, "forced", False, False),
                                (ON_ROOM_JOINED, "forced", False, False)]
        assert of(rec, "s") == [(ON_ROOM_JOIN, "forced", True, False),
                                (ON_ROOM_JOINED, "forced", True, False)]
        rec.clear()
        await room.leave()
        await rec.wait_len(4)
        assert cns.room("forced") is None and sns.room("forced") is None
        assert of(rec, "c") == [(ON_ROOM_LEAVE, "forced", False, False),
                                (ON_ROOM_LEFT, "forced", False, False)]


async def test_client_refuses_forced_join_but_not_forced_leave(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {
            ON_ROOM_JOIN: lambda ns, m: ValueError("nope") if m.room == "no" else None,
            ON_ROOM_LEAVE: lambda ns, m: ValueError("ignored: clients cannot refuse"),
        }})
        cns = await client.connect("v1")
        (sns,) = server.get_connections_by_namespace("v1")
        with pytest.raises(neffos.RemoteError, match="nope"):
            await sns.join_room("no")
        room = await sns.join_room("yes")
        await room.leave()
        assert cns.room("yes") is None


async def test_leave_all(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        for name in ("a", "b", "c"):
            await ns.join_room(name)
        (sns,) = server.get_connections_by_namespace("v1")
        assert sorted(sns.rooms) == ["a", "b", "c"]
        await ns.leave_all()
        assert ns.get_rooms() == [] and sns.rooms == {}


async def test_disconnect_forces_leave(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server(recording(rec, "s"))
        client = await env.dial(server, recording(rec, "c"))
        ns = await client.connect("v1")
        await ns.join_room("a")
        await ns.join_room("b")
        await rec.wait_len(12)
        rec.clear()
        await ns.disconnect()
        await rec.wait_len(10)
        assert of(rec, "s") == [
            ("_OnNamespaceDisconnect", "", False, False),
            (ON_ROOM_LEAVE, "a", False, True),
            (ON_ROOM_LEFT, "a", False, True),
            (ON_ROOM_LEAVE, "b", False, True),
            (ON_ROOM_LEFT, "b", False, True),
        ]
        assert of(rec, "c") == [
            (ON_ROOM_LEAVE, "a", True, True),
            (ON_ROOM_LEFT, "a", True, True),
            (ON_ROOM_LEAVE, "b", True, True),
            (ON_ROOM_LEFT, "b", True, True),
            ("_OnNamespaceDisconnect", "", True, False),
        ]


async def test_room_emit_and_membership_filter(transport: str) -> None:
    got = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {"chat": lambda ns, m: got.add((m.room, m.body))}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        room = await ns.join_room("r")
        assert room.emit("chat", "in room")
        await room.leave()
        # write check: room not joined (docs/topics/protocol.md#write-checks)
        assert not room.emit("chat", "after leave")
        ns.emit("chat", "no room")
        assert await got.wait_len(2) == [("r", b"in room"), ("", b"no room")]


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
        assert server._registry.is_empty()
