"""A WebSocket client made of raw bytes, for tests that break the rules on purpose.

It writes any HTTP request head and any frame (masked or not, RSV bits, any
opcode, any length), and reads what the server answers: an HTTP response, data
frames, and the code of its close frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import urllib.parse

from . import UNIT

__all__ = ["RawWebSocket", "http_response", "upgrade_request"]


def upgrade_request(
    path: str = "/echo",
    *,
    version: str = "HTTP/1.1",
    extra: list[str] | None = None,
    key: str | None = None,
    ws_version: str = "13",
) -> bytes:
    """A WebSocket opening handshake; ``extra`` header lines are appended as they are."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} {version}",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {ws_version}",
        *(extra or []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def http_response(
    reader: asyncio.StreamReader, timeout: float = 5 * UNIT
) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response head (and the body of a non-101 answer)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        body = b""
        if status != 101 and "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


class RawWebSocket:
    """One TCP connection speaking WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, request: bytes | None = None) -> tuple[RawWebSocket, int]:
        """Connect to ``ws://host:port/path`` and send ``request`` (default: a valid one).

        Returns the socket and the HTTP status of the answer.
        """
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        sock = cls(reader, writer)
        writer.write(request if request is not None else upgrade_request(parts.path or "/"))
        status, _, _ = await http_response(reader)
        return sock, status

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = True,
        key: bytes | None = None,
    ) -> None:
        """Write one frame. ``key``: the masking key (default random; a zero key
        leaves the payload as it is, which is quick for big frames)."""
        size = len(payload)
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        mask_bit = 0x80 if masked else 0
        if size < 126:
            header = struct.pack("!BB", first, mask_bit | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        if masked:
            key = key if key is not None else os.urandom(4)
            if key != b"\0\0\0\0":
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            header += key
        self.writer.write(header + payload)

    def send_text(self, data: bytes, **kw: bool) -> None:
        self.send_frame(0x1, data, **kw)  # type: ignore[arg-type]

    async def recv_frame(self, timeout: float = 5 * UNIT) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (-1, b"") at EOF."""
        async with asyncio.timeout(timeout):
            try:
                first, second = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(size)

    async def close_code(self, timeout: float = 5 * UNIT) -> int | None:
        """Read until the server's close frame; its code (``None``: EOF without one)."""
        while True:
            opcode, payload = await self.recv_frame(timeout)
            if opcode == -1:
                return None
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
