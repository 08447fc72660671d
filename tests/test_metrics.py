"""Prometheus metrics (``neffos.metrics``), scraped over HTTP from real servers.

Every test runs a real server with real clients, scrapes its metrics with a
plain HTTP client (asyncio streams) while they work, parses the text format
with ``prometheus_client.parser`` and checks that each number moved by exactly
what the clients did, and that nothing else moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import picows
import pytest
from helpers import UNIT, Recorder, environment
from helpers.brokers import WatchedStats, running
from helpers.programs import ENV, Program
from helpers.raw import RawPeer
from prometheus_client.parser import text_string_to_metric_families

import neffos
from neffos import metrics

WAIT = 5 * UNIT

# -- scraping ----------------------------------------------------------------------------


class Scrape:
    """One scrape: every sample by ``name{label="value",...}``, plus the families."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: dict[str, float] = {}
        for family in self.families:
            for sample in family.samples:
                self.samples[key(sample.name, **sample.labels)] = sample.value

    def __getitem__(self, name: str) -> float:
        return self.samples.get(name, 0.0)

    def changes(self, before: Scrape) -> dict[str, float]:
        """What moved since ``before`` (histogram buckets and sums left out)."""
        names = set(self.samples) | set(before.samples)
        moved = {
            name: self[name] - before[name]
            for name in names
            if "_bucket{" not in name and not name.endswith("_sum") and "_sum{" not in name
        }
        return {name: delta for name, delta in sorted(moved.items()) if delta}


def key(name: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


async def http_get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 request; (status, headers, body)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), WAIT)  # the server closes after answering
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def scrape(url: str) -> Scrape:
    status, headers, body = await http_get(url)
    assert status == 200, (status, body)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    return Scrape(body.decode())


