"""examples/protobuf, run as its docstrings say, with Python and neffos.js peers.

The server and the client are the example scripts, driven through stdin/stdout
like tests/test_examples.py. Other peers decode every field of what they get:
a Python connection made here with the example's own message classes, and a
neffos.js program (tests/js/protobuf.mjs) that loads the same chat.proto with
protobufjs. Nothing sleeps: every step waits for a line or an event, bounded by
a timeout.

The neffos.js test needs ``node`` (>= 18) and ``npm ci`` in ``tests/js``; it is
skipped otherwise, unless ``NEFFOS_REQUIRE_NODE=1`` (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers.programs import EXAMPLES, WAIT, Program, Programs, programs

import neffos

PROTO = EXAMPLES / "protobuf" / "chat.proto"
JS_DIR = Path(__file__).resolve().parent / "js"
PEER_JS = JS_DIR / "protobuf.mjs"

#: what the example client prints for a chat line: local time, number, the rest
LINE = re.compile(r"^(\d\d:\d\d:\d\d) #(\d+) (.*)$")


def load_schema() -> ModuleType:
    """examples/protobuf/schema.py, imported under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        "protobuf_example_schema", EXAMPLES / "protobuf" / "schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


schema = load_schema()
Post = schema.Post
ChatLine = schema.ChatLine


async def start_server(run: Programs) -> tuple[Program, str]:
    server = await run.start("protobuf/server", "--port", "0")
    line = await server.expect("listening on ")
    url = line.removeprefix("listening on ")
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/echo"), line
    return server, url


async def start_client(run: Programs, url: str, user: str) -> Program:
    client = await run.start("protobuf/client", "--url", url, "--user", user)
    assert await client.expect("connected as") == f"connected as {user}"
    return client


async def expect_line(program: Program, text: str) -> tuple[int, str]:
    """The number and the text of the next chat line that ends with ``text``."""
    line = await program.expect(text)
    match = LINE.match(line)
    assert match is not None, line
    assert line.endswith(text), line
    datetime.time.fromisoformat(match.group(1))  # a real time of day
    return int(match.group(2)), match.group(3)


def decode(msg: neffos.Message) -> Any:
    """A received ``chat`` event as a ChatLine, after checking how it travelled."""
    assert msg.event == "chat"
    assert msg.namespace == "chat"
    assert msg.set_binary, "ChatLines travel as binary frames"
    assert msg.err is None
    return ChatLine.FromString(msg.body)


