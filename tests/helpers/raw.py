"""A raw WebSocket peer (picows, no neffos logic) for protocol-level tests."""

from __future__ import annotations

import asyncio
from typing import Any

import picows

from . import UNIT


class _Listener(picows.WSListener):  # type: ignore[misc]
    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if kind == picows.WSMsgType.TEXT:
            self.peer.frames.put_nowait(frame.get_payload_as_bytes().decode())
        elif kind == picows.WSMsgType.BINARY:
            self.peer.frames.put_nowait(frame.get_payload_as_bytes())
        elif kind == picows.WSMsgType.PING:
            self.peer.pings += 1
            if self.peer.answer_pings:
                transport.send_pong(frame.get_payload_as_bytes())
            self.peer.ping_queue.put_nowait(self.peer.pings)
        elif kind == picows.WSMsgType.CLOSE:
            self.peer.close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if not self.peer.closed.done():
            self.peer.closed.set_result(self.peer.close_code)


class RawPeer:
    """Send and receive raw frames; answer pings only when asked to."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.pings = 0
        self.answer_pings = True
        self.ping_queue: asyncio.Queue[int] = asyncio.Queue()
        self.transport: picows.WSTransport | None = None

    @classmethod
    async def connect(cls, url: str, *, auto_pong: bool = True, **kw: Any) -> RawPeer:
        peer = cls()
        peer.answer_pings = auto_pong
        transport, _ = await picows.ws_connect(
            lambda: _Listener(peer), url, enable_auto_pong=False, **kw
        )
        peer.transport = transport
        return peer

    def send(self, data: str | bytes) -> None:
        assert self.transport is not None
        kind = picows.WSMsgType.TEXT if isinstance(data, str) else picows.WSMsgType.BINARY
        self.transport.send(kind, data.encode() if isinstance(data, str) else data)

    async def recv(self, timeout: float = 5 * UNIT) -> Any:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def handshake(self) -> str:
        """Send "M" and return the connection ID from "A<id>"."""
        self.send("M")
        ack = await self.recv()
        assert isinstance(ack, str) and ack.startswith("A"), ack
        return ack[1:]

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.underlying_transport.pause_reading()

    async def wait_closed(self, timeout: float = 5 * UNIT) -> int | None:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.disconnect()
