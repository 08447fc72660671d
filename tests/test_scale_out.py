"""Scale-out over a real Redis or NATS, with the nodes in processes of their own.

Every multi-node test starts a broker (tests/helpers/brokers.py) and two node processes
(tests/helpers/node_proc.py); the clients live in the test process and dial the nodes
over real sockets. A raw subscriber on the broker (``Tap``) sees every payload
the nodes publish, and publishes Go-shaped or malformed payloads itself.

Nothing sleeps. Pub/sub gives no "subscribed" signal to the other nodes, so
``Cluster.converge`` retries a probe until every client got one, and
``Cluster.settle`` proves that nothing sent earlier is still in flight: probes
from A, B, A, B, each sent once every client saw the previous one. The broker
delivers in publication order, so whatever a node published before a probe (and
Redis's echo of it) arrives everywhere before the probes that follow. Counters
that move only once the broker took a publication are awaited in the node
(``wait_stats``), not polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers import UNIT, Recorder
from helpers.brokers import Broker, running
from helpers.raw import RawPeer

import neffos

pytestmark = pytest.mark.broker

HERE = Path(__file__).resolve().parent
NODE = HERE / "helpers" / "node_proc.py"
VECTORS = {v["name"]: v for v in json.loads((HERE / "protocol-vectors.json").read_text())}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
WAIT = 10 * UNIT  # one step: a process starting, a message crossing the bus, a reconnect
RETRY = 0.5 * UNIT  # how long one probe may take before converge() sends another
#: Go's prefixes in the protocol documents (and our defaults)
PREFIX = {"redis": "MyChatApp", "nats": "neffos"}
ANY_NODE = "ffffffff-ffff-ffff-ffff-ffffffffffff"


@pytest.fixture(params=["redis", "nats"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def channel(kind: str, name: str) -> str:
    """Go's channel (Redis) or subject (NATS) of a name (docs/topics/protocol.md#bus)."""
    return f"MyChatApp.{name}." if kind == "redis" else f"neffos.{name}"


def vector_channel(kind: str, vector: dict[str, Any]) -> str:
    bus = vector["bus"]
    if kind == "redis":
        return str(bus.get("redis_publish_channel") or bus["redis_subscribe_plain"])
    return str(bus["nats_subject"])


# -- node processes ------------------------------------------------------------------


class Node:
    """A tests/helpers/node_proc.py process: JSON commands in, answers and log lines out."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.url = ""
        self.logs: list[str] = []
        self._log_changed = asyncio.Event()
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self.sent = 0  # broadcast commands: each publishes exactly one message
        self._ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        assert proc.stderr is not None
        self._stderr = asyncio.ensure_future(proc.stderr.read())
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, broker: Broker, name: str, *extra: str, prefix: str = "") -> Node:
        url = broker.address if broker.kind == "redis" else broker.url
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(NODE), "--broker", broker.kind, "--url", url,
            "--prefix", prefix or PREFIX[broker.kind], "--name", name, *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        node = cls(name, proc)
        try:
            node.url = await asyncio.wait_for(asyncio.shield(node._ready), 2 * WAIT)
        except BaseException:
            await node.stop()
            raise
        return node

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode().rstrip("\r\n")
            if line.startswith("READY "):
                self._ready.set_result(line.removeprefix("READY "))
            elif line.startswith("LOG "):
                self.logs.append(line.removeprefix("LOG "))
                self._log_changed.set()
            elif line.startswith("{"):
                answer = json.loads(line)
                fut = self._answers.pop(answer.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(answer)
        await self.proc.wait()
        stderr = (await self._stderr).decode()
        error = AssertionError(f"node {self.name} exited ({self.proc.returncode}): {stderr}")
        for fut in [self._ready, *self._answers.values()]:
            if not fut.done():
                fut.set_exception(error)
                fut.exception()

    async def call(self, cmd: str, *, wait: float = WAIT, **fields: Any) -> dict[str, Any]:
        ident = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[ident] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, "id": ident, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, wait)

    async def broadcast(self, event: str, body: str = "", **fields: Any) -> None:
        answer = await self.call("broadcast", event=event, body=body, **fields)
        assert answer["ok"], answer
        self.sent += 1

    async def ask(self, event: str, body: str = "", **fields: Any) -> dict[str, Any]:
        fields.setdefault("timeout", WAIT)
        return await self.call("ask", event=event, body=body, wait=fields["timeout"] + WAIT,
                               **fields)

    async def stats(self) -> dict[str, Any]:
        return await self.call("stats")

    async def wait_stats(self, field: str, at_least: int) -> dict[str, Any]:
        """The node's stats once ``field >= at_least`` (the node wakes on every change)."""
        answer = await self.call(
            "wait_stats", field=field, at_least=at_least, timeout=WAIT, wait=2 * WAIT
        )
        assert answer["ok"], f"{self.name}: {field} never reached {at_least}: {answer}"
        return answer

    def log_mark(self) -> int:
        return len(self.logs)

    async def expect_log(self, text: str, since: int = 0) -> str:
        """Wait for a log line (after ``since``) that contains ``text``."""
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    for line in self.logs[since:]:
                        if text in line:
                            return line
                    self._log_changed.clear()
                    await self._log_changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name} never logged {text!r}; logs: {self.logs[since:]}")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("exit", wait=WAIT)
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), WAIT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, WAIT)