class Observer:
    """A Python connection to the example server that keeps what it receives."""

    # Handlers only queue what they get: the test checks it (an assertion that
    # failed inside a handler would be answered to the server, not seen here).

    def __init__(self) -> None:
        self.lines: asyncio.Queue[neffos.Message] = asyncio.Queue()  # "chat" events
        self.refusals: asyncio.Queue[neffos.Message] = asyncio.Queue()  # "post" answers

    def on_chat(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        self.lines.put_nowait(msg)

    def on_post(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        self.refusals.put_nowait(msg)

    async def next_line(self) -> Any:
        """The next ChatLine, decoded."""
        async with asyncio.timeout(WAIT):
            return decode(await self.lines.get())

    async def next_refusal(self) -> str:
        """The text of the next error that the server answered a post with."""
        async with asyncio.timeout(WAIT):
            msg = await self.refusals.get()
        assert msg.err is not None, "the server answers a post only with an error"
        assert isinstance(msg.err, neffos.RemoteError), repr(msg.err)  # not known here
        return str(msg.err)


@contextlib.asynccontextmanager
async def observing(url: str, user: str) -> AsyncIterator[tuple[Observer, neffos.NSConn]]:
    observer = Observer()
    events = {"chat": {"chat": observer.on_chat, "post": observer.on_post}}
    async with neffos.dial(url, events, headers={"X-Username": user}, timeout=WAIT) as client:
        ns = await client.connect("chat", timeout=WAIT)
        yield observer, ns


def assert_stamped(line: Any, before: float, after: float) -> None:
    """``sent_at`` was set by the server between ``before`` and ``after``."""
    assert line.HasField("sent_at")
    stamped = line.sent_at.seconds + line.sent_at.nanos / 1e9
    assert before - 0.001 <= stamped <= after + 0.001, (before, stamped, after)


# -- the example server and its Python client ---------------------------------------------


async def test_python_clients_chat() -> None:
    async with programs() as run:
        server, url = await start_server(run)
        kim = await start_client(run, url, "kim")
        lee = await start_client(run, url, "lee")
        joined, _ = await expect_line(kim, "* lee joined")

        await kim.send("hi @lee")
        seq, _ = await expect_line(kim, "kim: hi @lee")
        assert seq == joined + 1
        assert await expect_line(lee, "kim: hi @lee  (mentions you)") == (
            seq,
            "kim: hi @lee  (mentions you)",
        )
        # separators of the neffos framing and non-ASCII text inside the protobuf body
        await lee.send("a;b;;c ünïcödé ✓ 😀 @kim")
        assert (await expect_line(kim, "ünïcödé ✓ 😀 @kim  (mentions you)"))[0] == seq + 1
        assert (await expect_line(lee, "a;b;;c ünïcödé ✓ 😀 @kim"))[0] == seq + 1

        _, err = await lee.finish()  # Ctrl-D
        assert err == ""
        assert (await expect_line(kim, "* lee left"))[0] == seq + 2
        out, err = await kim.finish()
        assert err == ""
        # kim was never told of its own join, nor of its own leaving
        assert not any("kim joined" in line or "kim left" in line for line in out)

        # the server decoded every Post and numbered the lines in one sequence
        assert await server.expect("lee joined") == f"#{joined} * lee joined"
        assert await server.expect("hi @lee") == f"#{seq} kim: hi @lee"
        assert await server.expect("ünïcödé") == f"#{seq + 1} lee: a;b;;c ünïcödé ✓ 😀 @kim"
        assert await server.expect("lee left") == f"#{seq + 2} * lee left"
        assert await server.expect("kim left") == f"#{seq + 3} * kim left"
        await server.interrupt()  # a clean exit: nothing on stderr


async def test_chat_lines_decoded_field_by_field() -> None:
    async with programs() as run:
        server, url = await start_server(run)
        async with observing(url, "tester") as (tester, ns):
            before = time.time()
            assert ns.emit_binary("post", Post(text="hello @kim and @lee_2!").SerializeToString())
            line = await tester.next_line()
            after = time.time()
            assert line.kind == ChatLine.KIND_POST
            assert line.seq == 2  # a fresh server: tester's join was the first line
            assert line.user == "tester"
            assert line.text == "hello @kim and @lee_2!"
            assert list(line.mentions) == ["kim", "lee_2"]
            assert_stamped(line, before, after)
            first = line.seq

            # a second connection: tester is told of its join and of its leaving
            async with observing(url, "other") as (other, other_ns):
                joined = await tester.next_line()
                assert (joined.kind, joined.user, joined.seq) == (
                    ChatLine.KIND_JOINED,
                    "other",
                    first + 1,
                )
                assert joined.text == "" and list(joined.mentions) == []
                assert_stamped(joined, before, time.time())

                assert other_ns.emit_binary("post", Post(text="ünï ✓;😀").SerializeToString())
                for observer in (tester, other):
                    line = await observer.next_line()
                    assert (line.kind, line.user, line.text, line.seq) == (
                        ChatLine.KIND_POST,
                        "other",
                        "ünï ✓;😀",
                        first + 2,
                    )
                    assert list(line.mentions) == []
                await other_ns.disconnect(timeout=WAIT)
            left = await tester.next_line()
            assert (left.kind, left.user, left.seq) == (ChatLine.KIND_LEFT, "other", first + 3)
            assert other.lines.empty(), "a newcomer is not sent its own join"
        await server.interrupt()


async def test_bad_posts_are_refused_and_the_chat_goes_on() -> None:
    async with programs() as run:
        server, url = await start_server(run)
        async with observing(url, "tester") as (tester, ns):
            bad = {
                b"\x0a\x05ab": "bad post: 4 bytes that are not a chat.Post",  # cut short
                b"\x0a\x02\xff\xfe": "bad post: 4 bytes that are not a chat.Post",  # not UTF-8
                b"": "bad post: no text",  # a valid, empty Post
                Post(text="  ").SerializeToString(): "bad post: no text",
            }
            for body, refusal in bad.items():
                assert ns.emit_binary("post", body)
                assert await tester.next_refusal() == refusal
            assert ns.emit_binary("post", Post(text="still here").SerializeToString())
            line = await tester.next_line()
            assert (line.kind, line.text) == (ChatLine.KIND_POST, "still here")
            assert tester.lines.empty() and tester.refusals.empty()
        # refusals are answers, not failures: nothing logged (interrupt checks stderr)
        await server.interrupt()


def test_schema_reports_a_bad_proto(tmp_path: Path) -> None:
    proto = tmp_path / "broken.proto"
    proto.write_text('syntax = "proto3";\nmessage Broken { strin text = 1; }\n')
    with pytest.raises(ValueError, match="protoc could not compile"):
        schema.compile_proto(proto)


@pytest.mark.parametrize("script", ["server", "client"])
async def test_help(script: str) -> None:
    async with programs() as run:
        program = await run.start(f"protobuf/{script}", "--help")
        out, err = await program.finish()
        assert out[0].startswith("usage:")
        assert err == ""


# -- a neffos.js peer (protobufjs) ------------------------------------------------------------


def _node_problem() -> str | None:
    """Why the neffos.js peer cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    if match is None or int(match.group(1)) < 18:
        return f"node >= 18 is needed (found {out.stdout.strip() or out.stderr.strip()!r})"
    for package in ("neffos.js", "protobufjs"):
        if not (JS_DIR / "node_modules" / package / "package.json").is_file():
            return f"tests/js/node_modules/{package} is missing: run `npm ci` in tests/js"
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


class NodePeer:
    """``node tests/js/protobuf.mjs URL chat.proto USER``: stdin posts, JSON lines out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.seen = 0  # lines already returned by next()
        self._stderr = asyncio.ensure_future(self._read(proc.stderr))

    @staticmethod
    async def _read(stream: asyncio.StreamReader | None) -> bytes:
        assert stream is not None
        return await stream.read()

    @classmethod
    async def start(cls, node: str, url: str, user: str) -> NodePeer:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(PEER_JS),
            url,
            str(PROTO),
            user,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(JS_DIR),
        )
        peer = cls(proc)
        ready = await peer.next(lambda line: "ready" in line, "start-up")
        assert ready == {"ready": True, "id": user}
        return peer

    def _describe(self) -> str:
        stderr = self._stderr.result().decode() if self._stderr.done() else "(still open)"
        return f"\nnode printed: {json.dumps(self.lines, indent=1)}\nnode stderr: {stderr}"

    async def next(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The next printed line that satisfies ``predicate`` (skipping others)."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    while self.seen < len(self.lines):
                        line = self.lines[self.seen]
                        self.seen += 1
                        assert "failed" not in line, line["failed"] + self._describe()
                        if predicate(line):
                            return line
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        await self.proc.wait()
                        raise AssertionError(f"node exited before {what}" + self._describe())
                    self.lines.append(json.loads(raw))
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}" + self._describe()) from None

    async def chat(self, text: str) -> dict[str, Any]:
        """The next ``chat`` event whose ChatLine has ``text``, checked for a binary body."""
        line = await self.next(lambda line: line.get("chat", {}).get("text") == text, text)
        assert line["bodyType"] == "ArrayBuffer" and line["setBinary"] is True, line
        return dict(line["chat"])

    async def send(self, *texts: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{text}\n" for text in texts).encode())
        await self.proc.stdin.drain()

    async def finish(self) -> None:
        """Close stdin: the peer disconnects and exits 0."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            async with asyncio.timeout(WAIT):
                rest = await self.proc.stdout.read()
                await self.proc.wait()
                await self._stderr
        except TimeoutError:
            raise AssertionError("node did not exit" + self._describe()) from None
        self.lines += [json.loads(raw) for raw in rest.splitlines()]
        assert self.proc.returncode == 0, self._describe()
        assert not any("failed" in line for line in self.lines), self._describe()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(Exception):
            await self._stderr


@contextlib.asynccontextmanager
async def node_peer(node: str, url: str, user: str) -> AsyncIterator[NodePeer]:
    peer = await NodePeer.start(node, url, user)
    try:
        yield peer
    finally:
        await peer.kill()


def assert_js_stamped(fields: dict[str, Any], before: float, after: float) -> None:
    sent_at = fields["sentAt"]
    assert isinstance(sent_at["seconds"], str) and isinstance(sent_at["nanos"], int), sent_at
    stamped = int(sent_at["seconds"]) + sent_at["nanos"] / 1e9
    assert before - 0.001 <= stamped <= after + 0.001, (before, stamped, after)


@pytest.mark.node
async def test_neffos_js_peer(node: str) -> None:
    async with programs() as run:
        server, url = await start_server(run)
        kim = await start_client(run, url, "kim")
        async with observing(url, "watcher") as (watcher, _), node_peer(node, url, "ann") as ann:
            ann_joined, _ = await expect_line(kim, "* ann joined")
            line = await watcher.next_line()
            assert (line.kind, line.user, line.seq) == (ChatLine.KIND_JOINED, "ann", ann_joined)

            # Python -> neffos.js: the example client's Post, relayed as a ChatLine that
            # protobufjs decodes field by field
            before = time.time()
            await kim.send("hi @ann; ünïcödé ✓")
            fields = await ann.chat("hi @ann; ünïcödé ✓")
            after = time.time()
            assert_js_stamped(fields, before, after)
            del fields["sentAt"]
            assert fields == {
                "seq": str(ann_joined + 1),  # uint64: a string, never a rounded number
                "kind": "KIND_POST",
                "user": "kim",
                "text": "hi @ann; ünïcödé ✓",
                "mentions": ["ann"],
            }
            line = await watcher.next_line()  # the same line, for Python
            assert (line.seq, line.user, line.text) == (ann_joined + 1, "kim", "hi @ann; ünïcödé ✓")

            # neffos.js -> Python: protobufjs encodes a Post, emitBinary sends it; the
            # server decodes it, and every peer decodes the ChatLine it relays
            before = time.time()
            await ann.send("hello @kim @watcher 😀;;")
            line = await watcher.next_line()
            after = time.time()
            assert line.kind == ChatLine.KIND_POST
            assert (line.seq, line.user) == (ann_joined + 2, "ann")
            assert line.text == "hello @kim @watcher 😀;;"
            assert list(line.mentions) == ["kim", "watcher"]
            assert_stamped(line, before, after)
            assert await expect_line(kim, "(mentions you)") == (
                ann_joined + 2,
                "ann: hello @kim @watcher 😀;;  (mentions you)",
            )
            fields = await ann.chat("hello @kim @watcher 😀;;")  # ann gets its own line too
            assert (fields["seq"], fields["user"], fields["mentions"]) == (
                str(ann_joined + 2),
                "ann",
                ["kim", "watcher"],
            )
            assert await server.expect("😀") == f"#{ann_joined + 2} ann: hello @kim @watcher 😀;;"

            # an empty line is an empty Post: refused, and neffos.js gets the error text
            await ann.send("")
            refused = await ann.next(lambda line: "refused" in line, "the refusal")
            assert refused == {"refused": "bad post: no text"}

            # kim leaves: neffos.js decodes the enum and the empty fields
            await kim.finish()
            line = await watcher.next_line()
            assert (line.kind, line.user, line.seq) == (ChatLine.KIND_LEFT, "kim", ann_joined + 3)
            fields = await ann.next(lambda line: "chat" in line, "kim's leaving")
            chat = fields["chat"]
            assert (chat["kind"], chat["user"], chat["text"], chat["mentions"]) == (
                "KIND_LEFT",
                "kim",
                "",
                [],
            )
            assert int(chat["seq"]) == ann_joined + 3

            await ann.finish()
            line = await watcher.next_line()
            assert (line.kind, line.user, line.seq) == (ChatLine.KIND_LEFT, "ann", ann_joined + 4)
        await server.interrupt()


# -- original.py: the Go example's protocol --------------------------------------------------


def go_user_message(username: str, text: str) -> bytes:
    """A UserMessage encoded by hand, field by field, as any protobuf library
    (Go's included) writes it: tag (number << 3 | 2), length, UTF-8."""
    out = b""
    for number, value in ((1, username), (2, text)):
        data = value.encode()
        out += bytes([number << 3 | 2, len(data)]) + data
    return out


async def test_original_example_speaks_the_go_examples_bytes() -> None:
    async with programs() as run:
        server = await run.start("protobuf/original", "server", "--port", "0")
        url = (await server.expect("listening on ")).removeprefix("listening on ")
        kim = await run.start("protobuf/original", "client", "--url", url, "--user", "kim")
        lee = await run.start("protobuf/original", "client", "--url", url, "--user", "lee")
        await kim.expect("connected")
        await lee.expect("connected")

        got: asyncio.Queue[bytes] = asyncio.Queue()
        events = {"default": {"chat": lambda ns, msg: got.put_nowait(msg.body)}}
        async with neffos.dial(url, events, timeout=WAIT) as go_peer:  # stands for a Go client
            ns = await go_peer.connect("default", timeout=WAIT)
            await kim.send("hello from kim")
            assert await lee.expect("says") == "[kim] says: hello from kim"
            # what kim sent is exactly what a Go client of the example sends
            assert await asyncio.wait_for(got.get(), WAIT) == go_user_message(
                "kim", "hello from kim"
            )
            ns.emit("chat", go_user_message("gopher", "hi from Go ✓"))
            assert await kim.expect("gopher") == "[gopher] says: hi from Go ✓"
            assert await lee.expect("gopher") == "[gopher] says: hi from Go ✓"
        await kim.send("exit")
        await lee.send("exit")
        await kim.finish()
        await lee.finish()
        await server.interrupt()
