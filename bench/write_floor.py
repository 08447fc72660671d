"""The floor under a big room: what one write to each of N TCP connections costs here.

A broadcast to N WebSocket connections is at least N ``write`` system calls, one
per connection, whatever the framework: each receiver has its own TCP
connection. This script measures that floor on the machine it runs on, with no
WebSocket library at all: it opens N loopback TCP connections to a receiver
process (which waits in ``epoll`` and reads, as a client would), then writes one
small frame to every connection, ``--rounds`` times, pausing between rounds so
the receiver goes idle as it does between the messages of a chat room.

It prints, per round and on average, the wall time of the N writes and the
server's CPU time per write (user + system). If N writes already take longer
than a latency target, no server on this machine can meet that target for a room
of N with one write per receiver and message.

    python bench/write_floor.py --conns 10000 --rounds 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import selectors
import socket
import subprocess
import sys
import time

FRAME = bytes((0x81, 64)) + b"x" * 64  # a final text frame of 64 bytes, unmasked


def receive(port: int, conns: int) -> None:
    """The receiver process: connect ``conns`` sockets, then read until stdin closes."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    sel.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sys.stdin:
                return
            key.fileobj.recv(65536)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between rounds")
    parser.add_argument("--out", default=None, help="the JSON file to save (default: in"
                        " bench/results/)")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args()
    if args.receive is not None:
        receive(args.receive, args.conns)
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--receive", str(port), "--conns", str(args.conns)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    fds = []
    accepted = []
    for _ in range(args.conns):
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        accepted.append(sock)
        fds.append(sock.fileno())
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    walls, cpus = [], []
    for _ in range(args.rounds):
        time.sleep(args.pause)
        cpu, wall = time.process_time(), time.perf_counter()
        for fd in fds:
            os.write(fd, FRAME)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    assert child.stdin is not None
    child.stdin.close()
    child.wait(30)
    result = {
        "conns": args.conns,
        "rounds": args.rounds,
        "ms_per_round": [round(w * 1e3, 1) for w in walls],
        "mean_ms_per_round": round(sum(walls) / len(walls) * 1e3, 1),
        "cpu_us_per_write": round(sum(cpus) / len(cpus) / args.conns * 1e6, 2),
    }
    print(json.dumps(result))
    out = pathlib.Path(args.out) if args.out else pathlib.Path(__file__).parent / "results" / (
        datetime.datetime.now().strftime("write-floor-%Y%m%d-%H%M%S.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(sys.argv), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "result": result}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
