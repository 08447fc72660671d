"""Load generator for the benchmark suite (run as its own process by bench/run.py).

Built on picows callbacks (no task per connection) and writes frames directly, so
it stays far from being the bottleneck. It speaks three protocols:

* ``neffos``   - the neffos wire protocol (handshake ``M``/``A``, namespace connect,
  room join, asks with ``$`` tokens);
* ``raw``      - the same neffos frames, but no handshake: for the ceiling servers
  that only echo / loop-send bytes;
* ``socketio`` - Engine.IO v4 + Socket.IO v5 over WebSocket (events with acks).

Scenarios: ``echo`` (C clients doing sequential asks), ``broadcast`` (R receivers
in a room, one sender emitting K messages) and ``idle`` (N connections held open).
Results are printed as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import picows
from picows import WSListener, WSMsgType, WSTransport

NS = "bench"
ROOM = "room1"


def _now() -> float:
    return time.perf_counter()


# -- protocol adapters -----------------------------------------------------------


class Proto:
    """Frames and parsing of one protocol."""

    name = "neffos"

    def hello(self) -> list[bytes]:
        return [b"M"]

    def is_hello_answer(self, data: bytes) -> bool:
        return data[:1] == b"A"

    def connect(self) -> bytes:
        return f"$c;{NS};;_OnNamespaceConnect;0;0;".encode()

    def join(self) -> bytes:
        return f"$j;{NS};{ROOM};_OnRoomJoin;0;0;".encode()

    def ask(self, n: int, body: bytes) -> bytes:
        return f"${n};{NS};;echo;0;0;".encode() + body

    def chat(self, seq: int) -> bytes:
        return f";{NS};{ROOM};chat;0;0;{seq}:{time.perf_counter_ns()}".encode()

    def chat_seq(self, data: bytes) -> tuple[int, int] | None:
        parts = data.split(b";", 6)
        if len(parts) == 7 and parts[3] == b"chat":
            seq, _, sent = parts[6].partition(b":")
            return int(seq), int(sent)
        return None

    def is_reply(self, data: bytes) -> bool:
        return data[:1] == b"$"

    def control(self, data: bytes) -> bytes | None:
        return None


class RawProto(Proto):
    name = "raw"

    def hello(self) -> list[bytes]:
        return []

    def connect(self) -> bytes:
        return b"join"

    def join(self) -> bytes:
        return b""


class SocketIOProto(Proto):
    name = "socketio"

    def hello(self) -> list[bytes]:
        return [b"40"]

    def is_hello_answer(self, data: bytes) -> bool:
        return data[:2] == b"40"

    def connect(self) -> bytes:
        return b""

    def join(self) -> bytes:
        return b'42["join","' + ROOM.encode() + b'"]'

    def ask(self, n: int, body: bytes) -> bytes:
        return b"42" + str(n).encode() + b'["echo","' + body + b'"]'

    def chat(self, seq: int) -> bytes:
        return f'42["chat","{seq}:{time.perf_counter_ns()}"]'.encode()

    def chat_seq(self, data: bytes) -> tuple[int, int] | None:
        if data.startswith(b'42["chat","'):
            seq, _, sent = data[11:-2].partition(b":")
            return int(seq), int(sent)
        return None

    def is_reply(self, data: bytes) -> bool:
        return data[:2] == b"43"

    def control(self, data: bytes) -> bytes | None:
        if data == b"2":  # Engine.IO ping -> pong
            return b"3"
        return None


PROTOCOLS = {"neffos": Proto, "raw": RawProto, "socketio": SocketIOProto}


def _url(base: str, proto: Proto) -> str:
    if proto.name == "socketio":
        return base.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
    return base


# -- one client ---------------------------------------------------------------------


class Client(WSListener):  # type: ignore[misc]
    """A connection driven entirely by frame callbacks."""

    def __init__(self, proto: Proto, gen: Any) -> None:
        self.proto = proto
        self.gen = gen
        self.t: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.state = "hello"
        self.pending_setup: list[bytes] = []
        # echo
        self.n = 0
        self.sent_at = 0.0
        # broadcast
        self.last_seq = -1
        self.received = 0
        self.reordered = 0
        self.sampled = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.t = transport
        setup = [f for f in (self.proto.connect(), self.proto.join()) if f]
        self.pending_setup = setup
        hello = self.proto.hello()
        if self.proto.name == "socketio":
            return  # wait for the Engine.IO open packet "0{...}" first
        if hello:
            for frame in hello:
                self.send(frame)
        else:
            self._next_setup()

    def send(self, data: bytes) -> None:
        assert self.t is not None
        self.t.send(WSMsgType.TEXT, data)

    def _next_setup(self) -> None:
        if self.pending_setup:
            frame = self.pending_setup.pop(0)
            self.send(frame)
            if self.proto.name == "raw":
                self._next_setup()  # the raw servers answer nothing
            return
        self.state = "ready"
        if not self.ready.done():
            self.ready.set_result(None)

    def on_ws_frame(self, transport: WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        data = frame.get_payload_as_bytes()
        answer = self.proto.control(data)
        if answer is not None:
            self.send(answer)
            return
        if self.state == "ready":
            self.gen.on_frame(self, data)
            return
        if self.state == "hello":
            if self.proto.name == "socketio" and data[:1] == b"0":
                for f in self.proto.hello():
                    self.send(f)
                return
            if self.proto.is_hello_answer(data):
                self.state = "setup"
                self._next_setup()
            return
        # setup: every setup request gets one answer (neffos empty reply, or a
        # socket.io event/ack); anything else is ignored.
        if self.proto.name == "socketio" and not data.startswith(b'42["joined"'):
            return
        self._next_setup()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("disconnected during setup"))
        self.gen.on_disconnect(self)


class CountingClient(Client):
    """A receiver of a big room that is not sampled: once ready, it only counts
    the data frames it gets (no payload copy, no parsing), so that 10,000 of
    them cost the generator as little as possible per delivery."""

    def on_ws_frame(self, transport: WSTransport, frame: picows.WSFrame) -> None:
        if self.state != "ready":
            super().on_ws_frame(transport, frame)
        elif frame.msg_type is WSMsgType.TEXT or frame.msg_type is WSMsgType.BINARY:
            self.gen.count()


async def open_clients(url: str, proto: Proto, gen: Any, n: int, concurrency: int,
                       make: Callable[[int], type[Client]] = lambda i: Client) -> list[Client]:
    """``n`` clients; ``make(i)`` picks the class of the ``i``-th."""
    clients: list[Client] = []
    sem = asyncio.Semaphore(concurrency)
    made = iter(range(n))

    async def one() -> None:
        async with sem:
            client = make(next(made))(proto, gen)
            await picows.ws_connect(lambda: client, url, read_buffer_init_size=1024,
                                    websocket_handshake_timeout=30)
            await asyncio.wait_for(client.ready, 30)
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(n)))
    return clients


# -- scenarios ------------------------------------------------------------------------


class Echo:
    def __init__(self, body: bytes, deadline_holder: list[float]) -> None:
        self.body = body
        self.latencies: list[float] = []
        self.count = 0
        self.running = False
        self.deadline_holder = deadline_holder
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.active = 0
        self.disconnects = 0

    def start(self, client: Client) -> None:
        self.active += 1
        self._ask(client)

    def _ask(self, client: Client) -> None:
        client.n += 1
        client.sent_at = _now()
        client.send(client.proto.ask(client.n, self.body))

    def on_frame(self, client: Client, data: bytes) -> None:
        if not client.proto.is_reply(data):
            return
        now = _now()
        if self.running:
            self.latencies.append(now - client.sent_at)
            self.count += 1
        if now < self.deadline_holder[0]:
            self._ask(client)
        else:
            self.active -= 1
            if self.active == 0 and not self.done.done():
                self.done.set_result(None)

    def on_disconnect(self, client: Client) -> None:
        self.disconnects += 1


class Broadcast:
    def __init__(self, expected: int, probe: bool = False) -> None:
        self.probe = probe
        self.expected = expected
        self.received = 0
        self.first_sent = 0.0
        self.last_received = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.disconnects = 0
        self.latencies: list[int] = []

    def on_frame(self, client: Client, data: bytes) -> None:
        parsed = client.proto.chat_seq(data)
        if parsed is None:
            return
        seq, sent = parsed
        if seq < 0 and not self.probe:
            return  # a late probe of the cross-node warm-up
        self.latencies.append(time.perf_counter_ns() - sent)
        if seq <= client.last_seq:
            client.reordered += 1
        client.last_seq = max(client.last_seq, seq)
        client.received += 1
        self.received += 1
        if self.received >= self.expected:
            self.last_received = _now()
            if not self.done.done():
                self.done.set_result(None)

    def on_disconnect(self, client: Client) -> None:
        self.disconnects += 1


class Receive:
    """Receivers of a big room: every delivery is counted; the latency and order
    of every ``sample``-th client are measured (parsing every frame of 10,000
    clients would make the generator the bottleneck)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.last_ns = 0
        self.disconnects = 0
        #: latency histogram: 0.1 ms buckets (sparse)
        self.histogram: dict[int, int] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def count(self) -> None:
        """A delivery (to any receiver)."""
        self.received += 1
        if self.received >= self.expected and not self.done.done():
            self.last_ns = time.perf_counter_ns()
            self.done.set_result(None)

    def on_frame(self, client: Client, data: bytes) -> None:
        """A delivery to a sampled receiver: counted, and its latency and order noted."""
        self.count()
        parsed = client.proto.chat_seq(data)
        if parsed is None:
            return
        seq, sent = parsed
        bucket = (time.perf_counter_ns() - sent) // 100_000
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1
        if seq <= client.last_seq:
            client.reordered += 1
        client.last_seq = max(client.last_seq, seq)

    def on_disconnect(self, client: Client) -> None:
        self.disconnects += 1


