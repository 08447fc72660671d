"""Interoperability with the real neffos.js client (npm ``neffos.js@0.1.34``) under Node.

Each test runs our server in-process and drives ``tests/js/client.mjs`` — a
small neffos.js program — by JSON lines on its stdin/stdout (see the header of
that file). The wire protocol page of the docs, docs/topics/protocol.md:
#handshake, #http and #reconnection, #namespaces, #rooms; and the neffos.js API
and the neffos.js quirks a server must tolerate.

Needs ``node`` (>= 18) and ``npm ci`` in ``tests/js``; skipped otherwise, unless
``NEFFOS_REQUIRE_NODE=1`` (CI), which turns a missing Node into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import UNIT, Recorder, asgi

import neffos
from neffos import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
)
from neffos.server import Listener

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT_JS = JS_DIR / "client.mjs"
NEFFOS_JS_VERSION = "0.1.34"
WAIT = 5 * UNIT

SYSTEM = [
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
]


# -- environment -----------------------------------------------------------------------


def _node_problem() -> str | None:
    """Why the neffos.js tests cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    if match is None or int(match.group(1)) < 18:
        return f"node >= 18 is needed (found {out.stdout.strip() or out.stderr.strip()!r})"
    package = JS_DIR / "node_modules" / "neffos.js" / "package.json"
    if not package.is_file():
        return "tests/js/node_modules is missing: run `npm ci` in tests/js"
    version = json.loads(package.read_text()).get("version")
    if version != NEFFOS_JS_VERSION:
        return f"tests/js has neffos.js {version}, expected {NEFFOS_JS_VERSION}: run `npm ci`"
    return None