def check_conventions(s: Scrape) -> None:
    """Names, types and HELP texts as Prometheus wants them."""
    assert s.families
    for family in s.families:
        assert family.name.startswith("neffos_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":
            assert all(x.name.endswith(("_total", "_created")) for x in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    assert "# TYPE neffos_messages_total counter" in s.text
    assert "# TYPE neffos_connections gauge" in s.text


def latency(s: Scrape) -> tuple[float, float, list[float]]:
    """The ask histogram: count, sum, cumulative buckets."""
    name = "neffos_ask_duration_seconds_bucket"
    buckets = [v for k, v in s.samples.items() if k.startswith(name)]
    return (s["neffos_ask_duration_seconds_count"], s["neffos_ask_duration_seconds_sum"],
            buckets)


# -- one server, everything a client can do -------------------------------------------------


def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
    return msg.body


def fail(ns: neffos.NSConn, msg: neffos.Message) -> None:
    raise RuntimeError("a bug in a handler")


def nope(ns: neffos.NSConn, msg: neffos.Message) -> Exception:
    return ValueError("not today")  # an expected error: answered, not logged


def shout(ns: neffos.NSConn, msg: neffos.Message) -> None:
    ns.broadcast_others(neffos.Message(event="chat", body=msg.body))


def refuse(conn: neffos.Conn) -> Exception | None:
    assert conn.request is not None
    return PermissionError("go away") if conn.request.headers.get("X-Refuse") else None


async def test_numbers_move_as_clients_work(caplog: pytest.LogCaptureFixture) -> None:
    server = neffos.Server(
        {"v1": {"echo": echo, "fail": fail, "nope": nope, "shout": shout}, "v2": {}},
        max_rooms=2, ping_interval=None, on_connect=refuse,
        id_generator=lambda request: request.headers.get("X-Id") or "anonymous",
    )
    listener = await server.listen("127.0.0.1", 0, path="/echo", pages=metrics.page(server))
    exporter = await metrics.listen(server, "127.0.0.1", 0)
    page_url = f"http://127.0.0.1:{listener.port}/metrics"
    got = {name: Recorder() for name in "abc"}
    clients: dict[str, neffos.Conn] = {}
    try:
        s0 = await scrape(exporter.url)
        check_conventions(s0)
        assert (await scrape(page_url)).samples == s0.samples  # the same port says the same
        assert s0["neffos_connections"] == 0
        assert s0[key("neffos_namespace_connections", namespace="v1")] == 0
        assert s0[key("neffos_build_info", version=neffos.__version__)] == 1

        # Three clients connect to v1: M and A, then a connect request and its answer.
        for name in "abc":
            def record(ns: neffos.NSConn, msg: neffos.Message, rec: Recorder = got[name]) -> None:
                rec.add((msg.event, msg.body))

            def answer(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
                return b"pong"

            client = await neffos.dial(listener.url, {"v1": {
                "echo": record, "chat": record, "ping": answer, "silent": lambda ns, m: None,
            }}, headers={"X-Id": name})
            clients[name] = client
            await client.connect("v1")
        s1 = await scrape(exporter.url)
        assert s1.changes(s0) == {
            "neffos_connections": 3,
            "neffos_connections_accepted_total": 3,
            key("neffos_namespace_connections", namespace="v1"): 3,
            "neffos_namespace_connects_total": 3,
            key("neffos_messages_total", direction="in"): 6,
            key("neffos_messages_total", direction="out"): 6,
        }
        ns = {name: c.namespace("v1") for name, c in clients.items()}
        a, b, c = ns["a"], ns["b"], ns["c"]
        assert a is not None and b is not None and c is not None

        # Rooms: two in r1, one in r2; then a joins r2 too, and a third room is refused.
        await a.join_room("r1")
        await b.join_room("r1")
        await c.join_room("r2")
        await a.join_room("r2")
        with pytest.raises(neffos.LimitExceeded):
            await a.join_room("r3")
        s2 = await scrape(page_url)
        assert s2.changes(s1) == {
            "neffos_rooms": 2,
            "neffos_room_members": 4,
            "neffos_room_joins_total": 4,
            key("neffos_errors_total", kind="limit"): 1,
            "neffos_error_replies_total": 1,
            key("neffos_messages_total", direction="in"): 5,
            key("neffos_messages_total", direction="out"): 5,
        }

        # Events and asks of a client: an echo, an ask, a handler bug, an expected error.
        a.emit("echo", b"x")
        await got["a"].wait_len(1)
        assert (await a.ask("echo", b"y", timeout=WAIT)).body == b"y"
        with pytest.raises(neffos.RemoteError, match="a bug in a handler"):
            await a.ask("fail", timeout=WAIT)
        with pytest.raises(neffos.RemoteError, match="not today"):
            await a.ask("nope", timeout=WAIT)
        s3 = await scrape(exporter.url)
        assert s3.changes(s2) == {
            key("neffos_errors_total", kind="handler"): 1,
            "neffos_error_replies_total": 2,
            key("neffos_messages_total", direction="in"): 4,
            key("neffos_messages_total", direction="out"): 4,
        }
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
            "[a] handler of 'v1'/'fail' raised"
        ]

        # Broadcasts: from the server to room r1 (a, b), and from b to the others (a, c).
        server.broadcast(None, neffos.Message("v1", "chat", b"to r1", room="r1"))
        b.emit("shout", b"from b")
        await got["a"].wait_len(3)
        await got["b"].wait_len(1)
        await got["c"].wait_len(1)
        s4 = await scrape(exporter.url)
        assert s4.changes(s3) == {
            key("neffos_messages_total", direction="in"): 1,
            key("neffos_messages_total", direction="out"): 4,
        }

        # Asks from the server: answered by a (conn.ask) and by b (Server.ask), and
        # unanswered by c both ways (the handler returns nothing).
        (server_a,) = server.get_connections_by_id("a")
        (server_c,) = server.get_connections_by_id("c")
        sa, sc = server_a.namespace("v1"), server_c.namespace("v1")
        assert sa is not None and sc is not None
        assert (await sa.ask("ping", timeout=WAIT)).body == b"pong"
        reply = await server.ask(neffos.Message("v1", "ping"), to="b", timeout=WAIT)
        assert reply.body == b"pong"
        with pytest.raises(neffos.AskTimeout):
            await server.ask(neffos.Message("v1", "silent"), to="c", timeout=0.2 * UNIT)
        with pytest.raises(neffos.AskTimeout):
            await sc.ask("silent", timeout=0.2 * UNIT)
        s5 = await scrape(exporter.url)
        assert s5.changes(s4) == {
            "neffos_asks_sent_total": 4,
            "neffos_asks_answered_total": 2,
            "neffos_ask_duration_seconds_count": 2,
            key("neffos_errors_total", kind="ask_timeout"): 2,
            key("neffos_messages_total", direction="in"): 2,
            key("neffos_messages_total", direction="out"): 4,
        }
        count, total, buckets = latency(s5)
        assert count == 2 and 0 < total < 2 * WAIT
        assert buckets == sorted(buckets) and buckets[-1] == 2  # cumulative, +Inf = count

        # A raw peer: hello, a frame that is not a neffos message, a connect; then it
        # drops the TCP connection without a close frame (1006).
        peer = await RawPeer.connect(listener.url, extra_headers={"X-Id": "raw"})
        await peer.handshake()
        peer.send("not a neffos frame")
        peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
        assert await peer.recv() == "$1;;;;;;"
        (server_raw,) = server.get_connections_by_id("raw")
        peer.close()
        await asyncio.wait_for(server_raw.wait_closed(), WAIT)
        # A refused client: M, then H and a close with 1008.
        with pytest.raises(neffos.HandshakeRefused):
            await neffos.dial(listener.url, {"v1": {}}, headers={"X-Refuse": "1"})
        # Requests the endpoint answers without upgrading.
        assert (await http_get(f"http://127.0.0.1:{listener.port}/nowhere"))[0] == 404
        assert (await http_get(listener.url.replace("ws://", "http://"), "HEAD"))[0] == 302
        s6 = await scrape(exporter.url)
        assert s6.changes(s5) == {
            "neffos_connections_accepted_total": 2,
            "neffos_namespace_connects_total": 1,
            key("neffos_errors_total", kind="bad_frame"): 1,
            key("neffos_errors_total", kind="connect_refused"): 1,
            key("neffos_connections_closed_total", code="1006"): 1,
            key("neffos_connections_closed_total", code="1008"): 1,
            key("neffos_upgrades_refused_total", status="404"): 1,
            key("neffos_upgrades_refused_total", status="302"): 1,
            key("neffos_messages_total", direction="in"): 4,
            key("neffos_messages_total", direction="out"): 3,
        }

        # c leaves with its own close code; then the server closes the others (1001).
        clients["c"].close(4001, "bye")
        await asyncio.wait_for(server_c.wait_closed(), WAIT)
        s7 = await scrape(exporter.url)
        assert s7.changes(s6) == {
            "neffos_connections": -1,
            key("neffos_namespace_connections", namespace="v1"): -1,
            "neffos_room_members": -1,
            key("neffos_connections_closed_total", code="4001"): 1,
        }
        await server.close()
        s8 = await scrape(exporter.url)
        assert s8.changes(s7) == {
            "neffos_connections": -2,
            key("neffos_namespace_connections", namespace="v1"): -2,
            "neffos_rooms": -2,
            "neffos_room_members": -3,
            key("neffos_connections_closed_total", code="1001"): 2,
        }
        assert server.stats.connections == 0 and server.stats.closes == {
            1001: 2, 1006: 1, 1008: 1, 4001: 1
        }
    finally:
        for client in clients.values():
            await client.aclose()
        await exporter.close()
        await listener.close()
        await server.close()


async def test_scraped_while_clients_ask() -> None:
    """Scrapes taken while clients hammer the server only ever see counters grow,
    and the last one counts every message."""
    server = neffos.Server({"v1": {"echo": echo}}, ping_interval=None)
    listener = await server.listen("127.0.0.1", 0)
    exporter = await metrics.listen(server)
    clients = [await neffos.dial(listener.url, {"v1": {}}) for _ in range(4)]
    asks = 200
    try:
        async def work(client: neffos.Conn) -> None:
            ns = await client.connect("v1")
            for i in range(asks):
                assert (await ns.ask("echo", str(i), timeout=WAIT)).text == str(i)

        workers = asyncio.gather(*(work(c) for c in clients))
        seen = []
        while not workers.done():
            seen.append(await scrape(exporter.url))
        await workers
        seen.append(await scrape(exporter.url))
        names = [key("neffos_messages_total", direction=d) for d in ("in", "out")]
        for earlier, later in itertools.pairwise(seen):
            assert all(later[n] >= earlier[n] for n in names)
        assert len(seen) > 2  # scraped while they worked
        expected = len(clients) * (2 + asks)  # the hello and the connect, then the asks
        assert [seen[-1][n] for n in names] == [expected, expected]
    finally:
        for client in clients:
            await client.aclose()
        await exporter.close()
        await listener.close()
        await server.close()


# -- closes and slow readers, on every server transport --------------------------------------


async def test_close_codes(server_transport: str) -> None:
    async with environment(server_transport) as env:
        server = await env.server({"v1": {}})
        exporter = await metrics.listen(server)
        try:
            client = await neffos.dial(env.url(server), {"v1": {}}, transport="picows")
            (server_conn,) = server.get_connections()
            client.close(4001, "bye")
            await asyncio.wait_for(server_conn.wait_closed(), WAIT)

            # Invalid UTF-8 in a text message: the transport closes with 1007.
            peer = await RawPeer.connect(env.url(server))
            await peer.handshake()
            (server_conn,) = server.get_connections()
            assert peer.transport is not None
            peer.transport.send(picows.WSMsgType.TEXT, b"\xff\xfe")
            await asyncio.wait_for(server_conn.wait_closed(), WAIT)
            peer.close()

            # The TCP connection dropped without a close frame: 1006 (under ASGI, the
            # server's code: uvicorn says 1005, as if a close frame had no code).
            peer = await RawPeer.connect(env.url(server))
            await peer.handshake()
            (server_conn,) = server.get_connections()
            peer.close()
            await asyncio.wait_for(server_conn.wait_closed(), WAIT)

            s = await scrape(exporter.url)
            dropped = "1005" if server_transport == "asgi" else "1006"
            closed = {k: v for k, v in s.samples.items() if "connections_closed" in k}
            assert closed == {
                key("neffos_connections_closed_total", code="4001"): 1,
                key("neffos_connections_closed_total", code="1007"): 1,
                key("neffos_connections_closed_total", code=dropped): 1,
            }
        finally:
            await exporter.close()


@pytest.mark.parametrize("limit", ["send_buffer", "write_timeout"])
async def test_slow_consumers_dropped(limit: str) -> None:
    handler: Any = {"v1": {}}
    options: dict[str, Any] = {"send_buffer": 64 * 1024}
    if limit == "write_timeout":
        handler = neffos.with_timeout(handler, write_timeout=0.2 * UNIT)
        options = {"send_buffer": 1 << 30}
    async with environment("picows") as env:
        server = await env.server(handler, **options)
        exporter = await metrics.listen(server)
        try:
            peer = await RawPeer.connect(env.url(server))
            await peer.handshake()
            peer.send("$1;v1;;_OnNamespaceConnect;0;0;")
            assert await peer.recv() == "$1;;;;;;"
            before = await scrape(exporter.url)
            peer.pause_reading()
            (slow,) = server.get_connections()
            body = b"x" * (1 << 20)
            sent = 0
            while not slow.is_closed and sent < 64:  # the kernel buffers fill first
                server.broadcast(None, neffos.Message("v1", "big", body))
                sent += 1
            await asyncio.wait_for(slow.wait_closed(), WAIT)
            after = await scrape(exporter.url)
            assert after.changes(before) == {
                key("neffos_slow_consumers_dropped_total", limit=limit): 1,
                key("neffos_connections_closed_total", code="1008"): 1,
                key("neffos_messages_total", direction="out"): sent,
                "neffos_connections": -1,
                key("neffos_namespace_connections", namespace="v1"): -1,
            }
            peer.close()
        finally:
            await exporter.close()


# -- the bus -------------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_bus_metrics(kind: str) -> None:
    """A broadcast from A reaches B's client over the bus; a broker restart counts
    a reconnection on both nodes."""
    async with running(kind) as broker:
        servers = []
        for _ in range(2):
            server = neffos.Server({"v1": {}}, ping_interval=None)
            exchange = broker.exchange("M")
            exchange.stats = WatchedStats()
            server.use_stack_exchange(exchange)
            servers.append(server)
        a, b = servers
        listener = await b.listen("127.0.0.1", 0)
        await a.start()
        exporters = [await metrics.listen(s) for s in servers]
        got = Recorder()
        client = await neffos.dial(listener.url, {"v1": {"chat": lambda ns, m: got.add(m.text)}})
        try:
            await client.connect("v1")
            published = 0

            async def until_heard(text: str) -> None:
                # B's subscription travels through the broker: send until one arrives.
                nonlocal published
                async with asyncio.timeout(10 * UNIT):
                    while text not in got.items:
                        a.broadcast(None, neffos.Message("v1", "chat", text))
                        published += 1
                        with contextlib.suppress(TimeoutError):
                            await got.wait_for(lambda items: text in items, 0.1 * UNIT)

            await until_heard("first")
            await a_stats(a).wait("published", published)
            name = kind
            sa, sb = [await scrape(e.url) for e in exporters]
            assert sa[key("neffos_bus_published_total", exchange=name)] == published
            assert sb[key("neffos_bus_received_total", exchange=name)] == len(got.items)
            assert sa[key("neffos_bus_received_total", exchange=name)] == 0
            assert sb[key("neffos_bus_published_total", exchange=name)] == 0
            for s in (sa, sb):
                assert s[key("neffos_bus_reconnections_total", exchange=name)] == 0
                assert key("neffos_bus_lost_total", exchange=name, direction="publish") in s.samples

            await broker.stop()
            await broker.start()
            for server in servers:
                await a_stats(server).wait("reconnects", 1, 20 * UNIT)
            got.clear()
            await until_heard("again")
            sa, sb = [await scrape(e.url) for e in exporters]
            for s in (sa, sb):
                assert s[key("neffos_bus_reconnections_total", exchange=name)] == 1
            published_ok = sa[key("neffos_bus_published_total", exchange=name)]
            lost = sa[key("neffos_bus_lost_total", exchange=name, direction="publish")]
            assert published_ok + lost <= published and published_ok > 0
            assert sb[key("neffos_bus_received_total", exchange=name)] >= len(got.items) + 1
        finally:
            await client.aclose()
            for e in exporters:
                await e.close()
            await listener.close()
            for server in servers:
                await server.close()


def a_stats(server: neffos.Server) -> WatchedStats:
    stats = server.stack_exchanges[0].stats
    assert isinstance(stats, WatchedStats)
    return stats


# -- the Python API ------------------------------------------------------------------------


async def test_collector_labels_and_registry() -> None:
    """One collector for several servers (a `server` label), in a registry of one's own,
    served as an ASGI app and as `listen(pages=)`; a second register is refused."""
    from prometheus_client import CollectorRegistry, generate_latest

    one, two = neffos.Server({"a": {}}), neffos.Server({"b": {}})
    registry = CollectorRegistry()
    registry.register(metrics.NeffosCollector(lambda: [
        ({"server": "one"}, one.stats), ({"server": "two"}, two.stats),
    ]))
    s = Scrape(generate_latest(registry).decode())
    assert s[key("neffos_namespace_connections", namespace="a", server="one")] == 0
    assert s[key("neffos_namespace_connections", namespace="b", server="two")] == 0
    assert s[key("neffos_connections", server="two")] == 0
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.register(one, registry)

    status: list[Any] = []
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        status.append(message.get("status"))
        body.append(message.get("body", b""))

    def other(request: neffos.Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        return (200, [], b"other page") if request.path == "/x" else None

    pages = metrics.page(one, other=other)

    def get(path: str, method: str = "GET", accept: str = "") -> Any:
        headers = neffos.Headers([("Accept", accept)] if accept else [])
        return pages(neffos.Request(method, path, headers))

    assert get("/x") == (200, [], b"other page")
    assert get("/y") is None  # 404 by the endpoint
    assert get("/metrics", "POST")[0] == 405
    assert get("/metrics", "HEAD")[2] == b""
    openmetrics = get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert openmetrics[1][0][1].startswith("application/openmetrics-text")
    assert openmetrics[2].endswith(b"# EOF\n")

    app = metrics.asgi_app(one)
    await app({"type": "http", "method": "GET", "path": "/", "query_string": b"",
               "headers": []}, receive, send)
    assert status[0] == 200 and b"neffos_connections 0.0" in b"".join(body)


async def test_a_snapshot_survives_json() -> None:
    """What a worker sends its supervisor: every number, the tables keyed by numbers
    and the +Inf bucket included."""
    from neffos.stats import from_json, to_json

    server = neffos.Server({"v1": {"echo": echo}})
    listener = await server.listen("127.0.0.1", 0, path="/echo")
    try:
        client = await neffos.dial(listener.url, {"v1": {}}, transport="picows")
        ns = await client.connect("v1", timeout=WAIT)
        await ns.ask("echo", "x", timeout=WAIT)
        (server_conn,) = server.get_connections()
        client.close(4001, "bye")  # a close code, counted by number
        await asyncio.wait_for(server_conn.wait_closed(), WAIT)
        stats = server.stats
        assert from_json(to_json(stats)) == stats
        assert 4001 in from_json(to_json(stats)).closes
        assert from_json(to_json(stats)).ask_latency.buckets[-1][0] == float("inf")
    finally:
        await listener.close()
        await server.close()
    with pytest.raises(ValueError, match="not a neffos stats snapshot"):
        from_json('{"connections": 1}')
    with pytest.raises(ValueError, match="not a neffos stats snapshot"):
        from_json("not json")


async def test_gathered_metrics(caplog: pytest.LogCaptureFixture) -> None:
    """`listen_gathered`: each scrape awaits the snapshots; a failing gather is a 500."""
    one = neffos.Server({"a": {}})
    calls: list[int] = []
    failing = False

    async def gather() -> list[tuple[dict[str, str], neffos.ServerStats]]:
        calls.append(1)
        await asyncio.sleep(0)  # I/O in between, as a supervisor asking its workers
        if failing:
            raise RuntimeError("a worker said nonsense")
        return [({"worker": "0"}, one.stats), ({"worker": "1"}, one.stats)]

    exporter = await metrics.listen_gathered(gather, "127.0.0.1", 0)
    try:
        s = await scrape(exporter.url)
        assert s[key("neffos_namespace_connections", namespace="a", worker="1")] == 0
        assert s[key("neffos_build_info", version=neffos.__version__, worker="0")] == 1
        assert (await http_get(exporter.url, "HEAD"))[::2] == (200, b"")
        assert (await http_get(exporter.url, "POST"))[0] == 405
        assert (await http_get(exporter.url.replace("/metrics", "/x")))[0] == 404
        assert len(calls) == 2  # GET and HEAD; never for a refused method or path
        failing = True
        status, _, body = await http_get(exporter.url)
        assert (status, body) == (500, b"Internal Server Error\n")
        assert "a worker said nonsense" in caplog.text
    finally:
        await exporter.close()


# -- the neffos command --------------------------------------------------------------------

APP = '''\
import neffos

server = neffos.Server({"v1": {"echo": lambda ns, msg: msg.body}})
'''


@contextlib.asynccontextmanager
async def serving(cwd: Path, *args: str, env: dict[str, str] | None = None
                  ) -> AsyncIterator[Program]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "neffos", "serve", *args, cwd=cwd, env=env or ENV,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    program = Program("neffos serve " + " ".join(args), proc)
    try:
        yield program
    finally:
        await program.kill()


async def test_serve_with_metrics(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    async with serving(tmp_path, "app:server", "--port", "0", "--path", "/echo",
                       "--metrics-path", "/metrics", "--metrics-port", "0") as program:
        url = (await program.expect("listening on ")).removeprefix("listening on ")
        same_port = (await program.expect("metrics on ")).removeprefix("metrics on ")
        own_port = (await program.expect("metrics on ")).removeprefix("metrics on ")
        port = urlsplit(url).port
        assert same_port == f"http://127.0.0.1:{port}/metrics"
        assert urlsplit(own_port).port != port and own_port.endswith("/metrics")
        before = await scrape(own_port)
        async with neffos.dial(url, {"v1": {}}) as client:
            ns = await client.connect("v1")
            for i in range(5):
                assert (await ns.ask("echo", str(i), timeout=WAIT)).text == str(i)
            during = await scrape(same_port)
            assert during.changes(before) == {
                "neffos_connections": 1,
                "neffos_connections_accepted_total": 1,
                "neffos_namespace_connects_total": 1,
                key("neffos_namespace_connections", namespace="v1"): 1,
                key("neffos_messages_total", direction="in"): 7,
                key("neffos_messages_total", direction="out"): 7,
            }
            assert (await scrape(own_port)).samples == during.samples
        assert (await http_get(own_port.replace("/metrics", "/other")))[0] == 404
        program.proc.send_signal(signal.SIGTERM)
        _, stderr = await program.finish(0, eof=False)
        assert stderr == "", stderr


async def test_serve_metrics_errors(tmp_path: Path,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    (tmp_path / "app.py").write_text(APP)
    # --metrics-path needs the endpoint on a path of its own: a usage error (2)
    async with serving(tmp_path, "app:server", "--port", "0",
                       "--metrics-path", "/metrics") as program:
        _, stderr = await program.finish(2)
        assert stderr.strip() == "error: --metrics-path needs --path, and another path " \
            "starting with /", stderr
    # several workers: a request on the endpoint's port reaches one of them only
    async with serving(tmp_path, "app:server", "--port", "0", "--workers", "2",
                       "--path", "/echo", "--metrics-path", "/metrics") as program:
        _, stderr = await program.finish(2)
        assert "reaches one worker at random: use --metrics-port" in stderr, stderr
    # the metrics port taken: one line, exit 1 (with workers: before any starts)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            async with serving(tmp_path, "app:server", "--port", "0", "--workers", workers,
                               "--metrics-port", str(port)) as program:
                lines, stderr = await program.finish(1)
                assert lines == [], lines
                assert stderr == f"error: cannot listen on 127.0.0.1:{port} for metrics: " \
                    "address already in use\n", stderr
    # without prometheus_client: one line naming the extra, exit 1
    blocker = tmp_path_factory.mktemp("blocked") / "prometheus_client"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked here')\n")
    env = {**ENV, "PYTHONPATH": str(blocker.parent)}
    for option in (["--metrics-port", "0"], ["--path", "/echo", "--metrics-path", "/m"],
                   ["--workers", "2", "--metrics-port", "0"]):
        async with serving(tmp_path, "app:server", "--port", "0", *option, env=env) as program:
            _, stderr = await program.finish(1)
            assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
            assert "pip install 'neffos[metrics]'" in stderr, stderr


async def test_pages_may_answer_with_any_sequence_or_a_coroutine() -> None:
    """A page answer given as a list still works; an awaited one that is not
    (status, headers, body) is a 500, never a connection left hanging."""

    async def later(request: neffos.Request) -> Any:
        await asyncio.sleep(0)
        return "nonsense" if request.path == "/bad" else (200, [], b"later")

    def pages(request: neffos.Request) -> Any:
        if request.path == "/list":
            return [200, [], b"a list"]
        return later(request)

    server = neffos.Server({"v1": {}})
    listener = await server.listen("127.0.0.1", 0, path="/echo", pages=pages)
    try:
        base = f"http://127.0.0.1:{listener.port}"
        assert (await http_get(base + "/list"))[::2] == (200, b"a list")
        assert (await http_get(base + "/later"))[::2] == (200, b"later")
        assert (await http_get(base + "/bad"))[0] == 500
    finally:
        await listener.close()
        await server.close()
