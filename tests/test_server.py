"""Server: handshake, hooks, HTTP side, broadcast, limits, heartbeat, store, queries."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import uuid
from typing import Any

import picows
import pytest
from helpers import UNIT, Recorder, environment
from helpers.raw import RawPeer

import neffos
from neffos import Message


def by_username(request: neffos.Request) -> str:
    return request.headers.get("X-Username") or "anonymous"


async def http(
    url: str, method: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url.replace("ws://", "http://"))
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await asyncio.wait_for(reader.read(), 5 * UNIT)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    got = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        got[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), got, body


# -- handshake and hooks ---------------------------------------------------------


async def test_ids_default_and_custom(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        assert str(uuid.UUID(client.id)) == client.id
        custom = await env.server({"v1": {}}, id_generator=by_username)
        kim = await env.dial(custom, {"v1": {}}, headers={"X-Username": "kim"})
        assert kim.id == "kim"
        (sconn,) = custom.get_connections()
        assert sconn.id == "kim" and not sconn.is_client and kim.is_client
        assert sconn.server is custom and kim.server is None


@pytest.mark.parametrize("style", ["raise", "return", "async"])
async def test_on_connect_refusal(transport: str, style: str) -> None:
    disconnects = Recorder()

    refused: list[neffos.Conn] = []

    def refuse(conn: neffos.Conn) -> Any:
        refused.append(conn)
        if style == "raise":
            raise PermissionError("not authorized")
        return PermissionError("not authorized")

    async def refuse_async(conn: neffos.Conn) -> Any:
        refused.append(conn)
        await asyncio.sleep(0)
        raise PermissionError("not authorized")

    async with environment(transport) as env:
        server = await env.server(
            {"v1": {}},
            on_connect=refuse_async if style == "async" else refuse,
            on_disconnect=disconnects.add,
        )
        with pytest.raises(neffos.HandshakeRefused) as info:
            await env.dial(server, {"v1": {}})
        assert str(info.value) == "not authorized"
        assert isinstance(info.value, neffos.DialError)
        await asyncio.wait_for(refused[0].wait_closed(), 5 * UNIT)
        assert server.get_total_connections() == 0
        assert disconnects.items == []  # refused connections are not "disconnected"


async def test_fire_disconnect_always(transport: str) -> None:
    disconnects = Recorder()
    async with environment(transport) as env:
        server = await env.server(
            {"v1": {}},
            on_connect=lambda c: ValueError("no"),
            on_disconnect=disconnects.add,
            fire_disconnect_always=True,
        )
        with pytest.raises(neffos.HandshakeRefused):
            await env.dial(server, {"v1": {}})
        await disconnects.wait_len(1)


async def test_on_connect_and_on_disconnect(transport: str) -> None:
    events = Recorder()

    async def on_connect(conn: neffos.Conn) -> None:
        await asyncio.sleep(0)
        conn.set("joined", True)
        events.add(("connect", conn.id))

    async with environment(transport) as env:
        server = await env.server(
            {"v1": {}},
            id_generator=by_username,
            on_connect=on_connect,
            on_disconnect=lambda c: events.add(("disconnect", c.id, c.get("joined"))),
        )
        client = await env.dial(server, {"v1": {}}, headers={"X-Username": "ann"})
        assert events.items == [("connect", "ann")]  # on_connect ran before the ack
        await client.aclose()
        await events.wait_len(2)
        assert events.items[1] == ("disconnect", "ann", True)


async def test_connect_inside_on_connect(transport: str) -> None:
    got = Recorder()

    async def on_connect(conn: neffos.Conn) -> None:
        ns = await conn.connect("v1")
        ns.emit("welcome", "hello")

    async with environment(transport) as env:
        server = await env.server({"v1": {}}, on_connect=on_connect)
        client = await env.dial(server, {"v1": {"welcome": lambda ns, m: got.add(m.body)}})
        ns = await client.wait_connect("v1", timeout=5 * UNIT)
        assert ns.namespace == "v1"
        assert await got.wait_len(1) == [b"hello"]


async def test_refusal_after_connect_in_on_connect_closes(transport: str) -> None:
    async def on_connect(conn: neffos.Conn) -> None:
        await conn.connect("v1")
        raise PermissionError("changed my mind")

    async with environment(transport) as env:
        server = await env.server({"v1": {}}, on_connect=on_connect)
        client = await env.dial(server, {"v1": {}})
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)


async def test_frames_before_the_hello_are_handled_after_the_ack(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {"echo": lambda ns, m: m.body}}, id_generator=by_username)
        peer = await RawPeer.connect(env.url(server), extra_headers={"X-Username": "early"})
        peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
        peer.send("$2;v1;;echo;0;0;hi")
        peer.send("M")
        assert await peer.recv() == "Aearly"  # the ack is always the first frame
        assert await peer.recv() == "$1;;;;;;"
        assert await peer.recv() == "$2;v1;;echo;0;0;hi"
        peer.close()


async def test_only_m_completes_the_handshake(net_transport: str) -> None:
    """A client cannot pick its own ID by sending "A<id>" (docs/topics/protocol.md#handshake)."""
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, id_generator=by_username)
        peer = await RawPeer.connect(env.url(server), extra_headers={"X-Username": "real"})
        peer.send("Ahijacked")
        assert await peer.handshake() == "real"
        (conn,) = server.get_connections()
        assert conn.id == "real"
        peer.close()