class Idle:
    disconnects = 0

    def on_frame(self, client: Client, data: bytes) -> None:
        pass

    def on_disconnect(self, client: Client) -> None:
        self.disconnects += 1


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[k]


async def run_echo(args: argparse.Namespace, proto: Proto) -> dict[str, Any]:
    deadline = [float("inf")]
    gen = Echo(b"x" * args.size, deadline)
    clients = await open_clients(_url(args.url, proto), proto, gen, args.clients, 50)
    # warm-up, then measure
    deadline[0] = _now() + args.warmup + args.duration
    for c in clients:
        gen.start(c)
    await asyncio.sleep(args.warmup)
    gen.running = True
    started, cpu = _now(), time.process_time()
    await asyncio.sleep(args.duration)
    gen.running = False
    elapsed = _now() - started
    cpu = time.process_time() - cpu
    await asyncio.wait_for(gen.done, 30)
    lat = sorted(gen.latencies)
    for c in clients:
        c.t.disconnect()  # type: ignore[union-attr]
    return {
        "scenario": "echo",
        "clients": args.clients,
        "size": args.size,
        "round_trips": gen.count,
        "seconds": elapsed,
        "rps": gen.count / elapsed,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "errors": gen.disconnects,
        "loadgen_cpu": cpu / elapsed,  # the generator's share of one core while measuring
    }


