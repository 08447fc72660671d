"""Behind a reverse proxy: ``Server(trusted_proxies=)`` and real nginx with deploy/nginx.conf.

* Unit tests of the header rules (``forwarded_client``) on plain requests.
* The option on real listeners, with the headers sent by the client itself
  (believed from a trusted peer only).
* Real nginx (Debian's ``/usr/sbin/nginx``) run by the test with the settings
  of ``deploy/nginx.conf`` (only the listen and upstream addresses changed) in
  front of a neffos server: the Python client and neffos.js through it, a
  reconnection after the server restarts on the same port, and the client's
  address on the server. nginx connects to neffos from 127.0.0.3 (``proxy_bind``)
  so that its address differs from the client's (127.0.0.1).

Skipped when nginx is missing, unless ``NEFFOS_REQUIRE_NGINX=1`` (CI);
scripts/test.sh installs it when it runs as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import UNIT, Recorder
from test_interop_js import js_client, node  # noqa: F401  (node: a fixture)

import neffos
from neffos import ON_NAMESPACE_CONNECTED
from neffos._http import Headers, Request, forwarded_client, trusted_networks

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
NGINX = "/usr/sbin/nginx"
NGINX_PEER = "127.0.0.3"  # nginx's source address towards neffos (proxy_bind)
WAIT = 5 * UNIT
FAST = neffos.Reconnect(initial_delay=0.05 * UNIT, max_delay=0.2 * UNIT)


# -- the header rules ------------------------------------------------------------------


def request(peer: tuple[str, int] | None, *headers: tuple[str, str]) -> Request:
    return Request("GET", "/echo", Headers(list(headers)), peer)


PROXIES = trusted_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


def test_trusted_networks() -> None:
    assert [str(n) for n in PROXIES] == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
    assert [str(n) for n in trusted_networks("::1")] == ["::1/128"]  # one string: one entry
    assert trusted_networks([]) == ()
    for bad in (["localhost"], ["10.0.0.1/8"], ["300.1.2.3"]):
        with pytest.raises(ValueError):
            trusted_networks(bad)
    with pytest.raises(ValueError):
        neffos.Server({}, trusted_proxies=["proxy.example"])


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # not a trusted peer: the headers are never read
        (("203.0.113.5", 40000), [("X-Forwarded-For", "198.51.100.1")], None),
        (("203.0.113.5", 40000), [("X-Real-IP", "198.51.100.1")], None),
        (None, [("X-Forwarded-For", "198.51.100.1")], None),
        # one trusted proxy
        (("127.0.0.1", 40000), [("X-Forwarded-For", "198.51.100.1")], ("198.51.100.1", 0)),
        (("127.0.0.1", 40000), [("X-Real-IP", "198.51.100.1")], ("198.51.100.1", 0)),
        (("::ffff:127.0.0.1", 40000), [("X-Real-IP", "2001:db8::1")], ("2001:db8::1", 0)),
        # the right-most untrusted address; what the client wrote left of it is ignored
        (
            ("127.0.0.1", 1),
            [("X-Forwarded-For", "6.6.6.6, 198.51.100.1, 10.1.1.1"), ("X-Real-IP", "10.1.1.1")],
            ("198.51.100.1", 0),
        ),
        (
            ("10.2.0.1", 1),
            [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1,10.9.9.9")],
            ("198.51.100.1", 0),
        ),
        # every hop trusted: the left-most
        (("127.0.0.1", 1), [("X-Forwarded-For", "10.0.0.7, 10.0.0.8")], ("10.0.0.7", 0)),
        # ports, when an entry carries one
        (("127.0.0.1", 1), [("X-Forwarded-For", "198.51.100.1:5555")], ("198.51.100.1", 5555)),
        (("127.0.0.1", 1), [("X-Forwarded-For", "[2001:db8::1]:443")], ("2001:db8::1", 443)),
        (("127.0.0.1", 1), [("X-Forwarded-For", "[2001:db8::1]")], ("2001:db8::1", 0)),
        # X-Forwarded-For unreadable or missing: X-Real-IP, else the peer stays
        (
            ("127.0.0.1", 1),
            [("X-Forwarded-For", "unknown"), ("X-Real-IP", "198.51.100.2")],
            ("198.51.100.2", 0),
        ),
        (("127.0.0.1", 1), [("X-Forwarded-For", "1.2.3.4:99999")], None),
        (("127.0.0.1", 1), [("X-Real-IP", "a"), ("X-Real-IP", "b")], None),
        (("127.0.0.1", 1), [("X-Real-IP", "1.2.3.4"), ("X-Real-IP", "5.6.7.8")], None),
        (("127.0.0.1", 1), [], None),
    ],
)
def test_forwarded_client(
    peer: tuple[str, int] | None, headers: list[tuple[str, str]], client: tuple[str, int] | None
) -> None:
    assert forwarded_client(request(peer, *headers), PROXIES) == client


# -- the option on real listeners ------------------------------------------------------


async def _seen(
    net_transport: str, trusted: list[str] | None, headers: dict[str, str]
) -> tuple[Any, Any, Any]:
    """(conn.remote_address, request.remote_address, the id) of one connection."""
    seen: asyncio.Future[tuple[Any, Any, Any]] = asyncio.get_running_loop().create_future()

    def on_connect(conn: neffos.Conn) -> None:
        assert conn.request is not None
        seen.set_result((conn.remote_address, conn.request.remote_address, conn.id))

    server = neffos.Server(
        {"v1": {}},
        on_connect=on_connect,
        ping_interval=None,
        trusted_proxies=trusted,
        id_generator=lambda r: (r.remote_address or ("?", 0))[0],
    )
    listener = await server.listen("127.0.0.1", 0, path="/echo", transport=net_transport)
    try:
        client = await neffos.dial(
            listener.url, {"v1": {}}, headers=headers, transport=net_transport,
            timeout=WAIT, ping_interval=None,
        )
        async with client:
            return await asyncio.wait_for(seen, WAIT)
    finally:
        await listener.close()
        await server.close()


async def test_trusted_peer_gives_the_forwarded_client(net_transport: str) -> None:
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.1", "X-Real-IP": "198.51.100.9"}
    remote, from_request, conn_id = await _seen(net_transport, ["127.0.0.0/8"], headers)
    assert remote == from_request == ("198.51.100.1", 0)
    assert conn_id == "198.51.100.1"  # id_generator already sees the client


async def test_untrusted_peer_headers_are_ignored(net_transport: str) -> None:
    headers = {"X-Forwarded-For": "198.51.100.1", "X-Real-IP": "198.51.100.1"}
    for trusted in (None, ["10.0.0.0/8"]):
        remote, from_request, _ = await _seen(net_transport, trusted, headers)
        assert remote[0] == from_request[0] == "127.0.0.1"
        assert remote[1] == from_request[1] != 0


# -- real nginx ------------------------------------------------------------------------


def _nginx_problem() -> str | None:
    if not os.access(NGINX, os.X_OK):
        return f"{NGINX} is missing (Debian package nginx; scripts/test.sh installs it as root)"
    if not CONFIG.is_file():
        return f"{CONFIG} is missing"
    return None


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    problem = _nginx_problem()
    if problem is not None:
        if os.environ.get("NEFFOS_REQUIRE_NGINX") == "1":
            pytest.fail(f"NEFFOS_REQUIRE_NGINX=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return NGINX


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(tmp: Path, listen_port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with its two addresses changed, in a complete config under ``tmp``."""
    site = CONFIG.read_text()
    site, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    site, upstreams = re.subn(
        r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream_port};", site
    )
    assert listens == upstreams == 1, "deploy/nginx.conf no longer has the lines the test edits"
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_buffering off;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Real-IP $remote_addr;",
    ):
        assert directive in site, directive
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                        "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers keep access to tmp
    return (
        f"{user}worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {tmp / 'access.log'};\n"
        f"{temp}\n"
        f"    proxy_bind {NGINX_PEER};\n"
        f"{site}\n"
        "}\n"
    )