async def test_handshake_timeout(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, handshake_timeout=0.1 * UNIT)
        peer = await RawPeer.connect(env.url(server))
        assert await peer.wait_closed() == 1008  # never sent "M"


async def test_join_request_for_the_empty_room_is_answered_like_go(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        peer = await RawPeer.connect(env.url(server))
        await peer.handshake()
        peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
        assert await peer.recv() == "$1;;;;;;"
        peer.send("$2;v1;;_OnRoomJoin;0;0;")
        assert await peer.recv() == "$2;;;;;;"  # Go accepts it too (the Python API refuses)
        peer.close()


async def test_client_frame_with_server_markers_is_not_trusted(net_transport: str) -> None:
    got = Recorder()

    def relay(ns: neffos.NSConn, m: Message) -> None:
        got.add((m.from_explicit, m.from_stack_exchange))
        ns.conn.server.broadcast(None, m)  # type: ignore[union-attr]

    async with environment(net_transport) as env:
        server = await env.server({"v1": {"chat": relay}})
        peer = await RawPeer.connect(env.url(server))
        await peer.handshake()
        peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
        assert await peer.recv() == "$1;;;;;;"
        peer.send("neffos(0xfake);v1;;chat;0;0;x")
        assert await peer.recv() == ";v1;;chat;0;0;x"  # not excluded: the marker is ignored
        assert got.items == [("", False)]
        peer.close()


# -- HTTP side (docs/topics/protocol.md#http) ----------------------------------------


async def test_http_rules(net_transport: str) -> None:
    errors = Recorder()
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, on_upgrade_error=errors.add)
        url = env.url(server)
        status, headers, body = await http(url, "HEAD")
        assert (status, body) == (302, b"") and "location" not in headers
        status, headers, body = await http(url, "POST")
        assert status == 405 and headers["allow"] == "GET"
        assert body == b"Method Not Allowed\n"
        status, _, _ = await http(url.replace("/echo", "/other"), "GET")
        assert status == 404
        assert [e.status for e in errors.items] == [302, 405, 404]
        assert errors.items[0].is_trying_to_reconnect
        await server.close()
        for method in ("HEAD", "GET"):
            status, headers, body = await http(url, method)
            assert status == 500 and headers["x-content-type-options"] == "nosniff"


