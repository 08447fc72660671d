"""WebSocket frames built by neffos, and server writes batched per loop turn.

Two things make fan-out cheap, and both live here:

* **A frame is built once.** A server's frames are not masked (RFC 6455 §5.1),
  so the bytes of one broadcast are the same for every receiver. A broadcast
  wraps its message in a :class:`Shared`, which builds the WebSocket frame
  once (``Shared.frame``); every receiving socket queues the very same
  ``bytes`` object.
* **At most two writes per connection per loop turn.** A server socket does
  not write each frame as it is sent: it queues it (:meth:`Outbox.queue`)
  and registers with its loop's :class:`Batcher`, which writes every queued
  frame of every socket in one write per socket, in a callback that runs
  before the loop next waits for I/O. A broadcast's delivery
  (:meth:`Outbox.queue_shared`) is the exception: the first one of a turn is
  written at once, so the first receivers of a big room do not wait for the
  whole room to be walked. Ten messages to one connection in one turn are one
  or two system calls instead of ten. A turn that gave some socket a second
  broadcast frame is *crowded*: if the next turn begins within
  :data:`BURST_GAP` of it (the loop is behind: more messages were waiting),
  it queues broadcasts from the first frame too (:attr:`Batcher.burst`), one
  write per connection per turn; after a pause, the first frames are written
  at once again. A write goes straight to the socket's file descriptor when
  the transport holds nothing (as picows does for its own frames), which
  skips the event loop's write buffering.

What a socket reports as waiting to be sent (the engine's ``send_buffer``
check) is what its transport held after its last write, as when every frame
was written at once; a queue that reaches :data:`WRITE_AT` bytes is written
at once, so a burst in one turn reaches the kernel's socket buffer as it did
before and the slow-consumer policy sees the same bytes (a healthy reader is
never taken for a slow one because of a big turn), and the queues add at most
``WRITE_AT`` bytes per connection to what ``send_buffer`` bounds.
Control frames (pings, pongs, close) are written after the queued frames
(:meth:`Outbox.write_out` first), so order on the wire is the order of
the sends. A socket that is aborted drops its queue: frames are queued whole
and written whole, so nothing half-built ever reaches a transport.

Client sockets mask every frame with a fresh key, so they cannot share frames;
they write through their library as before.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time
import weakref
from typing import Any

__all__ = [
    "BURST_GAP",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "WRITE_AT",
    "Batcher",
    "Outbox",
    "Shared",
    "batcher",
    "data_frame",
    "direct_fd",
    "encode",
]

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA

#: bytes a socket's queue may reach before it is written out in the same turn
WRITE_AT = 64 * 1024
#: seconds after a crowded turn within which the next turn is still in burst mode
BURST_GAP = 0.001

# The two header bytes of every final, unmasked frame shorter than 126 bytes.
_SHORT_TEXT = tuple(bytes((0x80 | OP_TEXT, size)) for size in range(126))
_SHORT_BINARY = tuple(bytes((0x80 | OP_BINARY, size)) for size in range(126))


def encode(opcode: int, payload: bytes, masked: bool = False) -> bytes:
    """One final WebSocket frame (RFC 6455 §5.2); clients mask theirs (§5.3)."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((0x80 | opcode, mask_bit | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, size)
    if not masked:
        return header + payload
    key = os.urandom(4)
    if not size:
        return header + key
    # XOR with the repeated key, done on two big integers (in C, not per byte).
    keys = (key * (size // 4 + 1))[:size]
    body = int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")
    return header + key + body.to_bytes(size, "big")


def data_frame(data: bytes, binary: bool) -> bytes:
    """The unmasked, final text or binary frame of a server carrying ``data``."""
    if len(data) < 126:
        return (_SHORT_BINARY if binary else _SHORT_TEXT)[len(data)] + data
    return encode(OP_BINARY if binary else OP_TEXT, data)


class Shared:
    """One data message sent to many connections (a broadcast).

    ``data`` and ``binary`` are what :meth:`Socket.send` would take; ``frame``
    is the server frame of the message, built once here (one copy of the
    message per broadcast) and handed as it is to every receiving socket.
    """

    __slots__ = ("binary", "data", "frame")

    def __init__(self, data: bytes, binary: bool) -> None:
        self.data = data
        self.binary = binary
        self.frame = data_frame(data, binary)


class Outbox:
    """The write side of one server socket: frames written at once or once per turn.

    ``transport`` is the asyncio transport of the connection (uvloop's are no
    ``asyncio.Transport`` subclasses, hence ``Any``).

    :meth:`queue` holds a frame until the loop's :class:`Batcher` runs at the
    end of the turn, and everything a connection queued in a turn leaves in one
    write: the right trade for replies and direct sends, which come from many
    connections' handlers in one turn (the loop reads more requests per wake-up
    and writes all answers in one pass). :meth:`queue_shared`, for a broadcast,
    writes the first frame of a turn at once instead: a broadcast walks all its
    receivers in one go, and holding every frame until the walk is over would
    make the first receivers wait for the last. Frames after the first in the
    same turn are queued behind it, so order holds either way. A turn that
    begins right after one in which some socket got a second broadcast frame
    (the loop is behind) queues its broadcasts from the first frame as well.

    A write goes straight to the socket (``os.write`` on its file descriptor)
    when the transport holds nothing, the way picows writes its own frames: one
    system call, no buffering in the event loop; the transport takes whatever
    the kernel did not (and every write of a TLS connection).
    """

    __slots__ = ("_backlog", "_batch", "_fd", "_out", "_queued", "_turn", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._batch = batcher()
        self._fd = direct_fd(transport)
        self._turn = -1  # the batcher's turn of the last broadcast frame
        self._out: list[bytes] | None = None
        self._queued = 0  # bytes in _out
        self._backlog = 0  # bytes the transport held after the last write

    def queue(self, frame: bytes) -> int:
        """Queue a whole frame for this turn's write; return the bytes waiting
        in the transport.

        A frame for a transport that is closing is dropped, as the libraries
        themselves do once a connection is going.
        """
        out = self._out
        if out is None:
            if self.transport.is_closing():
                return self._backlog
            self._out = [frame]
            self._batch.add(self)
        else:
            out.append(frame)
        queued = self._queued = self._queued + len(frame)
        if queued >= WRITE_AT:
            self.write_out()
        return self._backlog

    def queue_shared(self, frame: bytes) -> int:
        """As :meth:`queue`, for a broadcast's delivery: the first broadcast
        frame of the turn is written at once, unless the batcher is in burst
        mode; a second one marks the turn crowded."""
        batch = self._batch
        if self._turn == batch.turn:  # this turn's second broadcast frame here
            batch.crowded = True
            batch.schedule()  # (the turn ends even if this socket drops the frame)
        else:
            self._turn = batch.turn
            if (
                self._out is None
                and not (batch.burst and batch.behind())
                and not self.transport.is_closing()
            ):
                batch.schedule()
                self._write(frame)
                return self._backlog
        out = self._out
        if out is None:
            return self.queue(frame)
        out.append(frame)
        queued = self._queued = self._queued + len(frame)
        if queued >= WRITE_AT:
            self.write_out()
        return self._backlog

    def write_out(self) -> None:
        """Write what was queued now (before a control frame, or from the batcher)."""
        out = self._out
        if out is None:
            return
        self._out = None
        self._queued = 0
        if self.transport.is_closing():
            return
        self._write(out[0] if len(out) == 1 else b"".join(out))

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if self._fd >= 0 and not transport.get_write_buffer_size():
            try:
                sent = os.write(self._fd, data)
            except OSError:  # full (EAGAIN), or broken: the transport meets it
                sent = 0
            if sent == len(data):
                self._backlog = 0
                return
            data = data[sent:]
        transport.write(data)
        self._backlog = transport.get_write_buffer_size()

    def drop(self) -> None:
        """Forget what was queued (the connection is being dropped)."""
        self._out = None
        self._queued = 0

    def waiting(self) -> int:
        """Bytes queued or held by the transport, not yet written out."""
        return self._queued + int(self.transport.get_write_buffer_size())


def direct_fd(transport: Any) -> int:
    """The file descriptor an :class:`Outbox` may write to directly, or -1.

    Only a plain TCP (or Unix) stream socket qualifies: never a TLS
    connection, whose transport encrypts what it is given, nor a transport
    that does not say which socket it has, nor Windows (``os.write`` does not
    take sockets there).
    """
    get = getattr(transport, "get_extra_info", None)
    if get is None or sys.platform == "win32":
        return -1
    if get("ssl_object") is not None or get("sslcontext") is not None:
        return -1
    sock = get("socket")
    if sock is None or getattr(sock, "type", None) != socket.SOCK_STREAM:
        return -1
    try:
        return int(sock.fileno())
    except (OSError, ValueError):
        return -1


class Batcher:
    """The turns of one event loop, and the sockets that queued frames in this one.

    A turn ends when :meth:`run` runs: the first socket to write or queue in a
    turn schedules it with ``call_soon``, so it runs after the callbacks
    already scheduled and before the loop waits for I/O again; a queued frame
    is never held longer than the rest of the current turn.
    """

    __slots__ = (
        "_asked", "_ended", "_loop", "_scheduled", "_sockets", "burst", "crowded", "turn"
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sockets: list[Outbox] = []
        self._scheduled = False
        #: the number of turns ended so far (an outbox compares it with its own)
        self.turn = 0
        #: a socket got a second broadcast frame in this turn
        self.crowded = False
        #: the last turn was crowded: broadcasts queue in this one too, if it
        #: began right after it (:meth:`behind`)
        self.burst = False
        self._ended = 0.0  # time.monotonic() when the last crowded turn ended
        self._asked = -1  # the turn whose burst :meth:`behind` settled

    def schedule(self) -> None:
        """End this turn with a :meth:`run` (once per turn)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def behind(self) -> bool:
        """Whether this turn is still in burst mode: the last turn was crowded
        and this one began within :data:`BURST_GAP` of its end (a loop that
        is behind reads the next messages at once; after a pause, the next
        broadcast's first frames are written at once again). Settled once per
        turn."""
        if self._asked != self.turn:
            self._asked = self.turn
            if self.burst and time.monotonic() - self._ended > BURST_GAP:
                self.burst = False
        return self.burst

    def add(self, sock: Outbox) -> None:
        """``sock`` queued its first frame of the turn."""
        self._sockets.append(sock)
        self.schedule()

    def run(self) -> None:
        """End the turn: write out every socket's queue (one write each)."""
        self._scheduled = False
        self.turn += 1
        self.burst, self.crowded = self.crowded, False
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.write_out()
            except Exception:  # one broken transport must not stop the rest
                sock.drop()
        if self.burst:  # (not loop.time(): uvloop's is the time the iteration began)
            self._ended = time.monotonic()


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = (
    weakref.WeakKeyDictionary()
)


def batcher() -> Batcher:
    """The :class:`Batcher` of the running loop (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _batchers.get(loop)
    if found is None:
        found = _batchers[loop] = Batcher(loop)
    return found
