"""``neffos serve --workers N``: several processes on one port, run as a user runs them.

Every test starts the real command (a supervisor and its worker processes) in a
directory holding a small application, with a real redis-server or nats-server
(tests/helpers/brokers.py) as the bus. Clients learn which worker serves them
by asking ``pid`` (the worker's ``os.getpid()``); the kernel spreads
connections, so a test dials until it has a client on each of the two workers
(bounded attempts). Python clients, neffos.js clients under Node and raw
WebSocket peers are used. Nothing sleeps: every step waits for a line, an event
or a process exit, with a timeout.

The command runs in a process group of its own, so ``os.killpg`` can play the
terminal's Ctrl-C (which signals the whole foreground group).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import pytest
from helpers import UNIT, Recorder
from helpers.brokers import Broker, free_port, running
from helpers.programs import ENV, WAIT, Program
from helpers.raw import RawPeer
from test_interop_js import NodeClient, js_client, node  # noqa: F401  (node: a fixture)

import neffos
from neffos.workers import cpu_count

APP = '''\
import asyncio
import os
import uuid

import neffos

if os.path.exists("broken"):  # a restarted worker finds it: the application cannot start
    import a_module_that_is_not_there  # noqa: F401


def pid(ns, msg):
    return str(os.getpid()).encode()


def chat(ns, msg):  # to the sender's room (or namespace), other workers included
    ns.conn.server.broadcast(ns, msg)


def tell(ns, msg):  # "ID TEXT": TEXT to the connections with that ID, wherever they are
    target, _, text = msg.text.partition(" ")
    ns.conn.server.broadcast(
        None, neffos.Message(namespace="chat", event="direct", to=target, body=text.encode())
    )


async def relay_ask(ns, msg):  # "ID TEXT": ask the connection ID (server.ask); its answer
    target, _, text = msg.text.partition(" ")
    question = neffos.Message(namespace="chat", event="question", body=text.encode())
    return (await ns.conn.server.ask(question, to=target, timeout=10)).body


async def slow(ns, msg):
    print("slow started", flush=True)
    await asyncio.sleep(float(msg.text))
    return b"slow done"


events = {"chat": {"pid": pid, "chat": chat, "tell": tell, "relay_ask": relay_ask, "slow": slow}}


def ids(request):
    return request.headers.get("X-Id") or str(uuid.uuid4())


server = neffos.Server(events, id_generator=ids)


def with_bus():  # an application that sets its own bus
    from neffos.exchange.redis import RedisStackExchange

    made = neffos.Server(events, id_generator=ids)
    made.use_stack_exchange(RedisStackExchange(url=os.environ["APP_REDIS"]))
    return made
'''

# The feature runs on Linux and macOS; these tests watch processes through
# pidfd and /proc, which only Linux has.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pidfd and /proc are Linux's")

RETRY = 0.5 * UNIT  # how long one probe may take before converge() sends another
ATTEMPTS = 40  # dials to find a client on each worker (each lands on one at random)
FAST = neffos.Reconnect(initial_delay=0.05 * UNIT, max_delay=0.2 * UNIT, jitter=0)
T = TypeVar("T")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


# -- the command -----------------------------------------------------------------------


async def launch(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Program:
    """``python -m neffos ARGS`` in ``cwd``, in a process group of its own."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "neffos", *args, cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
        process_group=0,
    )
    return Program("neffos " + " ".join(args), proc)


@contextlib.asynccontextmanager
async def serving(cwd: Path, *args: str, env: dict[str, str] | None = None
                  ) -> AsyncIterator[tuple[Program, str]]:
    """A running ``neffos serve ARGS``; its URL. Killed at the end whatever happened
    (its workers then stop on their own: their supervisor is gone)."""
    program = await launch(cwd, "serve", *args, env=env)
    try:
        line = await program.expect("listening on ")
        yield program, line.removeprefix("listening on ").split(" (")[0]
    finally:
        # (bounded: workers that outlived it would hold its stderr open)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT):
                await program.kill()