async def test_url_parameters_become_headers(net_transport: str) -> None:
    seen: dict[str, Any] = {}

    def gen(request: neffos.Request) -> str:
        seen["auth"] = request.headers.get_all("Authorization")
        seen["token"] = request.headers.get_all("My-Token")
        seen["query"] = request.query
        return request.headers.get("X-Username") or "?"

    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, id_generator=gen)
        query = (
            "X-Websocket-Header-X-Username=bob&X-Websocket-Header-Authorization=Bearer%20a%20b"
            "&x-websocket-header-my-token=1&x-websocket-header-my-token=2"
            "&X-WebSocket-Header-X-Websocket-Reconnect=3&other=x"
        )
        client = await neffos.dial(
            env.url(server) + "?" + query, {"v1": {}}, transport=net_transport
        )
        env.clients.append(client)
        assert client.id == "bob"
        assert seen["auth"] == ["Bearer a b"] and seen["token"] == ["1", "2"]
        assert seen["query"]["other"] == ["x"]
        (sconn,) = server.get_connections()
        assert sconn.reconnect_tries == 3 and sconn.was_reconnected
        assert sconn.request is not None and sconn.request.path == "/echo"
        assert sconn.remote_address is not None and sconn.remote_address[0] == "127.0.0.1"


async def test_reconnect_header(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        await env.dial(server, {"v1": {}}, headers={"X-Websocket-Reconnect": "2"})
        await env.dial(server, {"v1": {}})
        first, second = server.get_connections()
        # dial() drops a user-supplied header on the first attempt, like neffos.js
        assert (first.reconnect_tries, second.reconnect_tries) == (0, 0)


async def test_allowed_origins(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, allowed_origins=["https://good.example"])
        url = env.url(server)
        with pytest.raises(neffos.DialError):
            await neffos.dial(url, {"v1": {}}, headers={"Origin": "https://evil.example"},
                              transport=net_transport)
        ok = await neffos.dial(url, {"v1": {}}, headers={"Origin": "https://good.example"},
                               transport=net_transport)
        await ok.aclose()


# -- broadcast (docs/topics/protocol.md#broadcast) -----------------------------------


async def _chat_clients(env: Any, server: neffos.Server, names: list[str], rec: Recorder) -> dict[
    str, neffos.NSConn
]:
    out = {}
    for name in names:
        def on_chat(ns: neffos.NSConn, m: Message, name: str = name) -> None:
            rec.add((name, m.room, m.body))

        client = await env.dial(
            server, {"v1": {"chat": on_chat}, "v2": {"chat": on_chat}},
            headers={"X-Username": name},
        )
        out[name] = await client.connect("v1")
    return out


async def test_broadcast_targets(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {}, "v2": {}}, id_generator=by_username)
        ns = await _chat_clients(env, server, ["a", "b", "c"], rec)
        await ns["a"].join_room("r")
        await ns["b"].join_room("r")
        await ns["c"].conn.connect("v2")

        server.broadcast(None, Message("v1", "chat", "all"))
        await rec.wait_len(3)
        assert sorted(rec.items) == [("a", "", b"all"), ("b", "", b"all"), ("c", "", b"all")]
        rec.clear()
        server.broadcast(None, Message("v1", "chat", "room", room="r"))
        server.broadcast(None, Message("v1", "chat", "to c", to="c"))
        server.broadcast(None, Message("v2", "chat", "v2 only"))
        await rec.wait_len(4)
        assert sorted(rec.items) == [
            ("a", "r", b"room"), ("b", "r", b"room"), ("c", "", b"to c"), ("c", "", b"v2 only")
        ]


async def test_broadcast_exclusions(transport: str) -> None:
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {}}, id_generator=by_username)
        ns = await _chat_clients(env, server, ["a", "b", "b", "c"], rec)
        conns = {c.id: c for c in server.get_connections()}
        room = await conns["a"].namespace("v1").join_room("r")  # type: ignore[union-attr]
        await ns["b"].join_room("r")
        cases: list[tuple[Any, list[str]]] = [
            (conns["a"], ["b", "b", "c"]),
            (conns["a"].namespace("v1"), ["b", "b", "c"]),
            (room, ["b", "b", "c"]),
            (neffos.exclude("b"), ["a", "c"]),  # every connection with that ID
            (None, ["a", "b", "b", "c"]),
        ]
        for exclude, expected in cases:
            rec.clear()
            server.broadcast(exclude, Message("v1", "chat", "x"))
            await rec.wait_len(len(expected))
            # a probe to everybody proves nothing else is in flight
            server.broadcast(None, Message("v1", "chat", "probe"))
            await rec.wait_len(len(expected) + 4)
            assert sorted(n for n, _, body in rec.items if body == b"x") == expected
        with pytest.raises(TypeError):
            server.broadcast(object(), Message("v1", "chat", "x"))


