"""ask: replies, timeouts, asks inside handlers, close, known errors, server ask.

Wire protocol: docs/topics/protocol.md#asks, #error-texts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import UNIT, Recorder, environment

import neffos
from neffos import ON_NAMESPACE_CONNECTED, Message


class NotWorkday(Exception):
    pass


class NotFound(Exception):
    @classmethod
    def resolve_error(cls, text: str) -> bool:
        return text.startswith("not found: ")


neffos.register_known_error(NotWorkday("not a workday"))
neffos.register_known_error(NotFound)


def echo(ns: neffos.NSConn, m: Message) -> bytes:
    return b"echo: " + m.body


def never(ns: neffos.NSConn, m: Message) -> None:
    return None


async def test_ask_on_nsconn_and_conn(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"echo": echo}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        reply = await ns.ask("echo", "hi", timeout=5 * UNIT)
        assert reply.body == b"echo: hi" and reply.wait.startswith("$")
        reply = await client.ask(Message("v1", "echo", b"\x00bin", set_binary=True))
        assert reply.body == b"echo: \x00bin" and reply.set_binary
        assert not client._waiters  # every registration is removed


async def test_ask_timeout(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"never": never, "echo": echo}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.AskTimeout) as info:
            await ns.ask("never", timeout=0.05 * UNIT)
        assert isinstance(info.value, TimeoutError)
        # The caller's own deadline is honoured too, as a plain TimeoutError.
        with pytest.raises(TimeoutError) as outer:
            async with asyncio.timeout(0.05 * UNIT):
                await ns.ask("never")
        assert not isinstance(outer.value, neffos.AskTimeout)
        assert not client._waiters
        # The connection is still fine.
        assert (await ns.ask("echo", "x", timeout=5 * UNIT)).body == b"echo: x"


async def test_ask_inside_handlers_does_not_deadlock(transport: str) -> None:
    async def server_question(ns: neffos.NSConn, m: Message) -> bytes:
        # The server asks the client while handling the client's ask.
        answer = await ns.ask("whoami", timeout=5 * UNIT)
        return b"you are " + answer.body

    async def client_whoami(ns: neffos.NSConn, m: Message) -> bytes:
        # ... and the client, while answering, asks the server again.
        name = await ns.ask("name", timeout=5 * UNIT)
        return name.body

    async with environment(transport) as env:
        server = await env.server(
            {"v1": {"question": server_question, "name": lambda ns, m: b"kim"}}
        )
        client = await env.dial(server, {"v1": {"whoami": client_whoami}})
        ns = await client.connect("v1")
        reply = await ns.ask("question", timeout=5 * UNIT)
        assert reply.body == b"you are kim"


async def test_pending_asks_fail_when_the_connection_closes(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"never": never}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        asks = [asyncio.ensure_future(ns.ask("never")) for _ in range(3)]
        await asyncio.sleep(0)
        client.close()
        for ask in asks:
            with pytest.raises(neffos.ConnectionClosed):
                await ask
        with pytest.raises(neffos.ConnectionClosed):
            await ns.ask("never")


async def test_server_side_close_fails_client_asks(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"never": never}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        ask = asyncio.ensure_future(ns.ask("never"))
        await asyncio.sleep(0)
        (sconn,) = server.get_connections()
        sconn.close()
        with pytest.raises(neffos.ConnectionClosed):
            await ask


@pytest.mark.parametrize(
    ("raised", "expected_type", "text"),
    [
        (NotWorkday("not a workday"), NotWorkday, "not a workday"),
        (NotFound("not found: user 42"), NotFound, "not found: user 42"),
        (neffos.BadRoom(), neffos.BadRoom, "bad room"),
        (ValueError("plain"), neffos.RemoteError, "plain"),
    ],
)
async def test_remote_errors_resolve_to_known_types(
    transport: str, raised: Exception, expected_type: type, text: str
) -> None:
    def fail(ns: neffos.NSConn, m: Message) -> Any:
        return raised

    async with environment(transport) as env:
        server = await env.server({"v1": {"q": fail}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(expected_type) as info:
            await ns.ask("q", timeout=5 * UNIT)
        assert str(info.value) == text


async def test_max_pending_asks(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"never": never}})
        client = await env.dial(server, {"v1": {}}, max_pending_asks=2)
        ns = await client.connect("v1")
        asks = [asyncio.ensure_future(ns.ask("never")) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(neffos.TooManyPendingAsks):
            await ns.ask("never")
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
        assert not client._waiters


async def test_ask_refused_by_write_checks(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}, "v2": {}})
        client = await env.dial(server, {"v1": {}, "v2": {}})
        await client.connect("v1")
        with pytest.raises(neffos.WriteClosed):
            await client.ask(Message("v2", "x"))


async def test_request_for_a_namespace_the_server_has_not_connected(transport: str) -> None:
    """A tokened request for a namespace not connected gets "bad namespace".

    Wire protocol: docs/topics/protocol.md#dispatch.
    """
    async with environment(transport) as env:
        server = await env.server({"v1": {"echo": echo}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        (sconn,) = server.get_connections()
        # Disconnect on the server side only, behind the client's back.
        sns = sconn.namespace("v1")
        assert sns is not None
        sconn._remove_namespace(sns)
        with pytest.raises(neffos.BadNamespace):
            await ns.ask("echo", timeout=5 * UNIT)


async def test_server_ask_targets_and_first_answer_wins(transport: str) -> None:
    answered = Recorder()

    def make(name: str) -> Any:
        def answer(ns: neffos.NSConn, m: Message) -> bytes:
            answered.add(name)
            return name.encode()

        return answer

    async with environment(transport) as env:
        server = await env.server({"v1": {}}, id_generator=lambda r: r.headers["X-Username"])
        clients = {}
        for name in ("ann", "bob"):
            client = await env.dial(
                server, {"v1": {"who": make(name)}}, headers={"X-Username": name}
            )
            await client.connect("v1")
            clients[name] = client
        reply = await server.ask(Message("v1", "who"), to="bob", timeout=5 * UNIT)
        assert reply.body == b"bob"
        assert answered.items == ["bob"]
        answered.clear()
        reply = await server.ask(Message("v1", "who"), timeout=5 * UNIT)
        assert reply.body in (b"ann", b"bob")
        await answered.wait_len(2)  # both answered; the second answer was dropped quietly
        assert not server._asks
        # and both connections still work
        for client in clients.values():
            assert not client.is_closed


async def test_server_ask_errors_and_timeout(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {
            "fail": lambda ns, m: NotWorkday("not a workday"),
            "never": never,
        }})
        await client.connect("v1")
        with pytest.raises(NotWorkday):
            await server.ask(Message("v1", "fail"), timeout=5 * UNIT)
        with pytest.raises(neffos.AskTimeout):
            await server.ask(Message("v1", "never"), timeout=0.05 * UNIT)
        assert not server._asks


async def test_server_conn_ask(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {"hi": lambda ns, m: b"hello " + m.body}})
        await client.connect("v1")
        (sns,) = server.get_connections_by_namespace("v1")
        reply = await sns.ask("hi", "server", timeout=5 * UNIT)
        assert reply.body == b"hello server"
        assert reply.wait.isdigit()  # server tokens are digits (docs/topics/protocol.md#tokens)


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