# -- clients ---------------------------------------------------------------------------


class Peer:
    """A neffos client (in this process) on one node, recording what it receives.

    Items are ``(event, room, body text)`` of every non-system event of the
    namespace ``chat``. It answers the event ``question`` with
    ``"<name>: <body>"``, after ``hold`` is set when there is one, and the event
    ``refuse`` with the error ``"<name> refuses"``.
    """

    def __init__(self, name: str, node: Node) -> None:
        self.name = name
        self.node = node
        self.got = Recorder()
        self.hold: asyncio.Event | None = None
        self.client: neffos.Conn
        self.ns: neffos.NSConn
        self.room: neffos.Room | None = None
        self.handler = {
            "chat": {
                neffos.ON_ANY_EVENT: self._record,
                "question": self._question,
                "refuse": self._refuse,
            }
        }

    def _record(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        if not msg.event.startswith("_"):
            self.got.add((msg.event, msg.room, msg.text))

    async def _question(self, ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        self.got.add(("question", msg.room, msg.text))
        if self.hold is not None:
            await self.hold.wait()
        return f"{self.name}: {msg.text}".encode()

    def _refuse(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        raise PermissionError(f"{self.name} refuses")

    def of(self, *events: str) -> list[tuple[str, str, str]]:
        """What was received, only these events."""
        return [item for item in self.got.items if item[0] in events]

    async def wait_item(self, item: tuple[str, str, str], timeout: float = WAIT) -> None:
        try:
            await self.got.wait_for(lambda items: item in items, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name} never got {item}; got {self.got.items}")


async def all_got(peers: Iterable[Peer], item: tuple[str, str, str], timeout: float) -> None:
    await asyncio.gather(*(peer.got.wait_for(lambda i: item in i, timeout) for peer in peers))


class Cluster:
    """A broker, node processes and the clients of one test."""

    def __init__(self, kind: str, broker: Broker, nodes: list[Node]) -> None:
        self.kind = kind
        self.broker = broker
        self.nodes = nodes
        self.peers: list[Peer] = []
        self._seq = itertools.count(1)

    async def dial(self, node: Node, name: str, room: str | None = None) -> Peer:
        peer = Peer(name, node)
        peer.client = await neffos.dial(
            node.url, peer.handler, headers={"X-Username": name}, timeout=WAIT,
            ping_interval=None,
        )
        self.peers.append(peer)
        peer.ns = await peer.client.connect("chat", timeout=WAIT)
        if room is not None:
            peer.room = await peer.ns.join_room(room, timeout=WAIT)
        return peer

    async def converge(self, to: str | None = None) -> None:
        """Retry a probe from every node until every client (with ID ``to``) got one.

        Afterwards every node is subscribed to the namespace ``chat`` (and to the
        ID ``to``): a node subscribes in the background, so a message published
        right after a client connected elsewhere may find nobody listening.
        """
        targets = [p for p in self.peers if to is None or p.name == to]
        assert targets
        for node in self.nodes:
            async with asyncio.timeout(WAIT):
                while True:
                    item = ("sync", "", f"sync {next(self._seq)} from {node.name}")
                    await node.broadcast(item[0], item[2], to=to)
                    try:
                        await all_got(targets, item, RETRY)
                        break
                    except TimeoutError:
                        continue

    async def settle(self) -> None:
        """Return once nothing sent before the call can still arrive anywhere.

        Probes go A, B, A, B: each is sent after the previous one was seen by
        every client, so each node published it after the broker had handled
        everything published earlier; the last two flush what each node's own
        earlier publications (and their Redis echoes) left in flight.
        """
        order = [*self.nodes, *self.nodes]
        for node in order:
            item = ("probe", "", f"probe {next(self._seq)} from {node.name}")
            await node.broadcast(item[0], item[2])
            await all_got(self.peers, item, WAIT)


@contextlib.asynccontextmanager
async def cluster(kind: str, *extra: str, nodes: int = 2) -> AsyncIterator[Cluster]:
    async with running(kind) as broker:
        started = await asyncio.gather(
            *(Node.start(broker, f"node{'ABCD'[i]}", *extra) for i in range(nodes)),
            return_exceptions=True,
        )
        ok = [n for n in started if isinstance(n, Node)]
        c = Cluster(kind, broker, ok)
        try:
            for result in started:
                if isinstance(result, BaseException):
                    raise result
            yield c
        finally:
            for peer in c.peers:
                with contextlib.suppress(Exception):
                    await peer.client.aclose()
            for node in ok:
                await node.stop()


# -- a raw subscriber/publisher on the broker ---------------------------------------------


class Tap:
    """Subscribes to everything on the broker (``*`` / ``>``) and publishes raw bytes."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.got = Recorder()  # (channel, payload)
        self._task: asyncio.Task[None] | None = None
        self._redis: Any = None
        self._pubsub: Any = None
        self._nats: Any = None

    async def __aenter__(self) -> Tap:
        if self.broker.kind == "redis":
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis(host="127.0.0.1", port=self.broker.port)
            self._pubsub = self._redis.pubsub()
            await self._pubsub.psubscribe("*")
            ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._read_redis(ready))
            await asyncio.wait_for(ready, WAIT)
        else:
            import nats

            self._nats = await nats.connect(self.broker.url)

            async def on_message(msg: Any) -> None:
                self.got.add((msg.subject, msg.data))

            await self._nats.subscribe(">", cb=on_message)
            await self._nats.flush()
        return self

    async def _read_redis(self, ready: asyncio.Future[None]) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is None:
                continue
            if message["type"] == "psubscribe" and not ready.done():
                ready.set_result(None)
            elif message["type"] == "pmessage":
                self.got.add((message["channel"].decode(), bytes(message["data"])))

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._pubsub is not None:
            await self._pubsub.aclose()
            await self._redis.aclose()
        if self._nats is not None:
            await self._nats.close()

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._redis is not None:
            await self._redis.publish(channel, payload)
        else:
            await self._nats.publish(channel, payload)
            await self._nats.flush()

    async def pubsub(self, *args: str) -> Any:
        """A ``PUBSUB`` query (Redis)."""
        return await self._redis.execute_command("PUBSUB", *args)

    def mark(self) -> int:
        return len(self.got.items)

    def since(self, mark: int, *, probes: bool = False) -> list[tuple[str, bytes]]:
        """What was published after ``mark`` (without the probes of Cluster)."""
        return [
            item for item in self.got.items[mark:]
            if probes or not re.match(rb"[^;]*;chat;;(sync|probe);0;0;", item[1])
        ]

    async def wait(
        self, predicate: Callable[[tuple[str, bytes]], bool], since: int = 0
    ) -> tuple[str, bytes]:
        """The first publication (after ``since``, probes aside) that matches."""
        try:
            await self.got.wait_for(lambda _: any(map(predicate, self.since(since))), WAIT)
        except TimeoutError:
            raise AssertionError(f"no such publication; saw {self.since(since)}")
        return next(i for i in self.since(since) if predicate(i))


async def raw_peer(node: Node, name: str, namespace: str, room: str | None = None) -> RawPeer:
    """A raw WebSocket client (what a Go client writes, byte for byte) on ``node``."""
    peer = await RawPeer.connect(node.url, extra_headers={"X-Username": name})
    assert await peer.handshake() == name
    peer.send(f"$1;{namespace};;_OnNamespaceConnect;0;0;")
    assert await peer.recv(WAIT) == "$1;;;;;;"
    if room is not None:
        peer.send(f"$2;{namespace};{room};_OnRoomJoin;0;0;")
        assert await peer.recv(WAIT) == "$2;;;;;;"
    return peer


async def next_frame(peer: RawPeer, skip: Callable[[str], bool] = lambda f: False) -> str:
    while True:
        frame = await peer.recv(WAIT)
        if not skip(frame):
            return str(frame)


# == chat, broadcast, exclusion across nodes ==============================================


async def test_chat_in_a_room_across_nodes_without_duplicates(kind: str) -> None:
    async with cluster(kind) as c:
        a, b = c.nodes
        alice = await c.dial(a, "alice", room="lobby")
        carol = await c.dial(a, "carol", room="lobby")
        frank = await c.dial(a, "frank", room="kitchen")
        bob = await c.dial(b, "bob", room="lobby")
        dave = await c.dial(b, "dave", room="lobby")
        eve = await c.dial(b, "eve", room="kitchen")
        await c.converge()

        assert alice.room is not None and bob.room is not None
        alice.room.emit("chat", "hello from alice")  # relayed by node A, excluding alice
        await bob.wait_item(("chat", "lobby", "hello from alice"))
        bob.room.emit("chat", "hi from bob")  # relayed by node B, excluding bob
        for peer in (alice, carol, dave):
            await peer.wait_item(("chat", "lobby", "hi from bob"))
        await c.settle()

        hello = ("chat", "lobby", "hello from alice")
        hi = ("chat", "lobby", "hi from bob")
        assert alice.of("chat") == [hi]  # never her own line
        assert bob.of("chat") == [hello]
        assert carol.of("chat") == [hello, hi]  # local and remote, each once
        assert dave.of("chat") == [hello, hi]
        assert frank.of("chat") == [] and eve.of("chat") == []  # another room


async def test_broadcast_to_namespace_room_and_id_across_nodes(kind: str) -> None:
    async with cluster(kind) as c:
        a, b = c.nodes
        alice = await c.dial(a, "alice", room="lobby")
        kim_a = await c.dial(a, "kim")
        bob = await c.dial(b, "bob", room="lobby")
        kim_b = await c.dial(b, "kim", room="kitchen")
        # an ID equal to the namespace name shares its channel (docs/topics/protocol.md#bus)
        same = await c.dial(b, "chat")
        everyone = [alice, kim_a, bob, kim_b, same]
        await c.converge()
        await c.converge(to="kim")
        await c.converge(to="bob")

        await a.broadcast("news", "to the namespace")
        await b.broadcast("news", "to the lobby", room="lobby")
        await a.broadcast("news", "to the kitchen", room="kitchen")
        await a.broadcast("notify", "to bob", to="bob")
        await b.broadcast("notify", "to every kim", to="kim")
        namespace = ("news", "", "to the namespace")
        lobby = ("news", "lobby", "to the lobby")
        kitchen = ("news", "kitchen", "to the kitchen")
        to_bob = ("notify", "", "to bob")
        to_kim = ("notify", "", "to every kim")
        for peer in everyone:
            await peer.wait_item(namespace)
        for peer in (alice, bob):
            await peer.wait_item(lobby)
        await kim_b.wait_item(kitchen)
        await bob.wait_item(to_bob)
        for peer in (kim_a, kim_b):
            await peer.wait_item(to_kim)
        await c.settle()

        # (local and remote messages may interleave: compare sorted lists)
        assert sorted(alice.of("news", "notify")) == sorted([namespace, lobby])
        assert sorted(bob.of("news", "notify")) == sorted([namespace, lobby, to_bob])
        assert sorted(kim_a.of("news", "notify")) == sorted([namespace, to_kim])
        assert sorted(kim_b.of("news", "notify")) == sorted([namespace, kitchen, to_kim])
        assert same.of("news", "notify") == [namespace]  # once, not once per route
        # probes (namespace broadcasts) also reached the "chat" client exactly once each
        probes = same.of("probe")
        assert len(probes) == len(set(probes)) == 4


async def test_exclude_a_connection_across_nodes(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        alice = await c.dial(a, "alice", room="lobby")
        alice2 = await c.dial(a, "alice", room="lobby")  # same ID, another connection
        bob = await c.dial(b, "bob", room="lobby")
        await c.converge()
        a_id = (await a.stats())["node_id"]

        mark = tap.mark()
        assert alice.room is not None
        alice.room.emit("chat", "not to myself")  # broadcast(ns, msg): excludes this conn
        item = ("chat", "lobby", "not to myself")
        await bob.wait_item(item)
        await alice2.wait_item(item)  # exclusion by connection, not by ID
        await c.settle()
        assert alice.of("chat") == []
        assert alice2.of("chat") == [item] and bob.of("chat") == [item]

        # on the bus: Go's server-conn-id of the sender in field 1 (docs/topics/protocol.md#bus)
        ch, payload = await tap.wait(lambda i: i[1].endswith(b";not to myself"), since=mark)
        assert tap.since(mark)[0] == (ch, payload)
        assert ch == channel(kind, "chat")
        pattern = rb"neffos\(0x" + a_id.encode() + rb"\(alice0x[0-9a-f]+\)\);chat;lobby;chat;0;0;"
        assert re.fullmatch(pattern + rb"not to myself", payload), payload


async def test_exclude_an_id_across_nodes(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        kims = [await c.dial(a, "kim"), await c.dial(b, "kim")]
        lees = [await c.dial(a, "lee"), await c.dial(b, "lee")]
        await c.converge()

        mark = tap.mark()
        await a.broadcast("news", "not for kim (A)", exclude_id="kim")
        await b.broadcast("news", "not for kim (B)", exclude_id="kim")
        for peer in lees:
            await peer.wait_item(("news", "", "not for kim (A)"))
            await peer.wait_item(("news", "", "not for kim (B)"))
        await c.settle()
        for peer in kims:
            assert peer.of("news") == []
        for peer in lees:
            assert len(peer.of("news")) == 2

        # Go cannot exclude an ID over a bus; the marker looks like a server-conn-id of
        # a node that does not exist, so Go nodes deliver as they always did
        await tap.wait(lambda i: i[1].endswith(b"(A)"), since=mark)
        await tap.wait(lambda i: i[1].endswith(b"(B)"), since=mark)
        published = sorted(p for _, p in tap.since(mark) if b";news;" in p)
        assert published == [
            f"neffos(0x{ANY_NODE}(kim));chat;;news;0;0;not for kim (A)".encode(),
            f"neffos(0x{ANY_NODE}(kim));chat;;news;0;0;not for kim (B)".encode(),
        ]


# == server.ask across nodes ===============================================================


async def test_ask_answered_by_a_client_on_another_node(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        await c.dial(a, "yolanda")
        bob = await c.dial(b, "bob")
        await c.converge()
        await c.converge(to="bob")
        await c.converge(to="yolanda")

        mark = tap.mark()
        answer = await a.ask("question", "where are you?", to="bob")
        assert answer["ok"] and answer["body"] == "bob: where are you?", answer
        assert answer["event"] == "question"
        assert bob.of("question") == [("question", "", "where are you?")]
        # the request on bob's channel with a Go-shaped token, the answer on the token
        answered = await tap.wait(lambda i: i[0] == answer["wait"], since=mark)
        assert answered == (answer["wait"], b";chat;;question;0;0;bob: where are you?")
        ch, request = tap.since(mark)[0]
        assert ch == channel(kind, "bob")
        token = re.fullmatch(rb"([Q-Z][0-9]+);chat;;question;0;0;where are you\?", request)
        assert token is not None, request
        assert answer["wait"] == token[1].decode()
        assert len(tap.since(mark)) == 2

        # the other way round
        answer = await b.ask("question", "and you?", to="yolanda")
        assert answer["ok"] and answer["body"] == "yolanda: and you?"

        # an error answer crosses the bus as an error (docs/topics/protocol.md#answers), raised by
        # server.ask
        mark = tap.mark()
        answer = await a.ask("refuse", "please", to="bob")
        assert answer["ok"] is False and answer["error"] == "bob refuses", answer
        assert answer["type"] == "RemoteError"
        token = tap.since(mark)[0][1].split(b";", 1)[0].decode()
        assert await tap.wait(lambda i: i[0] == token, since=mark) == (
            token, b";chat;;refuse;1;0;bob refuses"
        )

        # nobody with that ID anywhere: a timeout, not a hang
        answer = await a.ask("question", "anyone?", to="nobody", timeout=RETRY)
        assert answer["ok"] is False and answer["type"] == "AskTimeout"


async def test_ask_returns_only_the_first_answer(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        slow_local = await c.dial(a, "yolanda")
        await c.dial(b, "xavier")  # answers at once
        slow_remote = await c.dial(b, "zed")
        slow_local.hold, slow_remote.hold = asyncio.Event(), asyncio.Event()
        await c.converge()

        answer = await a.ask("question", "q1")  # the whole namespace, on both nodes
        assert answer["ok"] and answer["body"] == "xavier: q1"
        token = answer["wait"]
        for peer in (slow_local, slow_remote):
            assert peer.of("question") == [("question", "", "q1")]

        # the late answers: zed's is published by node B (the asker dropped it),
        # yolanda's reaches node A directly and is dropped there
        slow_local.hold.set()
        slow_remote.hold.set()
        late = await tap.wait(lambda i: i == (token, b";chat;;question;0;0;zed: q1"))
        assert late
        assert [p for ch, p in tap.got.items if ch == token] == [
            b";chat;;question;0;0;xavier: q1",
            b";chat;;question;0;0;zed: q1",
        ]
        # everybody still works; the next ask gets its own first answer
        answer = await a.ask("question", "q2", to="zed")
        assert answer["ok"] and answer["body"] == "zed: q2"
        answer = await a.ask("question", "q3", to="yolanda")
        assert answer["ok"] and answer["body"] == "yolanda: q3"


# == security: a client's "!" token never makes a node publish ==============================


async def test_client_bang_token_never_publishes(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        bob = await c.dial(b, "bob")
        carol = await c.dial(a, "carol")
        await c.converge()
        await c.converge(to="bob")
        attacker = await raw_peer(a, "mallory", "chat")

        mark = tap.mark()
        # Go strips a "!" at index 1 and publishes the frame to the channel named by
        # the rest of the token (docs/topics/protocol.md#tokens): "M!yChatApp.chat." ->
        # "MyChatApp.chat."
        for target in (channel(kind, "chat"), channel(kind, "bob")):
            token = target[0] + "!" + target[1:]
            attacker.send(f"{token};chat;;injected;0;0;evil")
        attacker.send(";chat;;chat;0;0;probe")  # relayed (excluding mallory): published
        await tap.wait(lambda i: i[1].endswith(b";chat;;chat;0;0;probe"), since=mark)
        await bob.wait_item(("chat", "", "probe"))
        await carol.wait_item(("chat", "", "probe"))
        await c.settle()

        assert bob.of("injected") == [] and carol.of("injected") == []
        assert bob.of("chat") == [("chat", "", "probe")]
        published = [p for _, p in tap.since(mark) if b";sync;" not in p and b";probe;" not in p]
        assert len(published) == 1, published
        assert published[0].startswith(b"neffos(0x")
        assert published[0].endswith(b";chat;;chat;0;0;probe")
        assert not any(b"evil" in p for _, p in tap.got.items)
        attacker.close()


# == cost ==================================================================================


async def test_broker_connections_do_not_grow_with_clients(kind: str) -> None:
    """1,000 clients on one node hold as many broker connections as 1 client."""
    async with running(kind) as broker, Tap(broker) as tap:
        await tap.publish("warm-up", b"")  # the tap's publishing connection is open too
        baseline = await broker.connection_count()  # the tap
        exchange = broker.exchange(PREFIX[kind])
        got = Recorder()  # (client id, body)
        handler = {"chat": {"news": lambda ns, msg: got.add((ns.conn.id, msg.text))}}
        server = neffos.Server({"chat": {}}, id_generator=lambda r: r.headers["X-Username"],
                               ping_interval=None)
        server.use_stack_exchange(exchange)
        clients: list[neffos.Conn] = []
        bodies = itertools.count()

        def reached(body: str) -> list[str]:
            return sorted(conn_id for conn_id, text in got.items if text == body)

        async def from_the_bus(n: int) -> None:
            """Publish on the namespace channel (again) until all n clients got it."""
            async with asyncio.timeout(WAIT):
                while True:
                    body = f"from the bus {next(bodies)}"
                    await tap.publish(channel(kind, "chat"), f";chat;;news;0;0;{body}".encode())
                    with contextlib.suppress(TimeoutError):
                        await got.wait_for(lambda _, b=body: len(reached(b)) >= n, RETRY + n / 100)
                        break
            assert reached(body) == sorted(c.id for c in clients)  # each client once

        async def dial(i: int) -> None:
            client = await neffos.testing.dial_memory(
                server, handler, headers={"X-Username": f"user{i}"}, timeout=WAIT,
                ping_interval=None,
            )
            clients.append(client)
            await client.connect("chat", timeout=WAIT)

        try:
            await server.start()
            await dial(0)
            await from_the_bus(1)  # the node listens
            server.broadcast(None, neffos.Message("chat", "news", "published"))  # and publishes
            await tap.wait(lambda i: i[1] == b";chat;;news;0;0;published")
            one = await broker.connection_count() - baseline

            await asyncio.gather(*(dial(i) for i in range(1, 1000)))
            assert server.get_total_connections() == 1000
            received = exchange.stats.received
            await from_the_bus(1000)
            # the node received that publication once, not once per client
            assert exchange.stats.received - received == 1
            mark = tap.mark()
            server.broadcast(None, neffos.Message("chat", "news", "published again"))
            await tap.wait(lambda i: i[1] == b";chat;;news;0;0;published again", since=mark)
            thousand = await broker.connection_count() - baseline

            assert thousand == one, (one, thousand)
            assert 1 <= one <= exchange.connections
        finally:
            for client in clients:
                await client.aclose()
            await server.close()


async def test_redis_exchange_starts_without_deprecation_warnings() -> None:
    async with running("redis") as broker:
        exchange = broker.exchange("MyChatApp")
        await exchange.start(lambda subscription, payload: None)  # warnings are errors
        await exchange.close()


async def test_a_node_receives_a_broadcast_once(kind: str) -> None:
    async with cluster(kind) as c:
        a, b = c.nodes
        alice = await c.dial(a, "alice")
        remote = [await c.dial(b, f"user{i}") for i in range(5)]
        await c.converge()
        await c.settle()
        # the publish counters move once the broker took the message: wait for it
        before_a = await a.wait_stats("published", a.sent)
        before_b = await b.wait_stats("published", b.sent)

        items = [("news", "", f"news {i}") for i in range(3)]
        for item in items:
            await a.broadcast(item[0], item[2])
        for peer in [alice, *remote]:
            for item in items:
                await peer.wait_item(item)
        after_b = await b.stats()
        # node B's counter moves before its clients get a message: exact already
        assert after_b["received"] - before_b["received"] == 3  # not 3 x 5

        await c.settle()  # + 2 probes published by each node
        after_a = await a.wait_stats("published", a.sent)
        after_b = await b.wait_stats("published", b.sent)
        assert after_a["published"] - before_a["published"] == 3 + 2
        assert after_b["published"] - before_b["published"] == 2
        # a node never receives its own publications: NATS connections are opened
        # with no-echo, the Redis exchange recognises and drops Redis's echoes
        assert after_b["received"] - before_b["received"] == 3 + 2
        assert after_a["received"] - before_a["received"] == 2
        for peer in [alice, *remote]:
            assert peer.of("news") == items  # once each, local and remote


async def test_local_clients_do_not_need_the_bus(kind: str) -> None:
    async with cluster(kind) as c:
        a, b = c.nodes
        bob = await c.dial(b, "bob", room="lobby")
        await c.dial(a, "alice", room="lobby")
        await c.converge()
        mark = a.log_mark()
        await c.broker.stop()
        await a.expect_log("lost the", since=mark)

        # clients that arrive while the broker is down can still talk to each other
        alice = await c.dial(a, "alice2", room="kitchen")
        carol = await c.dial(a, "carol", room="kitchen")
        assert alice.room is not None
        alice.room.emit("chat", "the bus is down")
        await carol.wait_item(("chat", "kitchen", "the bus is down"))
        carol.ns.emit("chat", "to the namespace")  # relayed to all of chat on node A
        await alice.wait_item(("chat", "", "to the namespace"))
        assert bob.of("chat") == []


# == faults ================================================================================


async def test_broker_restart(kind: str) -> None:
    """Kill the broker, restart it on its port: the nodes reconnect and resubscribe."""
    async with cluster(kind) as c:
        a, b = c.nodes
        alice = await c.dial(a, "alice", room="lobby")
        carol = await c.dial(a, "carol", room="lobby")
        bob = await c.dial(b, "bob", room="lobby")
        await c.converge()
        await c.settle()
        marks = [a.log_mark(), b.log_mark()]

        await c.broker.stop()
        lost = "lost the Redis subscriber connection" if kind == "redis" else "lost the NATS"
        for node, mark in zip(c.nodes, marks, strict=True):
            await node.expect_log(lost, since=mark)
        before = await a.stats()

        # while it is down: local delivery works, the rest cannot be delivered
        assert alice.room is not None and bob.room is not None
        alice.room.emit("chat", "while down")
        await carol.wait_item(("chat", "lobby", "while down"))
        for i in range(3):
            await a.broadcast("news", f"lost {i}")
        # at-most-once: what cannot be published is counted and logged, not kept
        down = await a.wait_stats("publish_failed", before["publish_failed"] + 4)
        assert down["published"] == before["published"]
        text = "Redis publish failed" if kind == "redis" else "NATS is unreachable"
        line = await a.expect_log(text, since=marks[0])
        assert "lost" in line

        await c.broker.start()  # same port
        back = "reconnected to Redis" if kind == "redis" else "reconnected to NATS"
        for node, mark in zip(c.nodes, marks, strict=True):
            await node.expect_log(back, since=mark)
        await c.converge()  # retries a probe until it crosses the bus again

        alice.room.emit("chat", "back again")
        await bob.wait_item(("chat", "lobby", "back again"))
        bob.room.emit("chat", "welcome back")
        await alice.wait_item(("chat", "lobby", "welcome back"))
        await carol.wait_item(("chat", "lobby", "welcome back"))
        await c.settle()

        after_a, after_b = await a.stats(), await b.stats()
        assert after_a["reconnects"] >= 1 and after_b["reconnects"] >= 1
        assert carol.of("chat") == [
            ("chat", "lobby", "while down"),
            ("chat", "lobby", "back again"),
            ("chat", "lobby", "welcome back"),
        ]
        lost_news = [("news", "", f"lost {i}") for i in range(3)]
        assert after_a["publish_failed"] == before["publish_failed"] + 4  # counted once
        assert bob.of("chat") == [("chat", "lobby", "back again")]
        assert bob.of("news") == []
        for peer in (alice, carol):
            assert peer.of("news") == lost_news  # local clients got everything


async def test_malformed_bus_payloads_are_dropped(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        alice = await c.dial(a, "alice")
        bob = await c.dial(b, "bob")
        slow = await c.dial(b, "slow")
        slow.hold = asyncio.Event()
        await c.converge()
        await c.converge(to="bob")
        await c.converge(to="slow")
        before = await b.stats()
        mark = b.log_mark()

        garbage = [b"", b"garbage", b"\xff\xfe\x00\x01", b"a;b;c;d;e;f", b"only;three;fields"]
        for payload in garbage:
            await tap.publish(channel(kind, "chat"), payload)
            await tap.publish(channel(kind, "bob"), payload)
        stats = await b.wait_stats("malformed", before["malformed"] + 2 * len(garbage))
        assert stats["received"] - before["received"] == 2 * len(garbage)
        await b.expect_log("dropped a malformed bus message", since=mark)
        assert sum("malformed" in line for line in b.logs[mark:]) == 2 * len(garbage)

        # a malformed answer to a pending ask is dropped too; the real one still counts
        before_a = await a.stats()
        tap_mark = tap.mark()
        ask = asyncio.ensure_future(a.ask("question", "are you there?", to="slow"))
        _, request = await tap.wait(lambda i: b";question;" in i[1], since=tap_mark)
        token = request.split(b";", 1)[0].decode()
        await slow.wait_item(("question", "", "are you there?"))
        await tap.publish(token, b"not a neffos frame")
        await a.wait_stats("malformed", before_a["malformed"] + 1)
        slow.hold.set()
        answer = await ask
        assert answer["ok"] and answer["body"] == "slow: are you there?"

        # both nodes keep working
        await a.broadcast("news", "still here")
        await bob.wait_item(("news", "", "still here"))
        bob.ns.emit("chat", "me too")
        await alice.wait_item(("chat", "", "me too"))
        await c.settle()
        assert bob.of("news", "chat") == [("news", "", "still here")]
        assert a.proc.returncode is None and b.proc.returncode is None


async def test_malformed_ask_answer_is_logged(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        slow = await c.dial(b, "slow")
        slow.hold = asyncio.Event()
        await c.converge(to="slow")
        mark, tap_mark = a.log_mark(), tap.mark()
        ask = asyncio.ensure_future(a.ask("question", "?", to="slow"))
        _, request = await tap.wait(lambda i: b";question;" in i[1], since=tap_mark)
        await slow.wait_item(("question", "", "?"))
        await tap.publish(request.split(b";", 1)[0].decode(), b"not a neffos frame")
        await a.wait_stats("malformed", 1)
        slow.hold.set()
        assert (await ask)["ok"]
        # a log line would have been printed before the answer to wait_stats
        assert any("malformed" in line for line in a.logs[mark:]), a.logs[mark:]


# == Go compatibility (bytes on the bus) =====================================================


async def test_go_wire_what_our_node_publishes(kind: str) -> None:
    async with cluster(kind) as c, Tap(c.broker) as tap:
        a, b = c.nodes
        alice = await c.dial(a, "alice", room="lobby")
        bob = await c.dial(b, "bob", room="lobby")
        await c.converge()
        await c.converge(to="bob")
        a_id = (await a.stats())["node_id"]

        mark = tap.mark()
        await a.broadcast("news", "to everyone")
        await a.broadcast("news", "to the lobby", room="lobby")
        to_one = VECTORS["bus_publish_to_single_conn"]  # Go's Broadcast(nil, {To: conn_ID})
        await a.broadcast("notify", "private", namespace="default", to="conn_ID")
        await a.broadcast("news", "not kim", exclude_id="kim")
        assert alice.room is not None
        alice.room.emit("chat", "hi")
        await bob.wait_item(("chat", "lobby", "hi"))
        await tap.wait(lambda i: i[1].endswith(b";chat;lobby;chat;0;0;hi"), since=mark)
        got = tap.since(mark)
        assert got[:4] == [
            (channel(kind, "chat"), b";chat;;news;0;0;to everyone"),
            (channel(kind, "chat"), b";chat;lobby;news;0;0;to the lobby"),
            (vector_channel(kind, to_one), to_one["bytes"].encode()),
            (channel(kind, "chat"), f"neffos(0x{ANY_NODE}(kim));chat;;news;0;0;not kim".encode()),
        ]
        # same shape as VECTORS["from_explicit_room_broadcast"]
        assert got[4][0] == channel(kind, "chat")
        sid = re.fullmatch(
            rb"(neffos\(0x([0-9a-f-]{36})\(alice0x[0-9a-f]+\)\));chat;lobby;chat;0;0;hi", got[4][1]
        )
        assert sid is not None and sid[2].decode() == a_id, got[4]
        assert len(got) == 5

        # Server.ask: request with an R... token (Go's genWaitStackExchange shape, see
        # VECTORS["stack_exchange_wait_actual_go_form"]) on the ID channel; the
        # answer, wait field cleared, on the channel named by the token
        mark = tap.mark()
        bob.hold = asyncio.Event()
        ask = asyncio.ensure_future(a.ask("question", "q", to="bob"))
        ch, request = await tap.wait(lambda i: b";question;" in i[1], since=mark)
        token = re.fullmatch(rb"([Q-Z][0-9]{18});chat;;question;0;0;q", request)
        assert ch == channel(kind, "bob") and token is not None, (ch, request)
        if kind == "redis":
            # the token channel is a plain SUBSCRIBE; namespaces and IDs are patterns
            assert token[1] in await tap.pubsub("CHANNELS")
            assert channel(kind, "chat").encode() not in await tap.pubsub("CHANNELS")
            # unique patterns: chat (both nodes), alice, bob, and the tap's "*"
            assert await tap.pubsub("NUMPAT") == 4
        bob.hold.set()
        answer = await ask
        assert answer["ok"] and answer["body"] == "bob: q"
        answered = await tap.wait(lambda i: i[0] == token[1].decode(), since=mark)
        assert answered == (token[1].decode(), b";chat;;question;0;0;bob: q")
        assert len(tap.since(mark)) == 2


async def test_go_payloads_are_delivered_by_our_node(kind: str) -> None:
    async with cluster(kind, nodes=1) as c, Tap(c.broker) as tap:
        (node,) = c.nodes
        member = await raw_peer(node, "conn_ID", "default", room="room1")
        other = await raw_peer(node, "other", "default")
        default = channel(kind, "default")
        # wait until the node listens on "default" and on "conn_ID"
        for target, peers in ((default, [member, other]), (channel(kind, "conn_ID"), [member])):
            async with asyncio.timeout(WAIT):
                for i in itertools.count():
                    frame = f";default;;sync;0;0;{target} {i}"
                    await tap.publish(target, frame.encode())
                    try:
                        for peer in peers:
                            await asyncio.wait_for(next_frame(peer, lambda f, s=frame: f != s),
                                                   RETRY)
                        break
                    except TimeoutError:
                        continue

        def is_sync(frame: str) -> bool:  # late copies of the retries
            return ";sync;" in frame

        # a Go node's broadcast excluding one of its own connections: ours deliver it,
        # without the server-conn-id
        vector = VECTORS["from_explicit_server_conn_id"]
        await tap.publish(vector_channel(kind, vector), vector["bytes"].encode())
        assert await next_frame(member, is_sync) == ";default;;chat;0;0;hi"
        assert await next_frame(other, is_sync) == ";default;;chat;0;0;hi"

        vector = VECTORS["from_explicit_room_broadcast"]
        await tap.publish(vector_channel(kind, vector), vector["bytes"].encode())
        assert await next_frame(member, is_sync) == ";default;room1;chat;0;0;hi room"

        vector = VECTORS["bus_publish_to_single_conn"]  # To: the ID channel
        await tap.publish(vector_channel(kind, vector), vector["bytes"].encode())
        assert await next_frame(member, is_sync) == ";default;;notify;0;0;private"

        # a Go Server.Ask: the R... token reaches the client unchanged, the client's
        # answer is published (wait cleared) to the channel named by the token
        vector = VECTORS["stack_exchange_wait_actual_go_form"]
        token = vector["decoded"]["wait"]
        await tap.publish(default, vector["bytes"].encode())
        assert await next_frame(member, is_sync) == vector["bytes"]
        assert await next_frame(other, is_sync) == vector["bytes"]
        mark = tap.mark()
        member.send(f"{token};default;;ask;0;0;dataok")
        reply = VECTORS["bus_notify_ask_reply"]
        assert await tap.wait(lambda i: i[0] == token, since=mark) == (
            vector_channel(kind, reply), reply["bytes"].encode()
        )

        # "other" got nothing of the room or ID messages: the next frame is this one
        await tap.publish(default, b";default;;end;0;0;")
        assert await next_frame(other, is_sync) == ";default;;end;0;0;"
        assert await next_frame(member, is_sync) == ";default;;end;0;0;"
        member.close()
        other.close()