async def test_broadcast_batch_filtering_skips_only_the_message(transport: str) -> None:
    """Go ends the batch at the first filtered message; we skip only that message.

    Wire protocol: docs/topics/protocol.md#broadcast.
    """
    rec = Recorder()
    async with environment(transport) as env:
        server = await env.server({"v1": {}}, id_generator=by_username)
        await _chat_clients(env, server, ["a", "b"], rec)
        server.broadcast(
            None,
            Message("v1", "chat", "1", to="nobody"),
            Message("v1", "chat", "2"),
            Message("v1", "chat", "3", to="b"),
            Message("v1", "chat", "4"),
        )
        await rec.wait_len(5)
        assert [b for n, _, b in rec.items if n == "a"] == [b"2", b"4"]
        assert [b for n, _, b in rec.items if n == "b"] == [b"2", b"3", b"4"]


async def test_broadcast_keeps_sender_order_and_clears_tokens(transport: str) -> None:
    rec = Recorder()

    def relay(ns: neffos.NSConn, m: Message) -> None:
        ns.broadcast_others(m)

    async with environment(transport) as env:
        server = await env.server({"v1": {"chat": relay}}, id_generator=by_username)
        got: dict[str, list[bytes]] = {"b": [], "c": []}

        def on_chat(ns: neffos.NSConn, m: Message) -> None:
            assert m.wait == ""  # a relayed message never carries the sender's token
            got[ns.conn.id].append(m.body)
            rec.add(m.body)

        first = await env.dial(server, {"v1": {}}, headers={"X-Username": "a"})
        sender = await first.connect("v1")
        for name in ("b", "c"):
            c = await env.dial(server, {"v1": {"chat": on_chat}}, headers={"X-Username": name})
            await c.connect("v1")
        n = 500
        for i in range(n):
            sender.emit("chat", str(i))
        await rec.wait_len(2 * n)
        expected = [str(i).encode() for i in range(n)]
        assert got == {"b": expected, "c": expected}


async def test_slow_reader_is_closed_and_others_are_not_affected(
    server_transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    problems: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: problems.append(ctx))
    async with environment(server_transport) as env:
        server = await env.server({"v1": {}}, send_buffer=256 * 1024, id_generator=by_username)
        slow = await RawPeer.connect(env.url(server), extra_headers={"X-Username": "slow"})
        await slow.handshake()
        slow.send("$1;v1;;_OnNamespaceConnect;0;0;")
        assert await slow.recv() == "$1;;;;;;"
        slow.pause_reading()
        fast = await env.dial(server, {"v1": {"big": lambda ns, m: rec.add(len(m.body))}},
                              headers={"X-Username": "fast"})
        await fast.connect("v1")
        body = b"x" * 32 * 1024
        count = 0
        # 12.8 MB in bursts of 4: far more than the kernel buffers plus send_buffer
        # for the reader that stopped reading, while the other keeps up.
        for _ in range(100):
            for _ in range(4):
                server.broadcast(None, Message("v1", "big", body))
            count += 4
            await rec.wait_len(count)
        assert rec.items == [len(body)] * count
        assert [c.id for c in server.get_connections()] == ["fast"]
        slow.close()
    # closed as a slow reader (1008, a WARNING), not as a failed write (1011)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("closing a slow connection" in line for line in warnings), warnings
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert problems == []


