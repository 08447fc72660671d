"""Clients that lie: malformed handshakes, slowloris, injected headers, floods.

Every transport answers the same way, before any WebSocket library sees the
request: a 4xx for a malformed handshake (never a silent close, never a 101),
408 at the handshake deadline, and no log line at ERROR for a client's mistake.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse

import pytest
from helpers import UNIT, Recorder, environment
from helpers.wire import RawWebSocket, http_response, upgrade_request

import neffos

WAIT = 5 * UNIT

MALFORMED: dict[str, tuple[bytes, int]] = {
    "HTTP/1.0": (upgrade_request(version="HTTP/1.0"), 400),
    "WebSocket version 8": (upgrade_request(ws_version="8"), 426),
    "two keys": (upgrade_request(extra=["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]), 400),
    "a key that is not 16 bytes": (upgrade_request(key="c2hvcnQ="), 400),
    "no key": (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        400,
    ),
    "a body": (upgrade_request(extra=["Content-Length: 5"]) + b"hello", 400),
    "a chunked body": (upgrade_request(extra=["Transfer-Encoding: chunked"]), 400),
    "no Upgrade header": (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "a NUL in a header": (upgrade_request(extra=["X-Name: a\x00b"]), 400),
    "a malformed request line": (b"GET /echo\r\nHost: x\r\n\r\n", 400),
    "a header line without a colon": (upgrade_request(extra=["nonsense"]), 400),
    "an injected URL header": (
        upgrade_request("/echo?X-Websocket-Header-X-Username=eve%0d%0aforged%3a%20line"), 400,
    ),
    "a URL header with ';'": (upgrade_request("/echo?X-Websocket-Header-X-Id=a%3Bb"), 400),
    "a URL header with ESC": (upgrade_request("/echo?X-Websocket-Header-X-Id=a%1Bb"), 400),
    "a header name with a space": (upgrade_request(extra=["X Name: a"]), 400),
    "a header name with '@'": (upgrade_request(extra=["X@Name: a"]), 400),
    "a lone LF in a value": (upgrade_request(extra=["X-Name: a\nb"]), 400),
    "a lone CR in a value": (upgrade_request(extra=["X-Name: a\rb"]), 400),
    "two Host headers": (upgrade_request(extra=["Host: other"]), 400),
    "no Host header": (
        b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        400,
    ),
    "a control character in the target": (upgrade_request("/echo?a=\x01"), 400),
    "a 9 KB header line": (upgrade_request(extra=["X-Big: " + "b" * 9000]), 431),
    "a 20 KB head in one write": (
        upgrade_request(extra=[f"X-{i}: " + "b" * 1000 for i in range(20)]), 431,
    ),
}


class Errors(logging.Handler):
    """Collects every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors() -> object:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    assert [r.getMessage() for r in handler.records] == []


async def send_raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        return await http_response(reader, WAIT)
    finally:
        writer.close()


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_handshake_gets_a_4xx(
    net_transport: str, case: str, errors: Errors
) -> None:
    request, status = MALFORMED[case]
    accepted = Recorder()
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, on_connect=accepted.add)
        got, headers, body = await send_raw(env.url(server), request)
        assert got == status, body
        if status == 426:
            assert headers["sec-websocket-version"] == "13"
        assert server.get_total_connections() == 0 and accepted.items == []


async def test_slowloris_connections_do_not_keep_others_out(net_transport: str) -> None:
    """Hundreds of half-sent request heads: a real client still gets in at once, and
    every one of them is answered 408 and closed at the handshake deadline."""
    deadline = 1 * UNIT
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, handshake_timeout=deadline)
        parts = urllib.parse.urlsplit(env.url(server))
        slow = []
        for _ in range(300):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")  # no end
            slow.append((reader, writer))
        started = asyncio.get_running_loop().time()
        client = await env.dial(server, {"v1": {}}, timeout=deadline)
        await client.connect("v1", timeout=deadline)
        assert asyncio.get_running_loop().time() - started < deadline
        try:
            for reader, _ in slow:
                status, _, _ = await http_response(reader, deadline + WAIT)
                assert status == 408
                assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed
        finally:
            for _, writer in slow:
                writer.close()