class Nginx:
    """One nginx process (``daemon off``) in front of ``127.0.0.1:upstream_port``."""

    def __init__(self, proc: asyncio.subprocess.Process, tmp: Path, port: int) -> None:
        self.proc = proc
        self.tmp = tmp
        self.port = port

    def url(self, path: str = "/echo") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def errors(self) -> str:
        log = self.tmp / "error.log"
        return log.read_text() if log.is_file() else ""

    async def wait_accepting(self, timeout: float = WAIT) -> None:
        """Retry connecting until nginx accepts (or exits, or the time is up)."""
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"nginx exited {self.proc.returncode}: {self.errors()}")
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port), 0.5 * UNIT
                    )
                except (OSError, TimeoutError):
                    # refused until nginx listens: wait on the process for a moment
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.proc.wait(), 0.05 * UNIT)
                    continue
                writer.close()
                await writer.wait_closed()
                return


@contextlib.asynccontextmanager
async def running_nginx(binary: str, tmp: Path, upstream_port: int) -> AsyncIterator[Nginx]:
    port = _free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, port, upstream_port))
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log"),
        "-g", f"daemon off; pid {tmp / 'nginx.pid'}; error_log {tmp / 'error.log'};",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    nginx = Nginx(proc, tmp, port)
    try:
        await nginx.wait_accepting()
        yield nginx
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), WAIT)


@contextlib.asynccontextmanager
async def behind_nginx(
    binary: str, tmp: Path, handler: Any, **options: Any
) -> AsyncIterator[tuple[neffos.Server, Nginx]]:
    options.setdefault("ping_interval", None)
    server = neffos.Server(handler, **options)
    listener = await server.listen("127.0.0.1", 0, path="/echo")
    try:
        async with running_nginx(binary, tmp, listener.port) as nginx:
            yield server, nginx
    finally:
        await listener.close()
        await server.close()


