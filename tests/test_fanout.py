"""Fan-out: a broadcast framed once, and one write per connection per loop turn.

The rules they must not change, on every transport: order per connection
(broadcasts and direct sends interleaved), exclusion, the send-buffer bound and
the slow-consumer close, and nothing half-written to a connection that closes
in the middle of a broadcast.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest
import trustme
from helpers import NETWORK_TRANSPORTS, UNIT, Env, environment
from helpers.raw import RawPeer
from websockets.frames import Frame, Opcode

import neffos
from neffos.protocol import parse
from neffos.transports import frames as frames_module
from neffos.transports.frames import (
    BURST_GAP,
    WRITE_AT,
    Outbox,
    Shared,
    batcher,
    data_frame,
    direct_fd,
    encode,
)

NS = "fan"


def numbers(frames: list[Any]) -> list[int]:
    """The bodies of the ``n`` events among raw neffos frames, as numbers."""
    out = []
    for frame in frames:
        msg = parse(frame if isinstance(frame, bytes) else frame.encode())
        if msg.event == "n":
            out.append(int(msg.body))
    return out


# -- the frame bytes -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_a_server_frame_is_the_rfc_frame(size: int, binary: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
    assert data_frame(payload, binary) == expected
    assert encode(opcode.value, payload) == expected
    shared = Shared(payload, binary)
    assert shared.frame == expected  # built once: the same bytes for all


def test_a_client_frame_is_masked_and_decodes() -> None:
    from websockets.streams import StreamReader

    payload = b"x" * 300
    reader = StreamReader()
    reader.feed_data(encode(0x1, payload, masked=True))
    parser = Frame.parse(reader.read_exact, mask=True, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover - the whole frame was fed
        raise AssertionError("the frame did not parse")
    assert frame.data == payload and frame.opcode is Opcode.TEXT


# -- the outbox, on a real TCP connection -------------------------------------------------


class Counting:
    """The transport of a real TCP connection, counting the writes made to it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.inner = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()


async def tcp_pair() -> tuple[asyncio.Transport, asyncio.StreamReader, Any]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        loop.create_future()
    )

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    reader, writer = await asyncio.wait_for(accepted, 5 * UNIT)
    return transport, reader, (server, writer)


async def close_pair(transport: asyncio.Transport, keep: Any) -> None:
    server, writer = keep
    transport.close()
    writer.close()
    server.close()
    await server.wait_closed()


async def test_frames_of_one_turn_leave_in_one_write() -> None:
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)  # no socket to write to directly: every write counted
    outbox = Outbox(counting)
    frames = [data_frame(f"message {i}".encode(), False) for i in range(10)]
    for frame in frames:
        assert outbox.queue(frame) == 0  # nothing is waiting in the transport
    assert counting.writes == 0  # not before the turn ends
    assert outbox.waiting() == sum(map(len, frames))
    await asyncio.sleep(0)  # the rest of the turn: the batcher runs
    assert counting.writes == 1
    assert outbox.waiting() == 0
    expected = b"".join(frames)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    await close_pair(transport, keep)


async def test_a_broadcasts_first_frame_of_a_turn_leaves_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every turn here follows the last at once, however slow the machine.
    monkeypatch.setattr(frames_module, "BURST_GAP", 3600.0)
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)
    outbox = Outbox(counting)
    frames = [data_frame(f"message {i}".encode(), False) for i in range(10)]
    for frame in frames[:5]:
        outbox.queue_shared(frame)
    assert counting.writes == 1  # the first, not held for the turn
    for frame in frames[5:]:  # direct sends after it: queued behind, in order
        outbox.queue(frame)
    assert outbox.waiting() == sum(map(len, frames[1:]))
    await asyncio.sleep(0)
    assert counting.writes == 2
    expected = b"".join(frames)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    # That turn was crowded (five broadcast frames for one socket): the loop is
    # behind, so in the next turn a broadcast queues too, one write per turn.
    outbox.queue_shared(frames[0])
    assert counting.writes == 2
    await asyncio.sleep(0)
    assert counting.writes == 3
    # One broadcast frame in that turn: the next one leaves at once again...
    outbox.queue_shared(frames[1])
    assert counting.writes == 4
    outbox.queue(frames[2])  # (a direct send after it does not crowd the turn)
    await asyncio.sleep(0)
    assert counting.writes == 5
    # ...but never past a direct send queued before it.
    outbox.queue(frames[3])
    outbox.queue_shared(frames[4])
    assert counting.writes == 5
    await asyncio.sleep(0)
    assert counting.writes == 6
    assert not batcher().burst  # one broadcast frame in that turn: not crowded
    expected = b"".join(frames[:5])
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    await close_pair(transport, keep)


