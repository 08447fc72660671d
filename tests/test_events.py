"""Events: emit, binary, write, _OnAnyEvent, replies and errors, ordering, natives.

Wire protocol: docs/topics/protocol.md#dispatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from helpers import UNIT, Recorder, environment

import neffos
from neffos import ON_ANY_EVENT, ON_NATIVE_MESSAGE, Message


async def test_emit_text_and_binary(transport: str) -> None:
    got = Recorder()

    def on(ns: neffos.NSConn, m: Message) -> None:
        got.add((m.event, m.body, m.set_binary))

    async with environment(transport) as env:
        server = await env.server({"v1": {"t": on, "b": on}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        assert ns.emit("t", "héllo")
        assert ns.emit_binary("b", bytes([0, 1, 2, 255]))
        # invalid UTF-8 never goes out in a text frame (docs/topics/protocol.md#text-and-binary)
        assert ns.emit("t", b"\xff\xfe")
        assert await got.wait_len(3) == [
            ("t", "héllo".encode(), False),
            ("b", bytes([0, 1, 2, 255]), True),
            ("t", b"\xff\xfe", True),
        ]


async def test_write_checks(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}, "v2": {}})
        client = await env.dial(server, {"v1": {}, "v2": {}})
        await client.connect("v1")
        assert client.write(Message("v1", "x", "body"))
        assert not client.write(Message("v2", "x"))  # namespace not connected
        assert not client.write(Message("v1", "x", room="r"))  # room not joined
        await client.aclose()
        assert not client.write(Message("v1", "x"))  # closed


async def test_any_event_fallback_and_exact_match(transport: str) -> None:
    got = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {
            "known": lambda ns, m: got.add(("known", m.event)),
            ON_ANY_EVENT: lambda ns, m: got.add(("any", m.event)),
        }})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        await got.wait_len(2)  # _OnAnyEvent also gets the connect events
        got.clear()
        ns.emit("known")
        ns.emit("Known")  # case-sensitive
        ns.emit("other")
        assert await got.wait_len(3) == [("known", "known"), ("any", "Known"), ("any", "other")]


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("result", "body"),
    [
        (b"bytes", b"bytes"),
        ("text", b"text"),
        (neffos.Reply(b"reply"), b"reply"),
        ({"a": 1}, b'{"a":1}'),
        (Point(1, 2), b'{"x":1,"y":2}'),
    ],
)
async def test_handler_results_answer_an_ask(transport: str, result: Any, body: bytes) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"q": lambda ns, m: result}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        reply = await ns.ask("q", timeout=5 * UNIT)
        assert reply.body == body
        assert (reply.namespace, reply.event, reply.err) == ("v1", "q", None)


async def test_raised_reply_and_async_handlers(transport: str) -> None:
    async def raises_reply(ns: neffos.NSConn, m: Message) -> None:
        await asyncio.sleep(0)
        raise neffos.Reply(m.body + b"!")

    async with environment(transport) as env:
        server = await env.server({"v1": {"q": raises_reply}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        assert (await ns.ask("q", "hey")).body == b"hey!"


async def test_error_is_written_back_to_plain_emit(transport: str) -> None:
    got = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {"e": lambda ns, m: ValueError("bad input")}})
        client = await env.dial(server, {"v1": {"e": lambda ns, m: got.add(m)}})
        ns = await client.connect("v1")
        ns.emit("e", "x")
        (msg,) = await got.wait_len(1)
        assert msg.is_error and str(msg.err) == "bad input" and msg.body == b""


async def test_no_error_ping_pong(transport: str) -> None:
    """A handler's error about an error message is not sent back.

    Wire protocol: docs/topics/protocol.md#error-texts.
    """
    server_seen = Recorder()
    client_seen = Recorder()

    def server_side(ns: neffos.NSConn, m: Message) -> Any:
        server_seen.add(m)
        return ValueError("server says no")

    def client_side(ns: neffos.NSConn, m: Message) -> Any:
        client_seen.add(m)
        return ValueError("client says no")

    async with environment(transport) as env:
        server = await env.server({"v1": {"e": server_side, "ping": lambda ns, m: b"pong"}})
        client = await env.dial(server, {"v1": {"e": client_side}})
        ns = await client.connect("v1")
        ns.emit("e")
        await client_seen.wait_len(1)
        # Frames are processed in order: once "ping" is answered, any error the
        # client had sent back would already have reached the server's handler.
        assert (await ns.ask("ping", timeout=5 * UNIT)).body == b"pong"
        assert len(server_seen.items) == 1
        assert len(client_seen.items) == 1


async def test_empty_error_text_is_never_sent(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"q": lambda ns, m: ValueError()}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.RemoteError) as info:
            await ns.ask("q", timeout=5 * UNIT)
        assert str(info.value) == "ValueError"


async def test_frames_are_processed_in_order_across_async_handlers(transport: str) -> None:
    order = Recorder()
    gate = asyncio.Event()

    async def slow(ns: neffos.NSConn, m: Message) -> None:
        order.add(("slow-start", m.body))
        await gate.wait()
        order.add(("slow-end", m.body))

    def fast(ns: neffos.NSConn, m: Message) -> None:
        order.add(("fast", m.body))

    async with environment(transport) as env:
        server = await env.server({"v1": {"slow": slow, "fast": fast}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        ns.emit("fast", "1")
        ns.emit("slow", "2")
        ns.emit("fast", "3")
        ns.emit("slow", "4")
        ns.emit("fast", "5")
        await order.wait_len(2)
        assert order.items == [("fast", b"1"), ("slow-start", b"2")]
        gate.set()
        await order.wait_len(7)
        assert order.items == [
            ("fast", b"1"), ("slow-start", b"2"), ("slow-end", b"2"), ("fast", b"3"),
            ("slow-start", b"4"), ("slow-end", b"4"), ("fast", b"5"),
        ]


async def test_marshal_unmarshal_through_the_wire(transport: str) -> None:
    got = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {"p": lambda ns, m: got.add(m.unmarshal(Point))}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        ns.emit("p", neffos.marshal(Point(3, 4)))
        assert await got.wait_len(1) == [Point(3, 4)]


async def test_handler_exception_is_logged_and_sent(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    def buggy(ns: neffos.NSConn, m: Message) -> None:
        raise KeyError("oops")

    async with environment(transport) as env:
        server = await env.server({"v1": {"q": buggy}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.RemoteError, match="oops"):
            await ns.ask("q", timeout=5 * UNIT)
        assert any("raised" in r.getMessage() for r in caplog.records)
        # the connection survives a failing handler
        assert not client.is_closed


async def test_native_only_mode_with_a_plain_websocket(net_transport: str) -> None:
    import websockets

    def echo(ns: neffos.NSConn, m: Message) -> None:
        assert m.is_native and m.event == ON_NATIVE_MESSAGE
        ns.conn.write(Message(body=b"echo: " + m.body, is_native=True, set_binary=m.set_binary))

    async with environment(net_transport) as env:
        server = await env.server({"": {ON_NATIVE_MESSAGE: echo}})
        async with websockets.connect(env.url(server)) as ws:
            await ws.send("0;not;a;neffos;frame")
            assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == "echo: 0;not;a;neffos;frame"
            await ws.send(b"\x00\x01")
            assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == b"echo: \x00\x01"


async def test_native_handler_results_go_back_raw(net_transport: str) -> None:
    import websockets

    def answer(ns: neffos.NSConn, m: Message) -> Any:
        if m.body == b"fail":
            return ValueError("never sent to a native peer")
        return b"got " + m.body

    async with environment(net_transport) as env:
        server = await env.server({"": {ON_NATIVE_MESSAGE: answer}})
        async with websockets.connect(env.url(server)) as ws:
            await ws.send("fail")
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == "got hi"
            await ws.send(b"\x01")
            assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == b"got \x01"


async def test_native_messages_in_mixed_mode(net_transport: str) -> None:
    import websockets

    got = Recorder()
    async with environment(net_transport) as env:
        server = await env.server({
            "": {ON_NATIVE_MESSAGE: lambda ns, m: got.add(m.body)},
            "v1": {},
        })
        async with websockets.connect(env.url(server)) as ws:
            await ws.send("M")
            assert (await asyncio.wait_for(ws.recv(), 5 * UNIT)).startswith("A")
            await ws.send("raw before connecting")  # "" not connected: dropped
            await ws.send("$1;;;_OnNamespaceConnect;0;0;")
            assert await asyncio.wait_for(ws.recv(), 5 * UNIT) == "$1;;;;;;"
            await ws.send("raw after connecting")
            assert await got.wait_len(1) == [b"raw after connecting"]