def chat_server() -> dict[str, Any]:
    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        assert server is not None
        server.broadcast(ns, msg)

    return {"v1": {"chat": chat, "echo": lambda ns, m: b"echo: " + m.body}}


async def test_python_clients_through_nginx(nginx_binary: str, tmp_path: Path) -> None:
    got = Recorder()
    handler = {"v1": {"chat": lambda ns, m: got.add((ns.conn.id, m.body))}}
    async with behind_nginx(
        nginx_binary, tmp_path, chat_server(), trusted_proxies=[NGINX_PEER]
    ) as (server, nginx):
        a = await neffos.dial(nginx.url(), handler, timeout=WAIT, ping_interval=None)
        b = await neffos.dial(nginx.url(), handler, timeout=WAIT, ping_interval=None)
        async with a, b:
            ns_a = await a.connect("v1")
            await b.connect("v1")
            assert (await ns_a.ask("echo", "hi", timeout=WAIT)).body == b"echo: hi"
            ns_a.emit("chat", b"to everyone else")
            assert await got.wait_len(1) == [(b.id, b"to everyone else")]
            conns = server.get_connections()
            assert len(conns) == 2
            for conn in conns:
                assert conn.request is not None
                assert conn.remote_address == conn.request.remote_address == ("127.0.0.1", 0)
                assert conn.request.headers.get("X-Real-IP") == "127.0.0.1"
    assert "[error]" not in nginx.errors() and "[crit]" not in nginx.errors()


async def test_without_trusted_proxies_the_address_is_nginx(
    nginx_binary: str, tmp_path: Path
) -> None:
    async with behind_nginx(nginx_binary, tmp_path, chat_server()) as (server, nginx):
        client = await neffos.dial(nginx.url(), {"v1": {}}, timeout=WAIT, ping_interval=None)
        async with client:
            (conn,) = server.get_connections()
            assert conn.remote_address is not None
            assert conn.remote_address[0] == NGINX_PEER and conn.remote_address[1] != 0
            assert conn.request is not None
            assert conn.request.headers.get("X-Forwarded-For") == "127.0.0.1"


async def test_reconnect_through_nginx_after_a_restart(nginx_binary: str, tmp_path: Path) -> None:
    connected = Recorder()
    handler = {"v1": {ON_NAMESPACE_CONNECTED: lambda ns, m: connected.add(ns.conn.was_reconnected)}}
    first = neffos.Server(chat_server(), ping_interval=None, trusted_proxies=[NGINX_PEER])
    listener = await first.listen("127.0.0.1", 0, path="/echo")
    port = listener.port
    second = neffos.Server(chat_server(), ping_interval=None, trusted_proxies=[NGINX_PEER])
    try:
        async with running_nginx(nginx_binary, tmp_path, port) as nginx:
            client = await neffos.dial(
                nginx.url(), handler, timeout=WAIT, ping_interval=None, reconnect=FAST
            )
            async with client:
                ns = await client.connect("v1")
                await connected.wait_len(1)
                await listener.close()
                await first.close()  # the client is dropped; nginx answers 502 meanwhile
                listener = await second.listen("127.0.0.1", port, path="/echo")
                assert await connected.wait_len(2, timeout=10 * UNIT) == [False, True]
                assert (await ns.ask("echo", "back", timeout=WAIT)).body == b"echo: back"
                (conn,) = second.get_connections()
                assert conn.reconnect_tries >= 1
                assert conn.remote_address == ("127.0.0.1", 0)
    finally:
        await listener.close()
        await first.close()
        await second.close()


async def test_neffos_js_through_nginx(
    nginx_binary: str,
    node: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with (
        behind_nginx(nginx_binary, tmp_path, chat_server(), trusted_proxies=[NGINX_PEER]) as (
            server,
            nginx,
        ),
        js_client(node, nginx.url()) as js1,
        js_client(node, nginx.url()) as js2,
    ):
        for js in (js1, js2):
            await js.call("dial", namespaces={"v1": ["chat"]})
            await js.call("connect", namespace="v1")
        reply = await js1.call("ask", namespace="v1", event="echo", body="hello")
        assert reply["body"] == "echo: hello"
        await js1.call("emit", namespace="v1", event="chat", body="hi js2")
        event = await js2.wait_event("chat")
        assert event["body"] == "hi js2"
        await js1.call("ask", namespace="v1", event="echo", body="sync")  # after the chat
        assert js1.events("chat") == []  # the broadcast left the sender out
        assert [c.remote_address for c in server.get_connections()] == [("127.0.0.1", 0)] * 2
        js1.assert_clean()
        js2.assert_clean()


def test_nginx_accepts_the_shipped_config(nginx_binary: str, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, _free_port(), 8080))
    out = subprocess.run(
        [nginx_binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log"),
         "-g", f"pid {tmp_path / 'nginx.pid'};"],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
