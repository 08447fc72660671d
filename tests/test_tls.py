"""TLS: ``listen(..., ssl=)`` serves ``wss://``, ``dial(..., ssl=)`` opens it.

Each test makes its certificates with trustme: a throwaway CA and a server
certificate for 127.0.0.1 signed by it. Servers listen with TLS on every
network transport and clients dial with ``ssl=`` on every client transport;
a client that does not trust the certificate gets a DialError that says so,
and neffos.js under Node (``NODE_EXTRA_CA_CERTS``) talks to the same listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import NETWORK_TRANSPORTS, UNIT, Recorder
from test_interop_js import js_client, node

import neffos
from neffos import ON_NAMESPACE_CONNECTED, ON_NAMESPACE_DISCONNECT
from neffos.listener import Listener

__all__ = ["node"]  # the Node fixture, shared with the neffos.js interop tests

WAIT = 5 * UNIT
FAST = neffos.Reconnect(initial_delay=0.01 * UNIT, max_delay=0.05 * UNIT, max_tries=20)


# -- certificates ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    """The server's context: a certificate for 127.0.0.1 signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and verifies the host name)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- servers ---------------------------------------------------------------------------


def echo_events(rec: Recorder) -> dict[str, Any]:
    """Namespace "v1": ``echo`` answers its body, ``note`` is recorded and echoed as
    an event, as the server's emit."""

    def note(ns: neffos.NSConn, msg: neffos.Message) -> None:
        rec.add(("server", msg.text))
        ns.emit("noted", msg.body)

    return {"v1": {"echo": lambda ns, m: m.body, "note": note}}


@contextlib.asynccontextmanager
async def serving(
    transport: str, handler: Any, context: ssl.SSLContext | None, **options: Any
) -> AsyncIterator[tuple[neffos.Server, Listener]]:
    server = neffos.Server(handler, ping_interval=None, **options)
    listener = await server.listen(
        "127.0.0.1", 0, path="/echo", transport=transport, ssl=context
    )
    try:
        yield server, listener
    finally:
        await listener.close()
        await server.close()


# -- Python clients --------------------------------------------------------------------


@pytest.mark.parametrize("client_transport", NETWORK_TRANSPORTS)
async def test_wss_round_trip(
    net_transport: str,
    client_transport: str,
    server_ssl: ssl.SSLContext,
    client_ssl: ssl.SSLContext,
) -> None:
    rec = Recorder()
    async with serving(net_transport, echo_events(rec), server_ssl) as (server, listener):
        assert listener.tls
        assert listener.url == f"wss://127.0.0.1:{listener.port}/echo"
        client_events = {"v1": {"noted": lambda ns, m: rec.add(("client", m.text))}}
        async with neffos.dial(
            listener.url, client_events, ssl=client_ssl, transport=client_transport,
            timeout=WAIT, ping_interval=None,
        ) as client:
            ns = await client.connect("v1", timeout=WAIT)
            assert (await ns.ask("echo", "over tls", timeout=WAIT)).text == "over tls"
            assert ns.emit("note", "hello")
            await rec.wait_len(2)
            assert rec.items == [("server", "hello"), ("client", "hello")]
            (conn,) = server.get_connections()
            assert conn.id == client.id


async def test_plain_listener_reports_ws_url() -> None:
    async with serving("picows", {"v1": {}}, None) as (_server, listener):
        assert not listener.tls
        assert listener.url == f"ws://127.0.0.1:{listener.port}/echo"


