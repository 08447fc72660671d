"""The ``neffos`` command (``neffos serve|version``), run as a user runs it.

Every test starts real processes (``python -m neffos`` or the ``neffos``
console script) in a directory holding a small application module, reads their
output line by line with timeouts, and sends them real signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import UNIT, Recorder
from helpers.brokers import free_port, running
from helpers.programs import ENV, WAIT, Program
from helpers.raw import RawPeer

import neffos

APP = '''\
import asyncio
import neffos


def joined(ns, msg):
    print(f"joined {ns.conn.id} {msg.room}", flush=True)


async def slow(ns, msg):
    print("slow started", flush=True)
    await asyncio.sleep(float(msg.text))
    return b"slow done"


events = {
    "chat": {
        "echo": lambda ns, msg: msg.body,
        "slow": slow,
        "loop": lambda ns, msg: type(asyncio.get_running_loop()).__module__.encode(),
        neffos.ON_NAMESPACE_CONNECTED: lambda ns, msg: print(f"connected {ns.conn.id}",
                                                            flush=True),
        neffos.ON_ROOM_JOINED: joined,
    }
}

server = neffos.Server(events, id_generator=lambda request: request.headers.get("X-Id") or "x")


async def make_server():
    return neffos.Server(events)


def make_sync():
    return neffos.Server(events)


not_a_server = 42
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def console_script() -> str:
    """The ``neffos`` script installed next to this Python (``pip install -e .``)."""
    path = Path(sys.executable).parent / ("neffos.exe" if sys.platform == "win32" else "neffos")
    assert path.exists(), f"{path} is missing: reinstall the package (pip install -e .)"
    return str(path)


async def start(cwd: Path, *args: str, script: bool = False, env: dict[str, str] | None = None
                ) -> Program:
    """``python -m neffos ARGS`` (or the ``neffos`` script) in ``cwd``."""
    command = [console_script()] if script else [sys.executable, "-m", "neffos"]
    proc = await asyncio.create_subprocess_exec(
        *command, *args, cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
    )
    return Program("neffos " + " ".join(args), proc)


@contextlib.asynccontextmanager
async def serving(cwd: Path, *args: str, **kw: Any) -> AsyncIterator[tuple[Program, str]]:
    """A running ``neffos serve ARGS``; its URL. Killed at the end whatever happened."""
    program = await start(cwd, "serve", *args, **kw)
    try:
        line = await program.expect("listening on ")
        yield program, line.removeprefix("listening on ")
    finally:
        await program.kill()


async def stop(program: Program, signum: int = signal.SIGTERM) -> tuple[list[str], str]:
    """Send ``signum``; expect exit 0; stdout lines and stderr."""
    program.proc.send_signal(signum)
    return await program.finish(0, eof=False)


async def fails(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``neffos ARGS``; expect exit 1 and one line on stderr; return it."""
    program = await start(cwd, *args, env=env)
    lines, stderr = await program.finish(1)
    assert lines == [], lines
    assert "Traceback" not in stderr, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    return stderr.strip()


# -- version and help -----------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python -m neffos", "neffos"])
async def test_version(app_dir: Path, script: bool) -> None:
    program = await start(app_dir, "version", script=script)
    lines, stderr = await program.finish(0)
    assert lines == [neffos.__version__] and stderr == ""


@pytest.mark.parametrize("command", [[], ["serve"], ["version"], ["demo"], ["demo", "client"]])
async def test_help_everywhere(app_dir: Path, command: list[str]) -> None:
    program = await start(app_dir, *command, "--help", script=True)
    lines, stderr = await program.finish(0)
    assert lines[0].startswith(f"usage: neffos {' '.join(command)}".rstrip()), lines
    assert stderr == ""


# -- errors: one line, exit 1 ---------------------------------------------------------


