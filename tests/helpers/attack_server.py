"""A neffos server in a process of its own, for measuring what attacks make it hold.

    python tests/helpers/attack_server.py --transport picows

Namespace ``chat`` has ``echo`` (answers with the body: the canary's event) and
``slow`` (an async handler that waits until the ``release`` command). It prints
``READY <url>`` once listening, then answers one JSON line per stdin command:

* ``stats``: ``rss`` and ``peak_rss`` (kB, VmRSS and VmHWM), ``traced`` and
  ``traced_peak`` (bytes allocated by Python, tracemalloc), ``connections``;
* ``reset_peak``: restart both peaks (``/proc/self/clear_refs``, tracemalloc);
* ``snapshot`` and ``top``: what Python allocated since the snapshot, by place
  (to find what holds memory);
* ``release``: let the waiting ``slow`` handlers finish.

The memory is measured after a garbage collection, so what is reported is what
is still referenced.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import pathlib
import sys
import tracemalloc

import neffos


def status(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    pathlib.Path("/proc/self/clear_refs").write_text("5")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", default="picows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tracemalloc.start(25)
    gate = asyncio.Event()
    baseline = tracemalloc.take_snapshot()

    async def slow(ns: neffos.NSConn, msg: neffos.Message) -> None:
        await gate.wait()

    server = neffos.Server(
        {"chat": {"echo": lambda ns, m: m.body, "slow": slow}},
        transport=args.transport,
        ping_interval=None,
    )
    listener = await server.listen("127.0.0.1", 0, path="/echo")
    print(f"READY {listener.url}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = line.decode().strip()
        if command == "stats":
            gc.collect()
            traced, traced_peak = tracemalloc.get_traced_memory()
            answer = {
                "rss": status("VmRSS"),
                "peak_rss": status("VmHWM"),
                "traced": traced,
                "traced_peak": traced_peak,
                "connections": server.get_total_connections(),
            }
        elif command == "reset_peak":
            gc.collect()
            reset_peak_rss()
            tracemalloc.reset_peak()
            answer = {"ok": True}
        elif command == "snapshot":
            gc.collect()
            baseline = tracemalloc.take_snapshot()
            answer = {"ok": True}
        elif command == "top":  # what was allocated since "snapshot", by place
            gc.collect()
            diff = tracemalloc.take_snapshot().compare_to(baseline, "traceback")
            answer = {"top": [
                {"size": d.size_diff, "where": d.traceback.format()[-6:]}
                for d in diff[:5]
            ]}
        elif command == "release":
            gate.set()
            answer = {"ok": True}
        else:
            answer = {"error": command}
        print(json.dumps(answer), flush=True)
    await listener.close()
    await server.close()


if __name__ == "__main__":
    asyncio.run(main())