async def run_broadcast(args: argparse.Namespace, proto: Proto) -> dict[str, Any]:
    expected = args.receivers * args.messages
    gen = Broadcast(expected)
    url = _url(args.url, proto)
    receivers = await open_clients(url, proto, gen, args.receivers, 50)
    sender_url = _url(args.sender_url, proto) if args.sender_url else url
    (sender,) = await open_clients(sender_url, proto, Idle(), 1, 1)
    if args.sender_url or args.probe:
        # Across nodes (or workers), subscriptions travel through the broker: probe
        # until the receivers' nodes deliver, so the measurement starts on a ready path.
        probe = Broadcast(args.receivers, probe=True)
        clients_gen = [c.gen for c in receivers]
        for c in receivers:
            c.gen = probe
        async with asyncio.timeout(30):
            while not probe.done.done():
                sender.send(proto.chat(-1))
                await asyncio.wait([probe.done], timeout=0.2)
        for c, g in zip(receivers, clients_gen, strict=True):
            c.gen = g
            c.last_seq = -1
            c.reordered = 0
    gen.first_sent = _now()
    cpu = time.process_time()
    for seq in range(args.messages):
        sender.send(proto.chat(seq))
        if seq % args.batch == args.batch - 1:
            if args.rate:
                await asyncio.sleep(args.batch / args.rate)
            else:
                await asyncio.sleep(0)  # let the sender's socket drain
    try:
        await asyncio.wait_for(gen.done, args.timeout)
        timed_out = False
    except TimeoutError:
        timed_out = True
        gen.last_received = _now()
    elapsed = gen.last_received - gen.first_sent
    cpu = time.process_time() - cpu
    lost = expected - gen.received
    reordered = sum(c.reordered for c in receivers)
    for c in [*receivers, sender]:
        c.t.disconnect()  # type: ignore[union-attr]
    lat = sorted(gen.latencies)
    return {
        "scenario": "broadcast",
        "p50_ms": percentile(lat, 50) / 1e6,
        "p99_ms": percentile(lat, 99) / 1e6,
        "receivers": args.receivers,
        "messages": args.messages,
        "deliveries": gen.received,
        "seconds": elapsed,
        "deliveries_per_s": gen.received / elapsed if elapsed > 0 else 0.0,
        "lost": lost,
        "reordered": reordered,
        "timed_out": timed_out,
        "errors": gen.disconnects,
        "loadgen_cpu": cpu / elapsed if elapsed > 0 else 0.0,
    }