@pytest.mark.parametrize(("target", "expected"), [
    ("nowhere:server", "error: no module named 'nowhere' (from 'nowhere:server')"),
    ("app:nothing", "error: module 'app' has no attribute 'nothing'"),
    ("app:not_a_server", "error: app:not_a_server is 'int', not a neffos.Server"),
    ("app", "error: 'app' is not MODULE:ATTR"),
])
async def test_app_not_found(app_dir: Path, target: str, expected: str) -> None:
    assert (await fails(app_dir, "serve", target, "--port", "0")).startswith(expected)


async def test_port_in_use(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = await fails(app_dir, "serve", "app:server", "--port", str(port))
    assert line == f"error: cannot listen on 127.0.0.1:{port}: address already in use"


@pytest.mark.parametrize(("option", "url", "expected"), [
    ("--redis", "redis://127.0.0.1:{port}/0", "error: cannot reach Redis at redis://127.0.0.1:"),
    ("--redis", "127.0.0.1:{port}", "error: cannot reach Redis (127.0.0.1:"),
    ("--nats", "nats://127.0.0.1:{port}", "error: cannot reach NATS (nats://127.0.0.1:"),
])
async def test_broker_unreachable(app_dir: Path, option: str, url: str, expected: str) -> None:
    url = url.format(port=free_port())  # nothing listens there
    line = await fails(app_dir, "serve", "app:server", "--port", "0", option, url)
    assert line.startswith(expected), line


def without(library: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process in which ``library`` cannot be imported: a
    package of that name that raises ImportError, ahead of site-packages."""
    blocker = tmp_path_factory.mktemp("blocked") / library
    blocker.mkdir()
    (blocker / "__init__.py").write_text(f"raise ImportError('{library} is blocked here')\n")
    return {**ENV, "PYTHONPATH": str(blocker.parent)}


@pytest.mark.parametrize(("library", "args", "extra"), [
    ("redis", ["--redis", "redis://127.0.0.1:1"], "neffos[redis]"),
    ("nats", ["--nats", "nats://127.0.0.1:1"], "neffos[nats]"),
    ("websockets", ["--transport", "websockets"], "neffos[websockets]"),
    ("uvloop", ["--loop", "uvloop"], "neffos[uvloop]"),
])
async def test_missing_extra(app_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                             library: str, args: list[str], extra: str) -> None:
    env = without(library, tmp_path_factory)
    line = await fails(app_dir, "serve", "app:server", "--port", "0", *args, env=env)
    assert extra in line, line


async def test_bad_certificate(app_dir: Path) -> None:
    line = await fails(app_dir, "serve", "app:server", "--certfile", str(app_dir / "none.pem"))
    assert line.startswith("error: cannot load the TLS certificate"), line


async def test_usage_errors(app_dir: Path) -> None:
    program = await start(app_dir, "serve", "app:server", "--redis", "a", "--nats", "b")
    _, stderr = await program.finish(2)
    assert "not allowed with argument --redis" in stderr and "Traceback" not in stderr


# -- serving ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["app:server", "app:make_server", "app:make_sync"])
async def test_serve_a_server_or_a_factory(app_dir: Path, target: str) -> None:
    async with serving(app_dir, target, "--port", "0", "--path", "/echo") as (program, url):
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/echo"), url
        async with neffos.dial(url, {"chat": {}}, timeout=WAIT) as client:
            ns = await client.connect("chat", timeout=WAIT)
            reply = await ns.ask("echo", "hello", timeout=WAIT)
            assert reply.text == "hello"
        with pytest.raises(neffos.DialError):  # other paths are 404
            await neffos.dial(url.removesuffix("echo") + "other", {"chat": {}}, timeout=WAIT)
        await stop(program)


@pytest.mark.parametrize(("option", "blocked", "expected"), [
    ([], False, "uvloop"),  # auto: uvloop, installed with the test extra
    ([], True, "asyncio.unix_events"),  # auto without uvloop: asyncio's own loop
    (["--loop", "asyncio"], False, "asyncio.unix_events"),
    (["--loop", "uvloop"], False, "uvloop"),
])
async def test_event_loop(app_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                          option: list[str], blocked: bool, expected: str) -> None:
    if expected == "uvloop":
        pytest.importorskip("uvloop")  # in the test extra, except on Windows
    env = without("uvloop", tmp_path_factory) if blocked else None
    async with serving(app_dir, "app:server", "--port", "0", *option, env=env) as (program, url):
        async with neffos.dial(url, {"chat": {}}, timeout=WAIT) as client:
            ns = await client.connect("chat", timeout=WAIT)
            reply = await ns.ask("loop", timeout=WAIT)
            assert reply.text == expected
        await stop(program)


async def test_allowed_origins(app_dir: Path) -> None:
    args = ["--port", "0", "--allowed-origin", "https://a.example",
            "--allowed-origin", "https://b.example"]
    async with serving(app_dir, "app:server", *args) as (program, url):
        for origin in ("https://a.example", "https://b.example"):
            async with neffos.dial(url, {}, headers={"Origin": origin}, timeout=WAIT):
                pass
        with pytest.raises(neffos.DialError, match="403"):
            await neffos.dial(url, {}, headers={"Origin": "https://c.example"}, timeout=WAIT)
        await stop(program)


async def test_tls(app_dir: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(app_dir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(app_dir / "cert.pem"))
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    args = ["--port", "0", "--certfile", "cert.pem", "--keyfile", "key.pem"]
    async with serving(app_dir, "app:server", *args) as (program, url):
        assert url.startswith("wss://127.0.0.1:"), url
        async with neffos.dial(url, {"chat": {}}, ssl=client_ssl, timeout=WAIT) as client:
            ns = await client.connect("chat", timeout=WAIT)
            assert (await ns.ask("echo", "secret", timeout=WAIT)).text == "secret"
        await stop(program)


# -- graceful shutdown -------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_connections_with_1001(app_dir: Path, signum: int) -> None:
    # (the command installs its own handlers: an inherited SIG_IGN does not matter)
    rec = Recorder()
    events = {"chat": {neffos.ON_NAMESPACE_DISCONNECT: lambda ns, msg: rec.add(msg.is_forced)}}
    async with serving(app_dir, "app:server", "--port", "0", "--transport", "picows") as (
        program, url
    ):
        raw = await RawPeer.connect(url)
        await raw.handshake()
        client = await neffos.dial(url, events, timeout=WAIT)
        await client.connect("chat", timeout=WAIT)
        await program.expect("connected ")
        lines, stderr = await stop(program, signum)
        assert f"shutting down ({signal.Signals(signum).name})" in lines
        assert stderr == ""  # a quiet, clean exit
        assert await raw.wait_closed(WAIT) == 1001  # going away
        async with asyncio.timeout(WAIT):
            await client.wait_closed()
        assert rec.items == [True]  # the namespace was disconnected, forced


async def test_listener_closed_first(app_dir: Path) -> None:
    """After the signal, new connections are refused while the old ones are closing."""
    async with serving(app_dir, "app:server", "--port", "0", "--shutdown-timeout", "30") as (
        program, url
    ):
        client = await neffos.dial(url, {"chat": {}}, timeout=WAIT)
        ns = await client.connect("chat", timeout=WAIT)
        ask = asyncio.ensure_future(ns.ask("slow", "0.5", timeout=WAIT))
        await program.expect("slow started")
        program.proc.send_signal(signal.SIGTERM)
        await program.expect("shutting down (SIGTERM)")
        with pytest.raises((neffos.DialError, OSError)):
            await neffos.dial(url, {}, timeout=WAIT)
        # the handler that was running finishes and its reply goes out before the 1001
        assert (await ask).body == b"slow done"
        await program.finish(0, eof=False)


async def test_shutdown_deadline(app_dir: Path) -> None:
    """A handler still running at the deadline: the command gives up, exit 1, one line."""
    args = ["--port", "0", "--shutdown-timeout", "0.5"]
    async with serving(app_dir, "app:server", *args) as (program, url):
        client = await neffos.dial(url, {"chat": {}}, timeout=WAIT)
        try:
            ns = await client.connect("chat", timeout=WAIT)
            ask = asyncio.ensure_future(ns.ask("slow", str(30 * UNIT), timeout=WAIT))
            await program.expect("slow started")
            program.proc.send_signal(signal.SIGTERM)
            lines, stderr = await program.finish(1, eof=False)
            assert "shutting down (SIGTERM)" in lines
            assert stderr == "error: the shutdown deadline (0.5s) passed; stopping now\n"
            with pytest.raises(neffos.NeffosError):
                await ask
        finally:
            await client.aclose()


async def test_reconnecting_client_comes_back_and_rejoins(app_dir: Path) -> None:
    rec = Recorder()
    events = {"chat": {
        neffos.ON_NAMESPACE_CONNECTED: lambda ns, msg: rec.add(("connected", msg.is_forced)),
        neffos.ON_NAMESPACE_DISCONNECT: lambda ns, msg: rec.add(("disconnected", msg.is_forced)),
        neffos.ON_ROOM_JOINED: lambda ns, msg: rec.add(("joined", msg.room)),
    }}
    policy = neffos.Reconnect(initial_delay=0.05 * UNIT, max_delay=0.2 * UNIT, jitter=0)
    async with serving(app_dir, "app:server", "--port", "0") as (first, url):
        port = url.rsplit(":", 1)[1].rstrip("/")
        client = await neffos.dial(url, events, headers={"X-Id": "kim"}, reconnect=policy,
                                   timeout=WAIT)
        try:
            ns = await client.connect("chat", timeout=WAIT)
            await ns.join_room("lobby", timeout=WAIT)
            await first.expect("joined kim lobby")
            _, stderr = await stop(first)
            assert stderr == ""
            await rec.wait_for(lambda items: ("disconnected", True) in items, WAIT)
            assert not client.is_closed  # still trying
            rec.clear()
            async with serving(app_dir, "app:server", "--port", port) as (second, _):
                await second.expect("connected kim")
                await second.expect("joined kim lobby")
                await rec.wait_for(lambda items: ("joined", "lobby") in items, WAIT)
                ns = client.namespace("chat") or ns
                assert (await ns.ask("echo", "again", timeout=WAIT)).text == "again"
                assert ns.room("lobby") is not None
                await client.aclose()
                await stop(second)
        finally:
            await client.aclose()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_bus_connected_and_closed(app_dir: Path, kind: str) -> None:
    pytest.importorskip("redis" if kind == "redis" else "nats")
    async with running(kind) as broker:
        args = ["--port", "0", f"--{kind}", broker.url]
        async with serving(app_dir, "app:server", *args) as (program, url):
            assert await broker.connection_count() >= 1  # (Redis opens its publisher lazily)
            async with neffos.dial(url, {"chat": {}}, timeout=WAIT) as client:
                ns = await client.connect("chat", timeout=WAIT)
                assert (await ns.ask("echo", "bus", timeout=WAIT)).text == "bus"
                _, stderr = await stop(program)
                assert stderr == ""


async def test_second_signal_stops_at_once(app_dir: Path) -> None:
    args = ["--port", "0", "--shutdown-timeout", str(60 * UNIT)]
    async with serving(app_dir, "app:server", *args) as (program, url):
        client = await neffos.dial(url, {"chat": {}}, timeout=WAIT)
        try:
            ns = await client.connect("chat", timeout=WAIT)
            ask = asyncio.ensure_future(ns.ask("slow", str(60 * UNIT), timeout=WAIT))
            await program.expect("slow started")
            program.proc.send_signal(signal.SIGTERM)
            await program.expect("shutting down (SIGTERM)")
            program.proc.send_signal(signal.SIGINT)
            _, stderr = await program.finish(1, eof=False)
            # the running handler was still draining: its connection is dropped
            assert stderr == "error: a second SIGINT; dropping 1 connection(s)\n"
            with pytest.raises(neffos.NeffosError):
                await ask
        finally:
            await client.aclose()


async def test_log_level(app_dir: Path) -> None:
    async with serving(app_dir, "app:server", "--port", "0", "--log-level", "info") as (
        program, url
    ):
        _, stderr = await stop(program)
    assert f"INFO neffos.cli: serving app:server on {url} (picows)" in stderr.splitlines()