async def test_no_handshake_after_the_upgrade_is_closed_at_the_deadline(
    net_transport: str,
) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, handshake_timeout=0.5 * UNIT)
        ws, status = await RawWebSocket.open(env.url(server))  # never sends M
        try:
            assert status == 101
            assert await ws.close_code(WAIT) == 1008
        finally:
            await ws.aclose()


async def test_an_id_with_a_line_break_is_refused_and_quoted_in_the_log(
    net_transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}}, id_generator=lambda request: "eve\nforged line")
        with pytest.raises(neffos.DialError):
            await env.dial(server, {"v1": {}})
    lines = [r.getMessage() for r in caplog.records if "id_generator" in r.getMessage()]
    assert lines == ["refusing a connection: id_generator returned 'eve\\nforged line'"]
    assert all("\n" not in r.getMessage() for r in caplog.records)


async def test_protocol_errors_are_not_logged_as_errors(net_transport: str, errors: Errors) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"": {neffos.ON_NATIVE_MESSAGE: lambda ns, m: m.body}})
        for frame in (b"\x81\x02ab", b"\xc1\x80abcd", b"\x89\xfe\x00\x7e" + b"m" * 4 + b"x" * 126):
            ws, _ = await RawWebSocket.open(env.url(server))
            try:
                ws.writer.write(frame)  # unmasked, RSV1, a 126-byte ping
                assert await ws.close_code() == 1002
            finally:
                await ws.aclose()


async def test_connection_churn_logs_nothing_at_info(
    net_transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections that come and go — closed, aborted, refused — leave no log line at
    INFO or above: a soak must not fill the logs."""
    caplog.set_level(logging.DEBUG)
    async with environment(net_transport) as env:
        server = await env.server(
            {"v1": {}},
            on_connect=lambda conn: ValueError("go away") if conn.id.startswith("x") else None,
            id_generator=lambda request: request.headers.get("X-Id") or "anon",
        )
        for i in range(20):
            client = await env.dial(server, {"v1": {}}, headers={"X-Id": f"c{i}"})
            await client.connect("v1")
            await client.aclose()
            with pytest.raises(neffos.HandshakeRefused):
                await env.dial(server, {"v1": {}}, headers={"X-Id": f"x{i}"})
            ws, _ = await RawWebSocket.open(env.url(server))
            ws.writer.transport.abort()  # a peer that vanishes
    loud = [(r.name, r.levelname, r.getMessage()) for r in caplog.records
            if r.levelno >= logging.INFO]
    assert loud == []


async def test_firefox_connection_header_is_accepted(net_transport: str) -> None:
    """Firefox sends ``Connection: keep-alive, Upgrade``: every transport upgrades it."""
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        request = upgrade_request(extra=["User-Agent: Firefox"]).replace(
            b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"
        )
        ws, status = await RawWebSocket.open(env.url(server), request)
        try:
            assert status == 101
            ws.send_frame(0x1, b"M")
            opcode, payload = await ws.recv_frame()
            assert opcode == 0x1 and payload.startswith(b"A")
        finally:
            await ws.aclose()


async def test_a_hello_sent_with_the_request_head_is_answered(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"v1": {}})
        parts = urllib.parse.urlsplit(env.url(server))
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        ws = RawWebSocket(reader, writer)
        try:
            request = upgrade_request()
            ws.writer.write(request)
            ws.send_frame(0x1, b"M")  # in the same write as the head
            status, _, _ = await http_response(reader)
            assert status == 101
            opcode, payload = await ws.recv_frame()
            assert opcode == 0x1 and payload.startswith(b"A")
        finally:
            await ws.aclose()