@pytest.fixture(scope="module")
def node() -> str:
    problem = _node_problem()
    if problem is not None:
        if os.environ.get("NEFFOS_REQUIRE_NODE") == "1":
            pytest.fail(f"NEFFOS_REQUIRE_NODE=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    path = shutil.which("node")
    assert path is not None
    return path


# -- the Node side ---------------------------------------------------------------------


class NodeClient:
    """One ``node tests/js/client.mjs <url>`` process and what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self.eof = False
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._readers = [
            asyncio.ensure_future(self._read_stdout()),
            asyncio.ensure_future(self._read_stderr()),
        ]

    @classmethod
    async def start(cls, node: str, url: str) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(CLIENT_JS),
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(JS_DIR),
        )
        client = cls(proc)
        ready = await client.wait_for(lambda line: line.get("ready") is True, "start-up")
        assert ready["defaultExportIsNamespace"], ready
        return client

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    item = json.loads(line)
                except ValueError:
                    item = {"garbage": line.decode(errors="replace")}
                self.lines.append(item)
                self._changed.set()
        finally:
            self.eof = True
            self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            self.stderr += chunk

    def _state(self) -> str:
        return (
            f"\nnode printed: {json.dumps(self.lines, indent=1)}"
            f"\nnode stderr: {self.stderr.decode(errors='replace')}"
        )

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> dict[str, Any]:
        """The first printed line that satisfies ``predicate`` (waiting for it)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines:
                        if predicate(line):
                            return line
                    if self.eof:
                        raise AssertionError(f"node exited while waiting for {what}{self._state()}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}{self._state()}") from None

    async def wait_event(self, name: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """The first event ``name`` whose fields match ``fields``."""

        def matches(line: dict[str, Any]) -> bool:
            return (
                "reply" not in line
                and line.get("event") == name
                and all(line.get(k) == v for k, v in fields.items())
            )

        return await self.wait_for(matches, f"event {name} {fields}", timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if "event" in line and "reply" not in line and (name is None or line["event"] == name)
        ]

    async def request(self, cmd: str, timeout: float = WAIT, **args: Any) -> dict[str, Any]:
        """Send a command; return its reply (``ok`` true or false)."""
        assert self.proc.stdin is not None
        ident = next(self._ids)
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.wait_for(
            lambda line: line.get("reply") == ident, f"reply to {cmd}", timeout
        )

    async def call(self, cmd: str, timeout: float = WAIT, **args: Any) -> dict[str, Any]:
        """Like :meth:`request`, asserting success."""
        reply = await self.request(cmd, timeout, **args)
        assert reply["ok"], f"{cmd} {args} failed: {reply}{self._state()}"
        return reply

    def assert_clean(self) -> None:
        bad = [line for line in self.lines if "unhandled" in line or "garbage" in line]
        assert not bad, f"unexpected output from node: {bad}{self._state()}"

    async def aclose(self) -> None:
        proc = self.proc
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@contextlib.asynccontextmanager
async def js_client(node: str, url: str) -> AsyncIterator[NodeClient]:
    client = await NodeClient.start(node, url)
    try:
        yield client
    finally:
        await client.aclose()


# -- the Python side -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(
    transport: str, handler: Any, **options: Any
) -> AsyncIterator[tuple[neffos.Server, Listener | asgi.AsgiHost]]:
    options.setdefault("ping_interval", None)
    server = neffos.Server(handler, **options)
    if transport == "asgi":
        listener: Listener | asgi.AsgiHost = await asgi.host(
            neffos.ASGIApp(server, path="/echo")
        )
    else:
        listener = await server.listen("127.0.0.1", 0, path="/echo", transport=transport)
    try:
        yield server, listener
    finally:
        await listener.close()
        await server.close()


def client_side(transport: str) -> str:
    """The Python client's transport for a server on ``transport``."""
    return "picows" if transport == "asgi" else transport


def recording(rec: Recorder, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Namespace "v1" whose system events record (event, room, is_local, is_forced, conn)."""

    def make(event: str) -> Any:
        def handler(ns: neffos.NSConn, msg: neffos.Message) -> None:
            rec.add((event, msg.room, msg.is_local, msg.is_forced, ns.conn))

        return handler

    events: dict[str, Any] = {e: make(e) for e in SYSTEM}
    events.update(extra or {})
    return {"v1": events}


def only(server: neffos.Server) -> neffos.Conn:
    (conn,) = server.get_connections()
    return conn


# -- 1. handshake ----------------------------------------------------------------------


async def test_dial_headers_reach_id_generator(node: str, server_transport: str) -> None:
    async with (
        serving(
            server_transport, {"v1": {}}, id_generator=lambda req: req.headers.get("X-Username")
        ) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        reply = await js.call("dial", headers={"X-Username": "alice"}, namespaces={"v1": []})
        assert reply["connId"] == "alice"
        assert reply["reconnectTries"] == 0
        conn = only(server)
        assert conn.id == "alice"
        assert conn.request is not None
        assert conn.request.headers.get("X-Username") == "alice"
        assert not conn.was_reconnected
        js.assert_clean()


@pytest.mark.parametrize("style", ["raise", "return", "async-raise"])
async def test_dial_refused_by_on_connect(node: str, server_transport: str, style: str) -> None:
    class NotAuthorized(Exception):
        pass

    def raises(conn: neffos.Conn) -> Any:
        raise NotAuthorized("not authorized")

    def returns(conn: neffos.Conn) -> Any:
        return NotAuthorized("not authorized")

    async def async_raises(conn: neffos.Conn) -> Any:
        await asyncio.sleep(0)
        raise NotAuthorized("not authorized")

    hook = {"raise": raises, "return": returns, "async-raise": async_raises}[style]
    async with (
        serving(server_transport, {"v1": {}}, on_connect=hook) as (_server, listener),
        js_client(node, listener.url) as js,
    ):
        reply = await js.request("dial", namespaces={"v1": []})
        assert reply["ok"] is False
        assert reply["error"] == "not authorized"
        assert reply["errorIsError"] is True
        js.assert_clean()


# -- 2. namespaces and asks -------------------------------------------------------------


async def test_js_connects_namespace(node: str, server_transport: str) -> None:
    rec = Recorder()
    async with (
        serving(server_transport, recording(rec)) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []})
        reply = await js.call("connect", namespace="v1")
        assert reply["namespace"] == "v1"
        await rec.wait_len(2)
        conn = only(server)
        assert [item[:4] for item in rec.items] == [
            (ON_NAMESPACE_CONNECT, "", False, False),
            (ON_NAMESPACE_CONNECTED, "", False, False),
        ]
        assert all(item[4] is conn for item in rec.items)
        assert [ns.conn for ns in server.get_connections_by_namespace("v1")] == [conn]
        assert [(e["event"], e["isLocal"]) for e in js.events()] == [
            (ON_NAMESPACE_CONNECT, True),
            (ON_NAMESPACE_CONNECTED, True),
        ]
        js.assert_clean()


async def test_js_ask_echo(node: str, server_transport: str) -> None:
    asked = Recorder()

    def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        asked.add(msg)
        return b"echo: " + msg.body

    async with (
        serving(server_transport, {"v1": {"echo": echo}}) as (_server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []})
        await js.call("connect", namespace="v1")
        reply = await js.call("ask", namespace="v1", event="echo", body="hello")
        assert reply["bodyType"] == "string"
        assert reply["body"] == "echo: hello"
        assert (reply["namespace"], reply["event"]) == ("v1", "echo")
        (msg,) = asked.items
        assert msg.body == b"hello"
        assert msg.wait.startswith("$")  # the asker's token, echoed verbatim
        assert not msg.set_binary
        # the answer went only to the ask, not to an event handler
        assert js.events("echo") == [] and js.events("_OnAnyEvent") == []
        js.assert_clean()


@pytest.mark.parametrize("style", ["raise", "return"])
async def test_js_ask_known_error(node: str, server_transport: str, style: str) -> None:
    class NotAWorkday(Exception):
        pass

    def workday(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        if style == "raise":
            raise NotAWorkday("not a workday")
        return NotAWorkday("not a workday")

    async with (
        serving(server_transport, {"v1": {"workday": workday, "echo": lambda ns, m: m.body}}) as (
            _server,
            listener,
        ),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []})
        await js.call("connect", namespace="v1")
        reply = await js.request("ask", namespace="v1", event="workday", body="sunday")
        assert reply["ok"] is False
        assert reply["error"] == "not a workday"
        assert reply["errorIsError"] is True
        # the connection is still fine
        again = await js.call("ask", namespace="v1", event="echo", body="still here")
        assert again["body"] == "still here"
        js.assert_clean()


# -- 3. rooms and broadcast ------------------------------------------------------------


async def test_chat_room_between_js_and_python(node: str, server_transport: str) -> None:
    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        assert server is not None
        server.broadcast(ns, msg)

    py_got = Recorder()
    py_handler = {"v1": {"chat": lambda ns, msg: py_got.add((msg.room, msg.body))}}
    async with (
        serving(server_transport, {"v1": {"chat": chat, "echo": lambda ns, m: m.body}}) as (
            server,
            listener,
        ),
        js_client(node, listener.url) as js1,
        js_client(node, listener.url) as js2,
    ):
        py = await neffos.dial(
            listener.url,
            py_handler,
            transport=client_side(server_transport),
            timeout=WAIT,
            ping_interval=None,
        )
        try:
            for js in (js1, js2):
                await js.call("dial", namespaces={"v1": ["chat"]})
                await js.call("connect", namespace="v1")
                assert (await js.call("joinRoom", namespace="v1", room="room1"))["room"] == "room1"
            py_room = await (await py.connect("v1")).join_room("room1")
            assert len(server.get_connections_by_namespace("v1")) == 3
            assert all("room1" in ns.rooms for ns in server.get_connections_by_namespace("v1"))

            for js, text in ((js1, "hello from js1"), (js2, "hello from js2")):
                sent = await js.call("emit", namespace="v1", room="room1", event="chat", body=text)
                assert sent["written"] is True
            assert py_room.emit("chat", "hello from python")

            def chats(js: NodeClient) -> list[tuple[str, str]]:
                return sorted((e["room"], e["body"]) for e in js.events("chat"))

            async def two_chats(js: NodeClient) -> None:
                await js.wait_for(lambda line: len(chats(js)) >= 2, "two chat messages")

            for js in (js1, js2):
                await two_chats(js)
            await py_got.wait_len(2)
            # One more round trip per participant: the server handled each one's
            # own chat before its ask, so an echo to the sender would be here now.
            for js in (js1, js2):
                await js.call("ask", namespace="v1", event="echo", body="sync")
            await py_room.nsconn.ask("echo", "sync", timeout=WAIT)

            assert chats(js1) == [("room1", "hello from js2"), ("room1", "hello from python")]
            assert chats(js2) == [("room1", "hello from js1"), ("room1", "hello from python")]
            assert sorted(py_got.items) == [
                ("room1", b"hello from js1"),
                ("room1", b"hello from js2"),
            ]
            for js in (js1, js2):
                assert js.events("_OnAnyEvent") == []
                js.assert_clean()
        finally:
            await py.aclose()


# -- 4. server-initiated connect and join ----------------------------------------------


async def test_wait_server_connect_right_after_dial(node: str, server_transport: str) -> None:
    """neffos.js' own pattern, ``await dial(); await conn.waitServerConnect("v1")``,
    with a server that connects the client inside on_connect: 50 times, never a hang
    (the connect request must not arrive in the same read as ``A``)."""

    async def force(conn: neffos.Conn) -> None:
        await conn.connect("v1", timeout=WAIT)

    async with (
        serving(server_transport, {"v1": {}}, on_connect=force) as (_, listener),
        js_client(node, listener.url) as js,
    ):
        result = await js.call(
            "dialAndWaitServerConnect", 60 * UNIT,
            namespace="v1", times=50, timeoutMs=int(1000 * UNIT),
        )
        assert result == {"times": 50, "hung": 0, "reply": result["reply"], "ok": True}


@pytest.mark.parametrize("when", ["on_connect", "after_ack"])
async def test_server_forces_connect_and_join(node: str, server_transport: str, when: str) -> None:
    rec = Recorder()
    forced: list[neffos.Room] = []

    async def force(conn: neffos.Conn) -> None:
        ns = await conn.connect("v1", timeout=WAIT)
        forced.append(await ns.join_room("forced", timeout=WAIT))

    options: dict[str, Any] = {"on_connect": force} if when == "on_connect" else {}
    async with (
        serving(server_transport, recording(rec), **options) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        dialed = await js.call("dial", namespaces={"v1": []})
        # "A<id>" came first: neffos.js takes any earlier frame for the ack
        # (docs/topics/protocol.md#handshake)
        assert dialed["connId"] == only(server).id
        if when == "after_ack":
            # neffos.js only notifies waiters registered before the server's connect
            assert (await js.call("waitServerConnect", namespace="v1"))["registered"]
            await force(only(server))
            await js.wait_event("waitServerConnect", namespace="v1")
        joined = await js.wait_event(ON_ROOM_JOINED, room="forced")
        assert joined["isLocal"] is False
        connected = await js.wait_event(ON_NAMESPACE_CONNECTED)
        assert (connected["namespace"], connected["isLocal"]) == ("v1", False)
        # neffos.js fires no _OnNamespaceConnect for a server-initiated connect
        # (docs/topics/protocol.md#namespaces)
        assert [(e["event"], e.get("room")) for e in js.events()] == [
            (ON_NAMESPACE_CONNECTED, ""),
            *([("waitServerConnect", None)] if when == "after_ack" else []),
            (ON_ROOM_JOIN, "forced"),
            (ON_ROOM_JOINED, "forced"),
        ]
        state = await js.call("state")
        assert state["namespaces"] == {"v1": ["forced"]}

        await rec.wait_len(4)
        conn = only(server)
        assert [item[:4] for item in rec.items] == [
            (ON_NAMESPACE_CONNECT, "", True, False),
            (ON_NAMESPACE_CONNECTED, "", True, False),
            (ON_ROOM_JOIN, "forced", True, False),
            (ON_ROOM_JOINED, "forced", True, False),
        ]
        ns = conn.namespace("v1")
        assert ns is not None and list(ns.rooms) == ["forced"]
        assert [room.name for room in forced] == ["forced"]
        js.assert_clean()


# -- 5. binary bodies ------------------------------------------------------------------


async def test_binary_bodies_both_ways(node: str, server_transport: str) -> None:
    got = Recorder()
    async with (
        serving(
            server_transport, {"v1": {"bin": lambda ns, msg: got.add((msg.body, msg.set_binary))}}
        ) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": ["bin"]})
        await js.call("connect", namespace="v1")
        sent = await js.call("emitBinary", namespace="v1", event="bin", bytes=[0, 1, 2, 255])
        assert sent["written"] is True
        await got.wait_len(1)
        assert got.items == [(bytes([0, 1, 2, 255]), True)]

        ns = only(server).namespace("v1")
        assert ns is not None
        payload = bytes([255, 0, 59, 128, 1, 59])  # not UTF-8, with separators
        assert ns.emit_binary("bin", payload)
        event = await js.wait_event("bin")
        assert event["bodyType"] == "ArrayBuffer"
        assert event["bytes"] == list(payload)
        assert event["setBinary"] is True
        assert event["namespace"] == "v1"
        js.assert_clean()


async def test_binary_ask_answers(node: str, server_transport: str) -> None:
    class Odd(Exception):
        pass

    def flip(ns: neffos.NSConn, msg: neffos.Message) -> Any:
        if len(msg.body) % 2:
            raise Odd("odd length")
        return bytes(reversed(msg.body))

    async with (
        serving(server_transport, {"v1": {"flip": flip}}) as (_server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []})
        await js.call("connect", namespace="v1")
        # a binary request gets a binary answer...
        reply = await js.call("askBinary", namespace="v1", event="flip", bytes=[0, 59, 200, 255])
        assert reply["bodyType"] == "ArrayBuffer"
        assert reply["bytes"] == [255, 200, 59, 0]
        assert reply["setBinary"] is True
        # ...but an error answer is text, or neffos.js could not read it
        # (docs/topics/protocol.md#text-and-binary)
        failed = await js.request("askBinary", namespace="v1", event="flip", bytes=[1, 2, 3])
        assert failed["ok"] is False
        assert failed["error"] == "odd length"
        assert failed["errorIsError"] is True
        js.assert_clean()


# -- 6. reconnection (docs/topics/protocol.md#reconnection, #http) -------------------


async def test_reconnect_to_a_new_server_on_the_same_port(node: str, net_transport: str) -> None:
    probes = Recorder()
    rec = Recorder()
    old = neffos.Server({"v1": {}}, ping_interval=None)
    old_listener = await old.listen("127.0.0.1", 0, path="/echo", transport=net_transport)
    port = old_listener.port
    new: neffos.Server | None = None
    new_listener: Listener | None = None
    try:
        async with js_client(node, old_listener.url) as js:
            first = await js.call("dial", namespaces={"v1": []}, reconnect=50)
            assert first["reconnectTries"] == 0
            await js.call("connect", namespace="v1")
            await js.call("joinRoom", namespace="v1", room="room1")
            assert only(old).id == first["connId"]

            # Stop accepting first (so that probes fail instead of getting a 500
            # and giving up), then close the connections: gather() runs the
            # listener's close() up to its first await before server.close().
            await asyncio.gather(old_listener.close(), old.close())
            lost = await js.wait_event(ON_NAMESPACE_DISCONNECT)
            assert lost["isForced"] is True and lost["connId"] == first["connId"]
            # at least one probe finds nobody listening
            refused = await js.wait_for(lambda line: "error" in line and "probe" in line, "probe")
            assert refused["method"] == "HEAD"
            assert refused["probe"] == f"http://127.0.0.1:{port}/echo"

            new = neffos.Server(
                recording(rec, {"echo": lambda ns, m: b"new: " + m.body}),
                on_upgrade_error=probes.add,
                ping_interval=None,
            )
            new_listener = await new.listen(
                "127.0.0.1", port, path="/echo", transport=net_transport
            )

            # neffos.js reconnects "v1" and re-joins "room1" by itself, on its
            # new (hidden) Conn
            await rec.wait_len(4, timeout=10 * UNIT)
            conn = only(new)
            assert conn.id != first["connId"]
            assert [item[:4] for item in rec.items] == [
                (ON_NAMESPACE_CONNECT, "", False, False),
                (ON_NAMESPACE_CONNECTED, "", False, False),
                (ON_ROOM_JOIN, "room1", False, False),
                (ON_ROOM_JOINED, "room1", False, False),
            ]
            ns = conn.namespace("v1")
            assert ns is not None and list(ns.rooms) == ["room1"]
            assert all(item[4] is conn for item in rec.items)
            restored = await js.wait_event(ON_NAMESPACE_CONNECTED, connId=conn.id)
            assert restored["isLocal"] is True

            # the new server answered the HEAD probe with 302...
            (head,) = probes.items
            assert head.request is not None
            assert (head.request.method, head.request.path) == ("HEAD", "/echo")
            assert head.status == 302
            assert head.is_trying_to_reconnect
            # ...and counts every probe, the failed ones included
            failed = [line for line in js.lines if "probe" in line and "error" in line]
            assert conn.reconnect_tries == len(failed) + 1 >= 2
            assert conn.was_reconnected
            assert conn.request is not None
            assert conn.request.headers.get("X-Websocket-Reconnect") == str(conn.reconnect_tries)
            assert restored["reconnectTries"] == conn.reconnect_tries

            # the new connection works end to end
            await js.wait_for(lambda line: line.get("adopted") == conn.id, "adoption")
            reply = await js.call("ask", namespace="v1", event="echo", body="again")
            assert reply["body"] == "new: again"
            js.assert_clean()
    finally:
        for listener, server in ((new_listener, new), (old_listener, old)):
            if listener is not None:
                await listener.close()
            if server is not None:
                await server.close()


async def test_reconnect_gives_up_after_server_close(node: str, server_transport: str) -> None:
    # A closed server that still listens answers everything with 500: the probe
    # "succeeds", the re-dial fails and neffos.js stops (docs/topics/protocol.md#http).
    refused = Recorder()
    async with (
        serving(server_transport, {"v1": {}}, on_upgrade_error=refused.add) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []}, reconnect=50)
        await js.call("connect", namespace="v1")
        await server.close()
        await js.wait_event(ON_NAMESPACE_DISCONNECT, isForced=True)
        await refused.wait_len(2)
        assert [(e.status, e.request.method if e.request else None) for e in refused.items] == [
            (500, "HEAD"),
            (500, "GET"),
        ]
        probe = await js.wait_for(lambda line: "probe" in line, "probe")
        assert probe["method"] == "HEAD" and "error" not in probe
        assert server.get_total_connections() == 0
        js.assert_clean()


# -- 7. neffos.js leaveAll() -------------------------------------------------------------


async def test_js_leave_all_leaves_on_the_server(node: str, server_transport: str) -> None:
    rec = Recorder()
    async with (
        serving(server_transport, recording(rec)) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        await js.call("dial", namespaces={"v1": []})
        await js.call("connect", namespace="v1")
        for room in ("r1", "r2"):
            await js.call("joinRoom", namespace="v1", room=room)
        ns = only(server).namespace("v1")
        assert ns is not None and sorted(ns.rooms) == ["r1", "r2"]
        rec.clear()

        # neffos.js sends "$tok;v1;r1;_OnRoomLeft;0;0;" (not _OnRoomLeave) per room
        reply = await js.call("leaveAll", namespace="v1")
        assert reply["result"] is None
        await rec.wait_for(lambda items: sum(i[0] == ON_ROOM_LEFT for i in items) >= 2)
        assert sorted(item[:4] for item in rec.items) == [
            (ON_ROOM_LEAVE, "r1", False, False),
            (ON_ROOM_LEAVE, "r2", False, False),
            (ON_ROOM_LEFT, "r1", False, False),
            (ON_ROOM_LEFT, "r2", False, False),
        ]
        assert ns.rooms == {}
        assert server.get_connections_by_namespace("v1") == [ns]
        # the server answered both requests: the JS asks settled (it then runs
        # its own, buggy, local bookkeeping with the shared message object)
        await js.wait_for(
            lambda line: line.get("event") == ON_ROOM_LEFT and line.get("isLocal") is True,
            "local _OnRoomLeft",
        )
        js.assert_clean()


# -- the README's snippet ------------------------------------------------------------------


README = Path(__file__).resolve().parent.parent / "README.md"


async def test_readme_js_snippet_runs_as_written(node: str) -> None:
    """The README's neffos.js code, as an ES module next to tests/js/node_modules."""
    readme = README.read_text()
    match = re.search(r"```js\n(.*?)```", readme, re.S)
    assert match is not None
    code = match.group(1)
    assert code.startswith('import neffos from "neffos.js";')

    users: list[str | None] = []

    def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        assert ns.conn.request is not None
        users.append(ns.conn.request.headers.get("X-Username"))
        return b"echo: " + msg.body

    async with serving("picows", {"v1": {"echo": echo}}) as (_server, listener):
        script = JS_DIR / f"readme-{os.getpid()}.mjs"  # resolves neffos.js from tests/js
        script.write_text(code.replace("ws://127.0.0.1:8080/echo", listener.url))
        try:
            proc = await asyncio.create_subprocess_exec(
                node, str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            script.unlink()
        assert proc.returncode == 0, err.decode()
        assert out.decode().splitlines() == ["ask returned: echo: hello"]
        assert users == ["kim"]