async def test_after_a_pause_a_broadcast_leaves_at_once_again() -> None:
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)
    outbox = Outbox(counting)
    frames = [data_frame(f"message {i}".encode(), False) for i in range(4)]
    outbox.queue_shared(frames[0])
    outbox.queue_shared(frames[1])  # a crowded turn
    await asyncio.sleep(0)
    assert batcher().burst and counting.writes == 2
    await asyncio.sleep(10 * BURST_GAP)  # the loop was idle: it is not behind
    outbox.queue_shared(frames[2])
    assert counting.writes == 3  # at once
    assert not batcher().burst
    outbox.queue_shared(frames[3])  # behind it in the same turn, crowded again
    assert counting.writes == 3
    await asyncio.sleep(0)
    assert counting.writes == 4 and batcher().burst
    expected = b"".join(frames)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    await close_pair(transport, keep)


class Clock:
    """A stand-in for the ``time`` module in frames.py: a clock that moves only
    when told (here: by every write, as if each took ``per_write`` seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_the_gap_counts_from_the_end_of_a_long_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(frames_module, "time", clock)

    class Slow(Counting):
        def write(self, data: bytes) -> None:
            super().write(data)
            clock.now += 10 * BURST_GAP  # a write that takes long (a big room's flush)

    transport, reader, keep = await tcp_pair()
    outbox = Outbox(Slow(transport))
    frames = [data_frame(f"message {i}".encode(), False) for i in range(6)]
    for frame in frames[:3]:  # a crowded turn, written at the end in a long flush
        outbox.queue_shared(frame)
    await asyncio.sleep(0)
    assert batcher().burst
    outbox.queue_shared(frames[3])  # right after the flush: still behind, queued
    assert outbox.waiting() == len(frames[3])
    outbox.queue_shared(frames[4])  # crowded again
    await asyncio.sleep(0)
    assert batcher().burst
    clock.now += 2 * BURST_GAP  # then a pause
    outbox.queue_shared(frames[5])  # no longer behind: at once
    assert outbox.waiting() == 0 and not batcher().burst
    expected = b"".join(frames)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    await close_pair(transport, keep)


async def test_a_broadcast_queue_reaching_write_at_is_written_at_once() -> None:
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)
    outbox = Outbox(counting)
    frame = data_frame(b"y" * 1000, True)
    # the first is written at once; the queue behind it passes WRITE_AT with the last
    count = WRITE_AT // len(frame) + 2
    for _ in range(count - 1):
        outbox.queue_shared(frame)
    assert counting.writes == 1  # the first, at once; the rest queued
    outbox.queue_shared(frame)
    assert counting.writes == 2 and outbox.waiting() == 0  # written in the same turn
    await asyncio.sleep(0)
    assert counting.writes == 2  # nothing left for the end of the turn
    expected = frame * count
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5 * UNIT) == expected
    await close_pair(transport, keep)


async def socket_pair() -> tuple[asyncio.Transport, socket.socket]:
    """A real asyncio transport on one end of a socket pair, the other end plain."""
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        asyncio.Protocol, ours
    )
    return transport, theirs


async def test_writes_go_straight_to_the_socket_when_nothing_waits() -> None:
    transport, peer = await socket_pair()
    outbox = Outbox(transport)
    assert direct_fd(transport) >= 0
    first, *rest = [data_frame(f"message {i}".encode(), False) for i in range(5)]
    outbox.queue_shared(first)
    # in the kernel already: readable without letting the loop run
    assert peer.recv(4096, socket.MSG_DONTWAIT) == first
    for frame in rest:
        outbox.queue_shared(frame)
    with pytest.raises(BlockingIOError):  # held for the end of the turn
        peer.recv(4096, socket.MSG_DONTWAIT)
    await asyncio.sleep(0)
    assert peer.recv(4096, socket.MSG_DONTWAIT) == b"".join(rest)
    transport.close()
    peer.close()


async def test_a_full_socket_hands_the_rest_to_the_transport_in_order() -> None:
    transport, peer = await socket_pair()
    outbox = Outbox(transport)
    frame = data_frame(b"z" * 60_000, True)
    count = 0
    while outbox.waiting() == 0:  # until the kernel's buffer is full
        outbox.queue_shared(frame)
        count += 1
        await asyncio.sleep(0)
    assert transport.get_write_buffer_size() > 0  # the transport holds the rest
    outbox.queue(data_frame(b"end", True))
    await asyncio.sleep(0)
    expected = frame * count + data_frame(b"end", True)
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    received = bytearray()
    async with asyncio.timeout(5 * UNIT):
        while len(received) < len(expected):
            received += await loop.sock_recv(peer, 1 << 20)
    assert bytes(received) == expected
    transport.close()
    peer.close()


async def test_tls_and_unknown_transports_are_never_written_directly() -> None:
    assert direct_fd(object()) == -1
    transport, _reader, keep = await tcp_pair()
    assert direct_fd(transport) >= 0
    assert direct_fd(Counting(transport)) == -1  # says nothing of its socket
    await close_pair(transport, keep)
    # TLS: the socket carries records, not frames
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client, _ = await loop.create_connection(
        asyncio.Protocol, "127.0.0.1", port, ssl=client_context
    )
    writer = await asyncio.wait_for(accepted, 5 * UNIT)
    assert direct_fd(writer.transport) == -1
    assert direct_fd(client) == -1
    client.close()
    writer.close()
    server.close()
    await server.wait_closed()


async def test_a_big_turn_is_written_as_it_grows() -> None:
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)
    outbox = Outbox(counting)
    frame = data_frame(b"y" * 1000, True)
    count = 3 * WRITE_AT // len(frame)
    for _ in range(count):
        outbox.queue(frame)
    # written whenever the queue reached WRITE_AT, the rest at the end of the turn
    assert counting.writes == count * len(frame) // WRITE_AT
    await asyncio.sleep(0)
    assert outbox.waiting() == 0
    data = await asyncio.wait_for(reader.readexactly(count * len(frame)), 5 * UNIT)
    assert data == frame * count
    await close_pair(transport, keep)


async def test_an_aborted_outbox_writes_nothing_and_a_closed_one_takes_nothing() -> None:
    transport, reader, keep = await tcp_pair()
    counting = Counting(transport)
    outbox = Outbox(counting)
    first = data_frame(b"first", False)
    outbox.queue_shared(first)  # out at once
    outbox.queue(data_frame(b"never", False))  # queued for the end of the turn
    outbox.drop()
    await asyncio.sleep(0)
    assert counting.writes == 1
    transport.close()
    assert outbox.queue(data_frame(b"late", False)) == 0
    await asyncio.sleep(0)
    assert counting.writes == 1
    assert await asyncio.wait_for(reader.read(), 5 * UNIT) == first  # and nothing else
    await close_pair(transport, keep)


async def test_one_batcher_per_loop() -> None:
    assert batcher() is batcher()


# -- the rules, on every transport ---------------------------------------------------------


def mixed_sender(count: int) -> Any:
    """Handler of ``go``: ``count`` messages to the sender, alternately a direct
    emit and a broadcast to the whole namespace, all in one turn."""

    def go(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        for i in range(count):
            if i % 2:
                ns.emit("n", str(i).encode())
            else:
                server.broadcast(None, neffos.Message(NS, "n", body=str(i).encode()))

    return go


async def check_mixed_order(env: Env, server: neffos.Server, count: int) -> None:
    """Two clients, ``a`` and ``b``; ``a`` emits ``go`` to a handler that sends
    numbers 0..count-1, the odd ones to ``a`` alone and the even ones to all.
    Each client must get its numbers whole and in order."""
    got: dict[str, list[int]] = {"a": [], "b": []}
    done = {name: asyncio.get_running_loop().create_future() for name in got}

    def receiver(name: str, last: int) -> Any:
        def on_n(ns: neffos.NSConn, msg: neffos.Message) -> None:
            got[name].append(int(msg.body))
            if int(msg.body) == last and not done[name].done():
                done[name].set_result(None)

        return {NS: {"n": on_n}}

    a = await env.dial(server, receiver("a", count - 1))
    b = await env.dial(server, receiver("b", (count - 1) // 2 * 2))  # the broadcasts only
    ns_a = await a.connect(NS)
    await b.connect(NS)
    ns_a.emit("go")
    await asyncio.wait_for(asyncio.gather(*done.values()), 10 * UNIT)
    assert got["a"] == list(range(count))
    assert got["b"] == list(range(0, count, 2))


async def test_broadcasts_and_direct_sends_keep_their_order(transport: str) -> None:
    count = 400
    async with environment(transport) as env:
        server = await env.server({NS: {"go": mixed_sender(count)}})
        await check_mixed_order(env, server, count)


async def test_order_holds_while_the_loop_catches_up(transport: str) -> None:
    """Turns that give a connection several broadcast frames put the next turn
    in burst mode (broadcasts queue from the first frame); order holds through
    crowded, burst and quiet turns alike."""
    rounds = [40, 40, 1, 40, 2, 1, 40]  # messages per turn
    bursts: list[bool] = []

    async def go(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        n = 0
        for count in rounds:
            for _ in range(count):
                if n % 2:
                    ns.emit("n", str(n).encode())
                else:
                    server.broadcast(None, neffos.Message(NS, "n", body=str(n).encode()))
                n += 1
            await asyncio.sleep(0)  # the turn ends: its writes leave first
            bursts.append(batcher().burst)

    async with environment(transport) as env:
        server = await env.server({NS: {"go": go}})
        await check_mixed_order(env, server, sum(rounds))
        if transport in NETWORK_TRANSPORTS:  # server sockets with an outbox
            assert bursts == [True, True, False, True, False, False, True]


async def test_exclusion_holds(transport: str) -> None:
    count = 300

    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        for i in range(count):
            ns.conn.server.broadcast(
                ns.conn, neffos.Message(NS, "n", room="r", body=str(i).encode())
            )
        ns.emit("end")  # after the broadcasts: proves the sender got none of them

    async with environment(transport) as env:
        server = await env.server({NS: {"chat": chat}})
        got: dict[str, list[int]] = {"sender": [], "x": [], "y": []}
        ended = asyncio.get_running_loop().create_future()
        complete = {name: asyncio.get_running_loop().create_future() for name in ("x", "y")}

        def handler(name: str) -> Any:
            def on_n(ns: neffos.NSConn, msg: neffos.Message) -> None:
                got[name].append(int(msg.body))
                if len(got[name]) == count and name in complete:
                    complete[name].set_result(None)

            def on_end(ns: neffos.NSConn, msg: neffos.Message) -> None:
                ended.set_result(None)

            return {NS: {"n": on_n, "end": on_end}}

        conns = {name: await env.dial(server, handler(name)) for name in got}
        for conn in conns.values():
            ns = await conn.connect(NS)
            await ns.join_room("r")
        sender = conns["sender"].namespace(NS)
        assert sender is not None
        sender.emit("chat")
        await asyncio.wait_for(asyncio.gather(ended, *complete.values()), 10 * UNIT)
        assert got["sender"] == []
        assert got["x"] == got["y"] == list(range(count))


@pytest.mark.parametrize("size", [100, 20_000])
async def test_a_slow_reader_is_closed_and_the_others_get_everything(
    server_transport: str, size: int
) -> None:
    """A peer that stops reading is closed as a slow consumer (send_buffer) while
    two readers in the same room get every message, in order. The sender
    broadcasts about 64 KiB per loop turn until the slow peer is gone."""
    body = b"z" * size
    per_turn = max(1, 64 * 1024 // size)
    cap = 256 * 2**20 // size  # fails the test rather than run forever
    slow_id: list[str] = []

    async def burst(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        sent = 0
        while sent < cap and any(c.id == slow_id[0] for c in server.get_connections()):
            for _ in range(per_turn):
                server.broadcast(
                    ns.conn,
                    neffos.Message(NS, "n", room="r", body=str(sent).encode() + b":" + body),
                )
                sent += 1
            await asyncio.sleep(0)
        server.broadcast(ns.conn, neffos.Message(NS, "end", room="r", body=str(sent).encode()))

    async with environment(server_transport) as env:
        server = await env.server({NS: {"burst": burst}}, send_buffer=256 * 1024)
        slow = await RawPeer.connect(env.url(server))
        slow_id.append(await slow.handshake())
        slow.send(f"$1;{NS};;_OnNamespaceConnect;0;0;")
        assert (await slow.recv()).startswith("$1;")
        slow.send(f"$2;{NS};r;_OnRoomJoin;0;0;")
        assert (await slow.recv()).startswith("$2;")
        slow.pause_reading()

        got: dict[str, list[int]] = {"x": [], "y": []}
        ends = {name: asyncio.get_running_loop().create_future() for name in got}

        def handler(name: str) -> Any:
            def on_n(ns: neffos.NSConn, msg: neffos.Message) -> None:
                seq, _, rest = msg.body.partition(b":")
                assert rest == body
                got[name].append(int(seq))

            def on_end(ns: neffos.NSConn, msg: neffos.Message) -> None:
                ends[name].set_result(int(msg.body))

            return {NS: {"n": on_n, "end": on_end}}

        readers = [await env.dial(server, handler(name)) for name in got]
        for reader in readers:
            await (await reader.connect(NS)).join_room("r")
        sender = await env.dial(server, {NS: {}})
        sns = await sender.connect(NS)
        sns.emit("burst")
        totals = await asyncio.wait_for(asyncio.gather(*ends.values()), 60 * UNIT)
        assert totals[0] < cap, "the slow reader was never closed"
        assert got["x"] == got["y"] == list(range(totals[0]))
        assert server.get_total_connections() == 3  # the slow reader was dropped
        slow.transport.underlying_transport.resume_reading()  # type: ignore[union-attr]
        await slow.wait_closed(10 * UNIT)  # what it was sent, then the end


async def test_a_connection_closed_mid_broadcast_gets_only_whole_frames(
    server_transport: str,
) -> None:
    """A broadcast of 100 messages closes one receiver after the 50th: it gets
    whole frames 0-49 and then the close frame; the other receiver gets all 100."""
    victim_id: list[str] = []

    def go(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        for i in range(100):
            server.broadcast(ns.conn, neffos.Message(NS, "n", body=str(i).encode()))
            if i == 49:
                for conn in server.get_connections():
                    if conn.id == victim_id[0]:
                        conn.close()

    async with environment(server_transport) as env:
        server = await env.server({NS: {"go": go}})
        victim = await RawPeer.connect(env.url(server))
        victim_id.append(await victim.handshake())
        victim.send(f"$1;{NS};;_OnNamespaceConnect;0;0;")
        assert (await victim.recv()).startswith("$1;")
        other = await RawPeer.connect(env.url(server))
        await other.handshake()
        other.send(f"$1;{NS};;_OnNamespaceConnect;0;0;")
        assert (await other.recv()).startswith("$1;")
        sender = await env.dial(server, {NS: {}})
        (await sender.connect(NS)).emit("go")
        frames = [await other.recv() for _ in range(100)]
        assert numbers(frames) == list(range(100))
        code = await victim.wait_closed(10 * UNIT)
        assert code == 1000
        received = []
        while not victim.frames.empty():
            received.append(victim.frames.get_nowait())
        # the namespace disconnect the server sends on close comes after the data
        assert numbers(received) == list(range(50))


async def test_an_aborted_connection_mid_broadcast_gets_no_partial_frame(
    server_transport: str,
) -> None:
    """The server drops one receiver in the middle of a broadcast (as it drops a
    slow reader): the receiver sees a prefix of whole frames, then the end."""
    victim_id: list[str] = []

    def go(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server = ns.conn.server
        for i in range(100):
            server.broadcast(ns.conn, neffos.Message(NS, "n", body=str(i).encode() * 50))
            if i == 49:
                for conn in server.get_connections():
                    if conn.id == victim_id[0]:
                        conn.socket.abort()

    async with environment(server_transport) as env:
        server = await env.server({NS: {"go": go}})
        victim = await RawPeer.connect(env.url(server))
        victim_id.append(await victim.handshake())
        victim.send(f"$1;{NS};;_OnNamespaceConnect;0;0;")
        assert (await victim.recv()).startswith("$1;")
        sender = await env.dial(server, {NS: {}})
        (await sender.connect(NS)).emit("go")
        await victim.wait_closed(10 * UNIT)
        received = []
        while not victim.frames.empty():
            received.append(victim.frames.get_nowait())
        seqs = []
        for frame in received:  # every frame whole: it parses, its body is intact
            msg = parse(frame.encode())
            seq = msg.body[: len(msg.body) // 50]
            assert msg.body == seq * 50
            seqs.append(int(seq))
        assert seqs == list(range(len(seqs)))
        assert len(seqs) <= 50