def workers_args(broker: Broker, *extra: str) -> list[str]:
    return ["app:server", "--port", "0", "--path", "/echo", "--workers", "2",
            f"--{broker.kind}", broker.url, *extra]


async def fails(cwd: Path, *args: str) -> str:
    """Run ``neffos ARGS``; expect exit 1 and one line on stderr; return it."""
    program = await launch(cwd, *args)
    lines, stderr = await program.finish(1)
    assert lines == [], lines
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    return stderr.strip()


async def exited(pids: Iterable[int], timeout: float = WAIT) -> None:
    """Wait until every process in ``pids`` has exited (not necessarily reaped).

    A pidfd becomes readable when its process exits, whoever its parent is.
    """
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone and reaped already
        done = asyncio.Event()
        loop.add_reader(fd, done.set)
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            raise AssertionError(f"process {pid} is still running") from None
        finally:
            loop.remove_reader(fd)
            os.close(fd)


def running_pids(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that still run (a zombie does not count)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


# -- clients ---------------------------------------------------------------------------


class Peer:
    """A Python client in namespace ``chat``: what it receives, and its system events.

    ``got`` holds ``(event, room, text)`` of every application event; ``system``
    holds ``("connected"|"disconnected", forced)`` and ``("joined", room)``. It
    answers ``question`` (a ``server.ask``) with ``"<name>: <text>"``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.got = Recorder()
        self.system = Recorder()
        self.client: neffos.Conn
        self.pid = 0
        self.handler = {"chat": {
            neffos.ON_ANY_EVENT: self._record,
            "question": lambda ns, msg: f"{self.name}: {msg.text}".encode(),
            neffos.ON_NAMESPACE_CONNECTED:
                lambda ns, msg: self.system.add(("connected", msg.is_forced)),
            neffos.ON_NAMESPACE_DISCONNECT:
                lambda ns, msg: self.system.add(("disconnected", msg.is_forced)),
            neffos.ON_ROOM_JOINED: lambda ns, msg: self.system.add(("joined", msg.room)),
        }}

    def _record(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        if not msg.event.startswith("_"):
            self.got.add((msg.event, msg.room, msg.text))

    @classmethod
    async def dial(cls, url: str, name: str, reconnect: neffos.Reconnect | None = None) -> Peer:
        peer = cls(name)
        peer.client = await neffos.dial(url, peer.handler, headers={"X-Id": name},
                                        reconnect=reconnect, timeout=WAIT)
        await peer.client.connect("chat", timeout=WAIT)
        peer.pid = await peer.ask_pid()
        return peer

    @property
    def ns(self) -> neffos.NSConn:
        ns = self.client.namespace("chat")
        assert ns is not None, f"{self.name} is not connected to chat"
        return ns

    async def ask_pid(self) -> int:
        return int((await self.ns.ask("pid", timeout=WAIT)).text)

    def emit(self, event: str, text: str, room: str = "") -> None:
        if room:
            joined = self.ns.room(room)
            assert joined is not None, f"{self.name} is not in {room}"
            joined.emit(event, text)
        else:
            self.ns.emit(event, text)

    async def aclose(self) -> None:
        await self.client.aclose()


async def got(receiver: Peer | NodeClient, item: tuple[str, str, str], timeout: float) -> None:
    """Wait until ``receiver`` got ``(event, room, text)``."""
    event, room, text = item
    if isinstance(receiver, Peer):
        try:
            await receiver.got.wait_for(lambda items: item in items, timeout)
        except TimeoutError:
            raise AssertionError(f"{receiver.name} never got {item}: {receiver.got.items}")
    else:
        await receiver.wait_event(event, timeout, room=room, body=text)


async def all_got(receivers: Iterable[Peer | NodeClient], item: tuple[str, str, str],
                  timeout: float = WAIT) -> None:
    await asyncio.gather(*(got(receiver, item, timeout) for receiver in receivers))


async def one_per_worker(make: Callable[[int], Awaitable[tuple[T, int]]],
                         drop: Callable[[T], Awaitable[None]], workers: int = 2) -> dict[int, T]:
    """Call ``make(i)`` (a client and its worker's pid) until every worker has one.

    Clients landing on a worker that has one already are dropped.
    """
    found: dict[int, T] = {}
    for i in range(ATTEMPTS):
        client, pid = await make(i)
        if pid in found:
            await drop(client)
            continue
        found[pid] = client
        if len(found) == workers:
            return found
    raise AssertionError(f"{ATTEMPTS} clients all landed on the workers {sorted(found)}")


async def python_peers(url: str, prefix: str = "py", reconnect: neffos.Reconnect | None = None
                       ) -> dict[int, Peer]:
    async def make(i: int) -> tuple[Peer, int]:
        peer = await Peer.dial(url, f"{prefix}{i}", reconnect)
        return peer, peer.pid

    async def drop(peer: Peer) -> None:
        await peer.aclose()

    return await one_per_worker(make, drop)


async def js_peer_on(node_path: str, url: str, pid: int, name: str,
                     stack: contextlib.AsyncExitStack) -> NodeClient:
    """A neffos.js client (ID ``name``) in namespace ``chat`` on the worker ``pid``."""
    js = await stack.enter_async_context(js_client(node_path, url))
    for _ in range(ATTEMPTS):
        await js.call("dial", headers={"X-Id": name}, namespaces={"chat": ["chat", "direct"]})
        await js.call("connect", namespace="chat")
        if int((await js.call("ask", namespace="chat", event="pid", body=""))["body"]) == pid:
            return js
        await js.call("close")
    raise AssertionError(f"{ATTEMPTS} neffos.js connections missed the worker {pid}")


async def raw_peers(url: str) -> dict[int, RawPeer]:
    """A raw WebSocket peer (neffos frames by hand) on each worker."""

    async def make(i: int) -> tuple[RawPeer, int]:
        raw = await RawPeer.connect(url)
        await raw.handshake()
        raw.send("$c;chat;;_OnNamespaceConnect;0;0;")
        assert (await raw.recv(WAIT)).startswith("$c;"), url  # connected
        raw.send("$p;chat;;pid;0;0;")
        answer = await raw.recv(WAIT)
        assert answer.startswith("$p;chat;;pid;0;0;"), answer
        return raw, int(answer.rsplit(";", 1)[1])

    async def drop(raw: RawPeer) -> None:
        assert raw.transport is not None
        raw.transport.send_close()
        raw.transport.disconnect()

    return await one_per_worker(make, drop)


async def converge(senders: Iterable[Peer], receivers: list[Peer | NodeClient],
                   room: str = "lobby") -> None:
    """Retry a probe from every sender until every other receiver got one.

    A worker subscribes to the bus in the background when a client connects, so
    a message published right after a client connected elsewhere may find no
    subscriber yet; afterwards every worker is subscribed.
    """
    seq = itertools.count()
    for sender in senders:
        others = [r for r in receivers if r is not sender]
        async with asyncio.timeout(WAIT):
            while True:
                item = ("chat", room, f"sync {next(seq)} from {sender.name}")
                sender.emit("chat", item[2], room=room)
                try:
                    await all_got(others, item, RETRY)
                    break
                except (TimeoutError, AssertionError):
                    continue


async def converge_to(sender: Peer, target: Peer | NodeClient, name: str) -> None:
    """Retry ``tell`` from ``sender`` until the connection ``name`` got one."""
    async with asyncio.timeout(WAIT):
        for n in itertools.count():
            text = f"probe {n} for {name}"
            sender.emit("tell", f"{name} {text}")
            try:
                await got(target, ("direct", "", text), RETRY)
                return
            except (TimeoutError, AssertionError):
                continue


# -- usage errors and refusals -----------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "x", "2.5", ""])
async def test_bad_worker_counts_are_usage_errors(app_dir: Path, value: str) -> None:
    program = await launch(app_dir, "serve", "app:server", "--workers", value)
    lines, stderr = await program.finish(2)
    assert lines == [] and "Traceback" not in stderr, stderr
    assert "error: argument --workers:" in stderr, stderr


async def test_several_workers_without_a_bus_are_refused(app_dir: Path) -> None:
    line = await fails(app_dir, "serve", "app:server", "--port", "0", "--workers", "2")
    assert line.startswith("error: --workers 2 needs a bus: each worker holds only its own "
                           "connections"), line
    assert "--redis URL or --nats URL" in line and "use_stack_exchange" in line


@pytest.mark.parametrize(("target", "expected"), [
    ("nowhere:server", "error: no module named 'nowhere' (from 'nowhere:server')"),
    ("app:nothing", "error: module 'app' has no attribute 'nothing'"),
])
async def test_start_up_errors_are_one_line(app_dir: Path, target: str, expected: str) -> None:
    args = ["--port", "0", "--workers", "3", "--redis", "redis://127.0.0.1:1"]
    assert await fails(app_dir, "serve", target, *args) == expected


async def test_broker_unreachable(app_dir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    line = await fails(app_dir, "serve", "app:server", "--port", "0", "--workers", "2",
                       "--redis", url)
    assert line.startswith(f"error: cannot reach Redis at {url}: "), line


async def test_port_in_use(app_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = await fails(app_dir, "serve", "app:server", "--port", str(port),
                           "--workers", "2", "--redis", "redis://127.0.0.1:1")
    assert line == f"error: cannot listen on 127.0.0.1:{port}: address already in use"


# -- clients of every worker reach each other through the bus ----------------------------


@pytest.mark.broker
@pytest.mark.node
@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_clients_of_every_worker_reach_each_other(app_dir: Path, node: str,  # noqa: F811
                                                        kind: str) -> None:
    pytest.importorskip("redis" if kind == "redis" else "nats")
    async with (
        running(kind) as broker,
        serving(app_dir, *workers_args(broker)) as (program, url),
        contextlib.AsyncExitStack() as stack,
    ):
        assert program.lines[-1].endswith("/echo (2 workers)"), program.lines
        peers = await python_peers(url)
        for peer in peers.values():
            stack.push_async_callback(peer.aclose)
        (pid_a, a), (pid_b, b) = sorted(peers.items())
        js_a = await js_peer_on(node, url, pid_a, "jsA", stack)
        js_b = await js_peer_on(node, url, pid_b, "jsB", stack)
        for peer in (a, b):
            await peer.ns.join_room("lobby", timeout=WAIT)
        for js in (js_a, js_b):
            await js.call("joinRoom", namespace="chat", room="lobby")
        everyone: list[Peer | NodeClient] = [a, b, js_a, js_b]
        await converge([a, b], everyone)

        # a room: from a Python client on worker A, and from neffos.js on worker B
        a.emit("chat", "hello from a", room="lobby")
        await all_got([b, js_a, js_b], ("chat", "lobby", "hello from a"))
        await js_b.call("emit", namespace="chat", room="lobby", event="chat", body="from jsB")
        await all_got([a, b, js_a], ("chat", "lobby", "from jsB"))
        # the namespace, outside the room
        b.emit("chat", "to the namespace")
        await all_got([a, js_a, js_b], ("chat", "", "to the namespace"))
        assert ("chat", "lobby", "hello from a") not in a.got.items  # the sender excluded

        # to=: a connection on the other worker, Python and neffos.js
        await converge_to(a, b, b.name)
        await converge_to(b, js_a, "jsA")
        a.emit("tell", f"{b.name} just for b")
        await got(b, ("direct", "", "just for b"), WAIT)
        b.emit("tell", "jsA just for jsA")
        await js_a.wait_event("direct", WAIT, body="just for jsA")
        await converge_to(a, a, a.name)  # (and on its own worker)

        # server.ask answered by a client of the other worker
        await converge_to(b, a, a.name)
        reply = await js_a.call("ask", namespace="chat", event="relay_ask",
                                body=f"{b.name} where are you?")
        assert reply["body"] == f"{b.name}: where are you?"
        reply2 = await b.ns.ask("relay_ask", f"{a.name} and you?", timeout=WAIT)
        assert reply2.text == f"{a.name}: and you?"

        for js in (js_a, js_b):
            js.assert_clean()
        assert [p.pid for p in (a, b)] == [pid_a, pid_b]
        assert not a.system.items.count(("disconnected", True))


# -- a worker that dies ----------------------------------------------------------------


@pytest.mark.broker
async def test_killed_worker_is_restarted_and_its_clients_come_back(app_dir: Path) -> None:
    pytest.importorskip("redis")
    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker)) as (program, url),
        contextlib.AsyncExitStack() as stack,
    ):
        peers = await python_peers(url, reconnect=FAST)
        for peer in peers.values():
            stack.push_async_callback(peer.aclose)
        (pid_a, a), (pid_b, b) = sorted(peers.items())
        for peer in (a, b):
            await peer.ns.join_room("lobby", timeout=WAIT)
        await converge([a, b], [a, b])

        os.kill(pid_a, signal.SIGKILL)
        line = await program.expect(f"(replacing {pid_a})")
        match = re.fullmatch(rf"worker (\d+) ready \(replacing {pid_a}\)", line)
        assert match is not None, line
        new_pid = int(match[1])
        assert new_pid not in (pid_a, pid_b)

        # a lost its connection; it reconnects (to either worker) and rejoins the room
        await a.system.wait_for(lambda items: items.count(("joined", "lobby")) == 2, WAIT)
        assert ("disconnected", True) in a.system.items
        assert await a.ask_pid() in (pid_b, new_pid)
        await converge([a, b], [a, b])
        a.emit("chat", "a is back", room="lobby")
        await got(b, ("chat", "lobby", "a is back"), WAIT)
        b.emit("chat", "welcome back", room="lobby")
        await got(a, ("chat", "lobby", "welcome back"), WAIT)

        # b, on the other worker, never noticed
        assert b.system.items == [("connected", False), ("joined", "lobby")]
        assert await b.ask_pid() == pid_b
        # the new worker serves new clients on the same port
        again = await python_peers(url, prefix="again")
        assert sorted(again) == sorted([pid_b, new_pid])
        for peer in again.values():
            await peer.aclose()

        _, stderr = await stop(program)
        assert f"WARNING neffos.workers: worker {pid_a} died (killed by SIGKILL); " \
               "restarting it in 0.1s" in stderr.splitlines(), stderr
        await exited([pid_b, new_pid])


@pytest.mark.broker
async def test_workers_that_cannot_start_again_stop_the_command(app_dir: Path) -> None:
    pytest.importorskip("redis")
    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker)) as (program, url),
    ):
        peers = await python_peers(url)
        (pid_a, _), (pid_b, _) = sorted(peers.items())
        (app_dir / "broken").write_text("the next worker cannot import the app")
        os.kill(pid_a, signal.SIGKILL)
        _, stderr = await program.finish(1, eof=False)
        lines = stderr.splitlines()
        assert lines[0] == (f"WARNING neffos.workers: worker {pid_a} died (killed by SIGKILL); "
                            "restarting it in 0.1s"), stderr
        retries = [line for line in lines if "could not start" in line]
        assert len(retries) == 4, stderr  # the fifth failure ends it
        assert lines[-1] == (
            "error: a restarted worker failed to start 5 times in a row: importing 'app' "
            "failed: No module named 'a_module_that_is_not_there'"
        ), stderr
        assert "Traceback" not in stderr
        for peer in peers.values():  # the other worker closed its connections on the way out
            async with asyncio.timeout(WAIT):
                await peer.client.wait_closed()
        await exited([pid_b])


# -- stopping ----------------------------------------------------------------------------


async def stop(program: Program, signum: int = signal.SIGTERM) -> tuple[list[str], str]:
    """Send ``signum`` to the supervisor; expect exit 0; stdout lines and stderr."""
    program.proc.send_signal(signum)
    return await program.finish(0, eof=False)


@pytest.mark.broker
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "Ctrl-C"])
async def test_signal_stops_every_worker_gracefully(app_dir: Path, how: str) -> None:
    """SIGTERM or SIGINT to the supervisor, or Ctrl-C (SIGINT to the whole process
    group, as a terminal sends it): every client gets 1001, exit 0, no worker left."""
    pytest.importorskip("redis")
    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker)) as (program, url),
    ):
        raws = await raw_peers(url)
        peers = await python_peers(url)
        assert sorted(raws) == sorted(peers)
        if how == "Ctrl-C":
            os.killpg(program.proc.pid, signal.SIGINT)
        else:
            program.proc.send_signal(getattr(signal, how))
        lines, stderr = await program.finish(0, eof=False)
        name = "SIGTERM" if how == "SIGTERM" else "SIGINT"
        assert lines[-1] == f"shutting down ({name})", lines
        assert stderr == ""
        for raw in raws.values():
            assert await raw.wait_closed(WAIT) == 1001  # going away
        for peer in peers.values():
            async with asyncio.timeout(WAIT):
                await peer.client.wait_closed()
            assert peer.system.items[-1] == ("disconnected", True)
        await exited(raws)
        assert running_pids(raws) == []


@pytest.mark.broker
async def test_killed_supervisor_leaves_no_worker(app_dir: Path) -> None:
    pytest.importorskip("redis")
    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker)) as (program, url),
    ):
        raws = await raw_peers(url)
        program.proc.kill()
        await program.proc.wait()
        # each worker sees its supervisor's end of the control socket close and
        # shuts down as on SIGTERM
        for raw in raws.values():
            assert await raw.wait_closed(WAIT) == 1001
        await exited(raws)
        assert running_pids(raws) == []


@pytest.mark.broker
@pytest.mark.parametrize("case", ["second signal", "deadline"])
async def test_shutdown_cut_short(app_dir: Path, case: str) -> None:
    """A handler still running: a second signal kills the workers at once; past the
    deadline the worker gives up by itself. Either way exit 1, no worker left."""
    pytest.importorskip("redis")
    timeout = "60" if case == "second signal" else "0.5"
    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker, "--shutdown-timeout", timeout)) as (program, url),
    ):
        peers = await python_peers(url)
        try:
            (pid_a, a), _ = sorted(peers.items())
            ask = asyncio.ensure_future(a.ns.ask("slow", str(120 * UNIT), timeout=WAIT * 10))
            await program.expect("slow started")
            program.proc.send_signal(signal.SIGTERM)
            await program.expect("shutting down (SIGTERM)")
            if case == "second signal":
                program.proc.send_signal(signal.SIGINT)
            _, stderr = await program.finish(1, eof=False)
            if case == "second signal":
                assert re.fullmatch(r"error: a second SIGINT; killing [12] worker\(s\)\n", stderr)
            else:
                assert stderr == (
                    f"error: worker {pid_a}: the shutdown deadline (0.5s) passed; stopping now\n"
                    "error: 1 of 2 worker(s) did not stop cleanly (exit status 1)\n"
                ), stderr
            with pytest.raises(neffos.NeffosError):
                await ask
            await exited(peers)
        finally:
            for peer in peers.values():
                await peer.aclose()


# -- auto, and a bus set by the application ----------------------------------------------


@pytest.mark.broker
async def test_auto_with_the_applications_own_bus(app_dir: Path) -> None:
    pytest.importorskip("redis")
    async with running("redis") as broker:
        env = {**ENV, "APP_REDIS": broker.url}
        args = ["app:with_bus", "--port", "0", "--workers", "auto"]
        async with serving(app_dir, *args, env=env) as (program, url):
            count = cpu_count()
            suffix = f" ({count} workers)" if count > 1 else ""
            assert program.lines[-1] == f"listening on {url}{suffix}", program.lines
            if count > 1:
                peers = await python_peers(url)
                for peer in peers.values():
                    await peer.aclose()
            _, stderr = await stop(program)
            assert stderr == ""


# -- metrics of every worker, served by the supervisor ------------------------------------


@pytest.mark.broker
async def test_metrics_of_every_worker(app_dir: Path) -> None:
    """``--metrics-port`` with workers: the supervisor asks each worker for its numbers
    at every scrape and labels them ``worker="<slot>"``; a restarted worker keeps its
    slot and counts from 0; a worker that does not answer in time is left out."""
    pytest.importorskip("redis")
    pytest.importorskip("prometheus_client")
    from test_metrics import Scrape, http_get, key, scrape

    async with (
        running("redis") as broker,
        serving(app_dir, *workers_args(broker, "--metrics-port", "0")) as (program, url),
        contextlib.AsyncExitStack() as stack,
    ):
        line = await program.expect("metrics on ")
        assert line.endswith("/metrics (all workers)"), line
        metrics_url = line.removeprefix("metrics on ").split(" (")[0]
        peers = await python_peers(url)
        for peer in peers.values():
            stack.push_async_callback(peer.aclose)
        (pid_a, a), (pid_b, b) = sorted(peers.items())

        def messages_in(s: Scrape) -> dict[str, float]:
            return {slot: s[key("neffos_messages_total", direction="in", worker=slot)]
                    for slot in ("0", "1")}

        before = await scrape(metrics_url)
        assert before[key("neffos_build_info", version=neffos.__version__, worker="0")] == 1
        assert before[key("neffos_build_info", version=neffos.__version__, worker="1")] == 1
        for _ in range(5):
            await a.ask_pid()
        for _ in range(3):
            await b.ask_pid()
        after = await scrape(metrics_url)
        moved = {slot: after_n - messages_in(before)[slot]
                 for slot, after_n in messages_in(after).items()}
        assert sorted(moved.values()) == [3, 5], moved
        slot_a = next(slot for slot, n in moved.items() if n == 5)
        slot_b = "1" if slot_a == "0" else "0"
        assert after[key("neffos_connections", worker=slot_a)] >= 1
        assert after[key("neffos_namespace_connections", namespace="chat", worker=slot_b)] >= 1
        status, _headers, body = await http_get(metrics_url, "HEAD")
        assert (status, body) == (200, b""), status
        assert (await http_get(metrics_url.replace("/metrics", "/other")))[0] == 404

        # a worker that does not answer (stopped) is left out, after STATS_TIMEOUT
        os.kill(pid_b, signal.SIGSTOP)
        try:
            partial = await scrape(metrics_url)
        finally:
            os.kill(pid_b, signal.SIGCONT)
        assert partial[key("neffos_build_info", version=neffos.__version__, worker=slot_a)] == 1
        assert not any(f'worker="{slot_b}"' in name for name in partial.samples), partial.text

        # a killed worker comes back in its slot, its counters from 0
        os.kill(pid_a, signal.SIGKILL)
        await program.expect(f"(replacing {pid_a})")
        again = await scrape(metrics_url)
        assert again[key("neffos_messages_total", direction="in", worker=slot_a)] < \
            after[key("neffos_messages_total", direction="in", worker=slot_a)]
        assert again[key("neffos_messages_total", direction="in", worker=slot_b)] >= \
            after[key("neffos_messages_total", direction="in", worker=slot_b)]
        _, stderr = await stop(program)
        assert "killed by SIGKILL" in stderr, stderr