async def run_idle(args: argparse.Namespace, proto: Proto) -> dict[str, Any]:
    gen = Idle()
    started = _now()
    clients = await open_clients(_url(args.url, proto), proto, gen, args.conns, args.concurrency)
    elapsed = _now() - started
    print(json.dumps({"ready": True, "conns": len(clients), "seconds": elapsed}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in clients:
        c.t.disconnect()  # type: ignore[union-attr]
    return {
        "scenario": "idle",
        "conns": len(clients),
        "seconds": elapsed,
        "connects_per_s": len(clients) / elapsed,
        "errors": gen.disconnects,
    }


def stdin_line() -> asyncio.Future[None]:
    """Done when a line (or the end) comes on stdin: read by a daemon thread, which,
    unlike the loop's executor, does not keep the process from exiting once the
    result is printed."""
    loop = asyncio.get_running_loop()
    told: asyncio.Future[None] = loop.create_future()

    def read() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(lambda: told.done() or told.set_result(None))

    threading.Thread(target=read, daemon=True).start()
    return told


async def run_receive(args: argparse.Namespace, proto: Proto) -> dict[str, Any]:
    """Big room, one process of receivers: join, say ready, count until told to stop."""
    gen = Receive(args.receivers * args.messages)
    clients = await open_clients(
        _url(args.url, proto), proto, gen, args.receivers, 100,
        lambda i: Client if i % args.sample == 0 else CountingClient,
    )
    for client in clients:
        client.sampled = not isinstance(client, CountingClient)
    print(json.dumps({"ready": True, "receivers": len(clients)}), flush=True)
    cpu = time.process_time()
    # Done when every message reached every client here, or when told to stop.
    told = stdin_line()
    await asyncio.wait([gen.done, told], return_when=asyncio.FIRST_COMPLETED)
    cpu = time.process_time() - cpu
    for c in clients:
        c.t.disconnect()  # type: ignore[union-attr]
    return {
        "scenario": "receive",
        "receivers": len(clients),
        "deliveries": gen.received,
        "complete": gen.done.done(),
        "last_ns": gen.last_ns,
        "histogram": gen.histogram,
        "reordered": sum(c.reordered for c in clients),
        "errors": gen.disconnects,
        "cpu_s": cpu,
    }


async def run_send(args: argparse.Namespace, proto: Proto) -> dict[str, Any]:
    """Big room, the sender: ``--messages`` chat messages at ``--rate`` (0: flat out)."""
    (sender,) = await open_clients(_url(args.url, proto), proto, Idle(), 1, 1)
    loop = asyncio.get_running_loop()
    first_ns = time.perf_counter_ns()
    started = loop.time()
    for seq in range(args.messages):
        if args.rate:
            # on schedule: message k leaves at started + k / rate
            delay = started + seq / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        sender.send(proto.chat(seq))
        if not args.rate and seq % args.batch == args.batch - 1:
            await asyncio.sleep(0)
    elapsed = loop.time() - started
    await asyncio.sleep(0.1)  # the last frames leave the socket
    assert sender.t is not None
    sender.t.disconnect()
    return {
        "scenario": "send", "messages": args.messages, "seconds": elapsed, "first_ns": first_ns,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["echo", "broadcast", "idle", "receive", "send"])
    parser.add_argument("--sample", type=int, default=10, help="receive: measure every Nth")
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="neffos")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--sender-url", default=None, help="broadcast: sender on another node")
    parser.add_argument("--probe", action="store_true",
                        help="broadcast: probe until every receiver gets a message first"
                             " (receivers spread over workers that share a bus)")
    parser.add_argument("--batch", type=int, default=100, help="broadcast: sends per loop turn")
    parser.add_argument("--rate", type=float, default=0.0, help="broadcast: messages/s, 0 = max")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    proto = PROTOCOLS[args.protocol]()
    runner = {
        "echo": run_echo, "broadcast": run_broadcast, "idle": run_idle,
        "receive": run_receive, "send": run_send,
    }[args.scenario]
    if args.loop == "uvloop":
        import uvloop

        result = uvloop.run(runner(args, proto))
    else:
        result = asyncio.run(runner(args, proto))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