@pytest.mark.parametrize("trust", ["system CAs only", "another CA", "another host"])
async def test_certificate_that_does_not_verify_is_a_dial_error(
    net_transport: str,
    trust: str,
    ca: trustme.CA,
    client_ssl: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dial fails at once with a DialError that names the certificate; the server
    logs nothing at ERROR and keeps serving clients that do trust it."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client_context: ssl.SSLContext | None = None
    if trust == "another CA":
        client_context = ssl.create_default_context()
        trustme.CA().configure_trust(client_context)
    if trust == "another host":  # signed by the trusted CA, for another name
        ca.issue_cert("elsewhere.example").configure_cert(server_context)
        client_context = client_ssl
    else:
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
    caplog.set_level(logging.DEBUG)
    async with serving("picows", {"v1": {"echo": lambda ns, m: m.body}}, server_context) as (
        server,
        listener,
    ):
        with pytest.raises(neffos.DialError) as failure:
            await neffos.dial(
                listener.url, {"v1": {}}, ssl=client_context, transport=net_transport,
                timeout=WAIT, ping_interval=None,
            )
        text = str(failure.value)
        assert text.startswith(f"cannot connect to {listener.url}: "), text
        assert "the server's TLS certificate did not verify" in text, text
        reason = "IP address mismatch" if trust == "another host" else "certificate"
        assert reason in text, text
        assert server.get_total_connections() == 0
        if trust != "another host":  # (nobody trusts that one for 127.0.0.1)
            async with neffos.dial(
                listener.url, {"v1": {}}, ssl=client_ssl, transport=net_transport,
                timeout=WAIT, ping_interval=None,
            ) as client:
                ns = await client.connect("v1", timeout=WAIT)
                assert (await ns.ask("echo", "still here", timeout=WAIT)).text == "still here"
    loud = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert loud == []


@pytest.mark.parametrize("mismatch", ["ws to a TLS listener", "wss to a plain listener"])
async def test_scheme_mismatch_is_a_dial_error(
    net_transport: str, mismatch: str, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """No hang until the dial's timeout: the peer's first bytes make no sense to it.

    A plain listener takes a TLS ClientHello for the start of a request head and
    answers 408 at its HTTP deadline (``handshake_timeout``, short here); the
    client reads that answer as a failed TLS handshake.
    """
    tls_listener = mismatch == "ws to a TLS listener"
    context = server_ssl if tls_listener else None
    async with serving("picows", {"v1": {}}, context, handshake_timeout=WAIT / 10) as (
        server,
        listener,
    ):
        if tls_listener:
            url = listener.url.replace("wss://", "ws://", 1)
        else:
            url = listener.url.replace("ws://", "wss://", 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(neffos.DialError) as failure:
            await neffos.dial(
                url, {"v1": {}}, ssl=None if tls_listener else client_ssl,
                transport=net_transport, timeout=4 * WAIT, ping_interval=None,
            )
        assert loop.time() - started < WAIT, f"a hang, then: {failure.value}"
        if tls_listener:  # the server hung up on the plain-text request
            assert re.search("clos|lost|disconnect", str(failure.value), re.I), failure.value
        else:
            assert "TLS handshake failed (WRONG_VERSION_NUMBER)" in str(failure.value)
        assert server.get_total_connections() == 0


def test_ssl_with_a_ws_url_is_refused(client_ssl: ssl.SSLContext) -> None:
    with pytest.raises(ValueError, match="wss://"):
        neffos.dial("ws://127.0.0.1:1/echo", {"v1": {}}, ssl=client_ssl)


@pytest.mark.parametrize("value", [False, True, "no"])
def test_ssl_must_be_a_context(value: object) -> None:
    # aiohttp would read ssl=False as "do not verify": refused on every transport
    with pytest.raises(TypeError, match="SSLContext"):
        neffos.dial("wss://127.0.0.1:1/echo", {"v1": {}}, ssl=value)  # type: ignore[arg-type]


async def test_memory_connector_takes_ssl(client_ssl: ssl.SSLContext) -> None:
    server = neffos.Server({"v1": {"echo": lambda ns, m: m.body}}, ping_interval=None)
    async with (
        server,
        neffos.testing.dial_memory(server, {"v1": {}}, ssl=client_ssl) as client,
    ):
        ns = await client.connect("v1", timeout=WAIT)
        assert (await ns.ask("echo", "in memory", timeout=WAIT)).text == "in memory"


@pytest.mark.parametrize("client_transport", NETWORK_TRANSPORTS)
async def test_reconnect_uses_the_same_ssl_context(
    client_transport: str, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    """Without its context, a reconnection would not trust the certificate and
    would fail until it gives up."""
    rec = Recorder()
    back = Recorder()
    handler = {"v1": {
        ON_NAMESPACE_CONNECTED: lambda ns, m: rec.add(ns.conn.reconnect_tries),
        "echo": lambda ns, m: m.body,
    }}
    client_events = {"v1": {
        ON_NAMESPACE_DISCONNECT: lambda ns, m: back.add(("lost", m.is_forced)),
        ON_NAMESPACE_CONNECTED: lambda ns, m: back.add(("connected", ns.conn.was_reconnected)),
    }}
    async with (
        serving(client_transport, handler, server_ssl) as (server, listener),
        neffos.dial(
            listener.url, client_events, ssl=client_ssl, transport=client_transport,
            reconnect=FAST, timeout=WAIT, ping_interval=None,
        ) as client,
    ):
        ns = await client.connect("v1", timeout=WAIT)
        (first,) = server.get_connections()
        first.close()  # dropped by the server: the client reconnects over TLS
        await back.wait_len(3, WAIT)
        assert back.items == [("connected", False), ("lost", True), ("connected", True)]
        assert (await rec.wait_len(2, WAIT))[1] >= 1  # X-Websocket-Reconnect
        assert (await ns.ask("echo", "again", timeout=WAIT)).text == "again"
        assert client.is_connected


# -- neffos.js under Node --------------------------------------------------------------


@pytest.mark.node
async def test_neffos_js_over_wss(
    node: str,
    net_transport: str,
    ca: trustme.CA,
    server_ssl: ssl.SSLContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(ca_file))  # Node trusts our CA
    rec = Recorder()
    async with (
        serving(net_transport, echo_events(rec), server_ssl) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        assert listener.url.startswith("wss://")
        await js.call("dial", namespaces={"v1": ["noted"]})
        await js.call("connect", namespace="v1")
        reply = await js.call("ask", namespace="v1", event="echo", body="from node")
        assert reply["body"] == "from node"
        await js.call("emit", namespace="v1", event="note", body="hi")
        await js.wait_event("noted", namespace="v1", body="hi")
        assert rec.items == [("server", "hi")]
        assert server.get_total_connections() == 1
        js.assert_clean()


@pytest.mark.node
async def test_neffos_js_refuses_an_untrusted_certificate(
    node: str, server_ssl: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS", raising=False)
    async with (
        serving("picows", {"v1": {}}, server_ssl) as (server, listener),
        js_client(node, listener.url) as js,
    ):
        reply = await js.request("dial", namespaces={"v1": []})
        assert reply["ok"] is False, reply
        assert "certificate" in reply["error"], reply  # "unable to verify the first ..."
        assert server.get_total_connections() == 0
        js.assert_clean()