class AbortTap:
    """Stands in for a connection's socket and tells when it is dropped (abort)."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.aborted: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)

    def abort(self) -> None:
        if not self.aborted.done():
            self.aborted.set_result(asyncio.get_running_loop().time())
        self.socket.abort()


@pytest.mark.parametrize("started_by", ["server", "peer"])
async def test_a_closing_peer_that_does_not_read_is_dropped_after_close_timeout(
    net_transport: str, started_by: str
) -> None:
    """Whoever starts the close (the server, or the peer with a protocol error), a
    peer that reads nothing is dropped close_timeout later, pending bytes and all."""
    timeout = 0.5 * UNIT
    async with environment(net_transport) as env:
        server = await env.server(
            {"v1": {}}, close_timeout=timeout, id_generator=by_username, send_buffer=64 << 20
        )
        peer = await RawPeer.connect(env.url(server), extra_headers={"X-Username": "idle"})
        try:
            await peer.handshake()
            peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
            assert await peer.recv() == "$1;;;;;;"
            peer.pause_reading()
            (conn,) = server.get_connections()
            ns = conn.namespace("v1")
            assert ns is not None
            for _ in range(1000):  # 32 MB: far more than the kernel buffers hold
                ns.emit("big", b"x" * 32 * 1024)
            tap = conn.socket = AbortTap(conn.socket)  # type: ignore[assignment]
            started = asyncio.get_running_loop().time()
            if started_by == "server":
                conn.close()
            else:
                peer.send(b"\xff\xfe")  # invalid UTF-8 in a text frame: 1007, by the transport
                peer.transport.send(picows.WSMsgType.TEXT, b"\xff\xfe")  # type: ignore[union-attr]
            aborted_at = await asyncio.wait_for(asyncio.shield(tap.aborted), 5 * UNIT)
            assert timeout <= aborted_at - started < timeout + 2 * UNIT
            await asyncio.wait_for(conn.wait_closed(), 5 * UNIT)
            assert server.get_total_connections() == 0
        finally:
            peer.close()


async def test_server_queries_and_do(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}, "v2": {}}, id_generator=by_username)
        a = await env.dial(server, {"v1": {}, "v2": {}}, headers={"X-Username": "a"})
        b = await env.dial(server, {"v1": {}, "v2": {}}, headers={"X-Username": "b"})
        await a.connect("v1")
        await b.connect("v1")
        await b.connect("v2")
        assert server.get_total_connections() == 2
        assert sorted(c.id for c in server.get_connections()) == ["a", "b"]
        assert sorted(ns.conn.id for ns in server.get_connections_by_namespace("v1")) == ["a", "b"]
        assert [ns.conn.id for ns in server.get_connections_by_namespace("v2")] == ["b"]
        seen = Recorder()

        async def visit(conn: neffos.Conn) -> None:
            seen.add(conn.id)

        await server.do(visit)
        await server.do(lambda conn: conn.set("tag", conn.id.upper()))
        assert sorted(seen.items) == ["a", "b"]
        assert sorted(c.get("tag") for c in server.get_connections()) == ["A", "B"]


async def test_store(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        assert client.get("missing") is None and client.get("missing", 7) == 7
        client.set("k", "v")
        assert client.get("k") == "v"
        assert client.increment("n") == 1 and client.increment("n", 5) == 6
        assert client.decrement("n", 2) == 4 and client.get("n") == 4


async def test_server_close_closes_clients_and_refuses_new_ones(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, {"v1": {}})
        await client.connect("v1")
        await server.close()
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
        assert server.get_total_connections() == 0 and server.is_closed
        with pytest.raises(neffos.DialError):
            await env.dial(server, {"v1": {}})


async def test_server_as_async_context_manager(net_transport: str) -> None:
    async with neffos.Server({"v1": {}}) as server:
        listener = await server.listen(transport=net_transport)
        client = await neffos.dial(listener.url, {"v1": {}}, transport=net_transport)
    await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
    with pytest.raises(neffos.DialError):
        await neffos.dial(listener.url, {"v1": {}}, transport=net_transport, timeout=2 * UNIT)


# -- limits and liveness -------------------------------------------------------------------


async def test_max_message_size(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, max_message_size=1024)
        peer = await RawPeer.connect(env.url(server))
        await peer.handshake()
        peer.send("x" * 2048)
        assert await peer.wait_closed() == 1009


async def test_dead_peer_is_detected(net_transport: str) -> None:
    closed = Recorder()
    async with environment(net_transport) as env:
        server = await env.server(
            {"v1": {}}, ping_interval=0.05 * UNIT, on_disconnect=closed.add
        )
        peer = await RawPeer.connect(env.url(server), auto_pong=False)
        await peer.handshake()
        await closed.wait_len(1)  # pinged, never answered: closed
        assert peer.pings >= 1
        peer.close()


async def test_live_peer_survives_pings(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, ping_interval=0.02 * UNIT)
        peer = await RawPeer.connect(env.url(server), auto_pong=True)
        await peer.handshake()
        for _ in range(5):  # several sweeps, each ping answered
            await asyncio.wait_for(peer.ping_queue.get(), 5 * UNIT)
        assert server.get_total_connections() == 1
        peer.close()


async def test_read_timeout(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server(neffos.with_timeout({"v1": {}}, read_timeout=0.1 * UNIT))
        client = await env.dial(server, {"v1": {}})
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)


@pytest.mark.parametrize("transport_name", ["picows", "websockets"])
async def test_write_timeout_closes_a_stuck_reader(transport_name: str) -> None:
    async with environment(transport_name) as env:
        server = await env.server(
            neffos.with_timeout({"v1": {}}, write_timeout=0.2 * UNIT), send_buffer=1 << 30
        )
        peer = await RawPeer.connect(env.url(server))
        await peer.handshake()
        peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
        assert await peer.recv() == "$1;;;;;;"
        peer.pause_reading()
        (sconn,) = server.get_connections()
        body = b"x" * (1 << 20)
        for _ in range(16):  # 16 MiB: the kernel buffers fill, the transport pauses
            server.broadcast(None, Message("v1", "big", body))
        await asyncio.wait_for(sconn.wait_closed(), 5 * UNIT)
        peer.close()


async def test_too_many_queued_frames(transport: str) -> None:
    gate = asyncio.Event()

    async def blocked(ns: neffos.NSConn, m: Message) -> None:
        await gate.wait()

    async with environment(transport) as env:
        server = await env.server({"v1": {"block": blocked}}, max_queued_frames=10)
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        for _ in range(20):
            ns.emit("block")
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
        gate.set()


async def test_pages_answer_other_paths_on_the_same_port(net_transport: str) -> None:
    def pages(request: neffos.Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if request.path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], b"<h1>chat</h1>"
        return None

    server = neffos.Server({"v1": {}}, ping_interval=None)
    listener = await server.listen(path="/echo", transport=net_transport, pages=pages)
    try:
        status, headers, body = await http_get(listener.port, "/")
        assert (status, body) == (200, b"<h1>chat</h1>")
        assert headers["content-type"] == "text/html; charset=utf-8"
        status, _, body = await http_get(listener.port, "/missing")
        assert (status, body) == (404, b"404 page not found\n")
        client = await neffos.dial(listener.url, {"v1": {}}, transport=net_transport)
        await client.connect("v1")
        await client.aclose()
    finally:
        await listener.close()
        await server.close()


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5 * UNIT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_close_with_drain_lets_running_handlers_answer(transport: str) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        started.set()
        await release.wait()
        return b"done"

    async with environment(transport) as env:
        server = await env.server({"v1": {"slow": slow}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        ask = asyncio.ensure_future(ns.ask("slow", "", timeout=5 * UNIT))
        await asyncio.wait_for(started.wait(), 5 * UNIT)
        closing = asyncio.ensure_future(server.close(drain=5 * UNIT))
        # callbacks run in order: close() begins (no new connections, connections
        # still open) before the handler is released
        asyncio.get_running_loop().call_soon(release.set)
        assert (await ask).body == b"done"  # the reply went out before the 1001
        await asyncio.wait_for(closing, 5 * UNIT)
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)
