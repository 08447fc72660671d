"""Strict WebSocket (RFC 6455) on every server transport, the same way.

A native echo server (plain WebSocket, no neffos protocol) gets frames that
break one rule each from a client made of raw bytes; the server must close
with the right code: 1007 for invalid UTF-8 in text, 1002 for protocol errors,
1009 for a message past ``max_message_size``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from helpers import environment
from helpers.wire import RawWebSocket

import neffos

TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9
MAX_SIZE = 4096


def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
    return msg.body


def close_frame(code: int, reason: bytes = b"") -> Callable[[RawWebSocket], None]:
    return lambda ws: ws.send_frame(CLOSE, struct.pack("!H", code) + reason)


def fragments(*frames: tuple[int, bytes, bool]) -> Callable[[RawWebSocket], None]:
    def send(ws: RawWebSocket) -> None:
        for opcode, payload, fin in frames:
            ws.send_frame(opcode, payload, fin=fin)

    return send


VIOLATIONS: dict[str, tuple[Callable[[RawWebSocket], None], int]] = {
    "invalid UTF-8 in a text frame": (lambda ws: ws.send_frame(TEXT, b"ok \xff\xfe"), 1007),
    "invalid UTF-8 across fragments": (
        fragments((TEXT, b"ok \xc3", False), (CONT, b"(", True)), 1007
    ),
    "RSV1 without an extension": (lambda ws: ws.send_frame(TEXT, b"x", rsv=4), 1002),
    "RSV3 on a continuation": (
        lambda ws: (ws.send_frame(TEXT, b"a", fin=False), ws.send_frame(CONT, b"b", rsv=1)),
        1002,
    ),
    "a new message inside a fragmented one": (
        fragments((TEXT, b"a", False), (BINARY, b"b", True)), 1002
    ),
    "a continuation without a message": (lambda ws: ws.send_frame(CONT, b"x"), 1002),
    "close code 999": (close_frame(999), 1002),
    "close code 1005": (close_frame(1005), 1002),
    "close code 1006": (close_frame(1006), 1002),
    "close code 5000": (close_frame(5000), 1002),
    "close reason not UTF-8": (close_frame(1000, b"\xff"), 1007),
    "an unmasked client frame": (lambda ws: ws.send_frame(TEXT, b"x", masked=False), 1002),
    "a 126-byte ping": (lambda ws: ws.send_frame(PING, b"x" * 126), 1002),
    "a fragmented ping": (lambda ws: ws.send_frame(PING, b"x", fin=False), 1002),
    "opcode 3": (lambda ws: ws.send_frame(0x3, b"x"), 1002),
    "a message past max_message_size in fragments": (
        fragments((BINARY, b"x" * 3000, False), (CONT, b"x" * 3000, True)), 1009
    ),
    # each fragment counts as 64 bytes at least: MAX_SIZE // 64 = 64 fragments
    "a message in too many tiny fragments": (
        fragments((BINARY, b"x", False), *[(CONT, b"", False)] * 100), 1009
    ),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_a_broken_rule_closes_with_its_code(net_transport: str, violation: str) -> None:
    send, code = VIOLATIONS[violation]
    async with environment(net_transport) as env:
        server = await env.server(
            {"": {neffos.ON_NATIVE_MESSAGE: echo}}, max_message_size=MAX_SIZE
        )
        ws, status = await RawWebSocket.open(env.url(server))
        try:
            assert status == 101
            ws.send_frame(TEXT, "héllo".encode())  # the connection works first
            assert await ws.recv_frame() == (TEXT, "héllo".encode())
            send(ws)
            assert await ws.close_code() == code
        finally:
            await ws.aclose()


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
async def test_a_valid_close_is_answered(net_transport: str, code: int) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"": {neffos.ON_NATIVE_MESSAGE: echo}})
        ws, _ = await RawWebSocket.open(env.url(server))
        try:
            close_frame(code, "bye 👋".encode())(ws)
            assert await ws.close_code() not in (1002, 1007, None)
        finally:
            await ws.aclose()


async def test_fragments_and_pings_are_handled(net_transport: str) -> None:
    async with environment(net_transport) as env:
        server = await env.server({"": {neffos.ON_NATIVE_MESSAGE: echo}})
        ws, _ = await RawWebSocket.open(env.url(server))
        try:
            await _fragments_and_pings(ws)
        finally:
            await ws.aclose()


async def _fragments_and_pings(ws: RawWebSocket) -> None:
    # a multi-byte character split across fragments, a ping between them
    fragments((TEXT, b"h\xc3", False))(ws)
    ws.send_frame(PING, b"are you there")
    fragments((CONT, b"\xa9", False), (CONT, b"llo", True))(ws)
    assert await ws.recv_frame() == (0xA, b"are you there")
    assert await ws.recv_frame() == (TEXT, "héllo".encode())
    ws.send_frame(BINARY, b"\xff\x00")  # any bytes in a binary frame
    assert await ws.recv_frame() == (BINARY, b"\xff\x00")
