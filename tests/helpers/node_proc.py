"""A neffos server node for the scale-out tests, run as a process of its own.

    python tests/helpers/node_proc.py --broker redis --url 127.0.0.1:6379 --prefix MyChatApp
    python tests/helpers/node_proc.py --broker nats --url nats://127.0.0.1:4222 --prefix neffos

It serves ``/echo`` on a free port (picows) with ``server.use_stack_exchange``,
takes connection IDs from the ``X-Username`` header and knows two namespaces,
``chat`` and ``default`` (the one of the Go vectors), whose ``chat`` event is
relayed to the sender's room (or namespace), excluding the sender:
``ns.conn.server.broadcast(ns, msg)``.

Protocol on the standard streams, one line each:

* first ``READY <ws url>`` on stdout;
* then one JSON command per stdin line, each answered by one JSON line on stdout
  that carries the command's ``id`` (commands run concurrently):

  ``{"cmd": "broadcast", "namespace", "event", "body", "room", "to", "exclude_id"}``
  ``{"cmd": "ask", "namespace", "event", "body", "room", "to", "timeout"}`` →
  ``{"ok": true, "body"}`` or ``{"ok": false, "error", "type"}``
  ``{"cmd": "stats"}`` → the exchange's counters, ``total_connections``,
  ``exchange_connections``, ``node_id``
  ``{"cmd": "wait_stats", "field", "at_least", "timeout"}`` → the stats once
  ``field >= at_least`` (woken by every change of a counter, no polling)
  ``{"cmd": "exit"}``

* every log record of the ``neffos`` loggers (INFO and above) as a line
  ``LOG <LEVEL> <message>``, so that tests can wait for "reconnected" etc.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import uuid
from typing import Any

import neffos
from neffos.exchange.base import ExchangeStats, StackExchange

_changed: asyncio.Event | None = None


class WatchedStats(ExchangeStats):
    """ExchangeStats that wake ``wait_stats`` whenever a counter changes."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if _changed is not None:
            _changed.set()


class LineHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().replace("\n", " | ")
        out(f"LOG {record.levelname} {text}")


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def by_username(request: neffos.Request) -> str:
    return request.headers.get("X-Username") or str(uuid.uuid4())


def relay(ns: neffos.NSConn, msg: neffos.Message) -> None:
    ns.conn.server.broadcast(ns, msg)


EVENTS = {"chat": {"chat": relay}, "default": {"chat": relay}}


def make_exchange(args: argparse.Namespace) -> StackExchange:
    if args.broker == "redis":
        from neffos.exchange.redis import RedisStackExchange

        return RedisStackExchange(args.url, channel_prefix=args.prefix)
    from neffos.exchange.nats import NatsStackExchange

    return NatsStackExchange(args.url, subject_prefix=args.prefix)


def stats_of(server: neffos.Server, exchange: StackExchange) -> dict[str, Any]:
    bus = server.bus_node
    return {
        **dataclasses.asdict(exchange.stats),
        "total_connections": server.get_total_connections(),
        "exchange_connections": exchange.connections,
        "node_id": bus.node_id if bus is not None else None,
    }


async def run_command(
    server: neffos.Server, exchange: StackExchange, command: dict[str, Any]
) -> dict[str, Any]:
    name = command["cmd"]
    if name == "broadcast":
        msg = neffos.Message(
            command.get("namespace", "chat"),
            command["event"],
            command.get("body", ""),
            room=command.get("room") or "",
            to=command.get("to") or "",
        )
        exclude_id = command.get("exclude_id")
        server.broadcast(neffos.exclude(exclude_id) if exclude_id else None, msg)
        return {"ok": True}
    if name == "ask":
        msg = neffos.Message(
            command.get("namespace", "chat"),
            command["event"],
            command.get("body", ""),
            room=command.get("room") or "",
        )
        try:
            reply = await server.ask(msg, to=command.get("to"), timeout=command.get("timeout", 5))
        except Exception as exc:
            return {"ok": False, "error": str(exc), "type": type(exc).__name__}
        return {"ok": True, "body": reply.text, "event": reply.event, "wait": reply.wait}
    if name == "stats":
        return {"ok": True, **stats_of(server, exchange)}
    if name == "wait_stats":
        assert _changed is not None
        field, at_least = command["field"], command["at_least"]
        try:
            async with asyncio.timeout(command.get("timeout", 5)):
                while getattr(exchange.stats, field) < at_least:
                    _changed.clear()
                    await _changed.wait()
        except TimeoutError:
            return {"ok": False, "error": "timeout", **stats_of(server, exchange)}
        return {"ok": True, **stats_of(server, exchange)}
    return {"ok": False, "error": f"unknown command {name!r}"}


async def main() -> None:
    global _changed
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=["redis", "nats"], required=True)
    parser.add_argument("--url", required=True, help="redis host:port, or a nats:// URL")
    parser.add_argument("--prefix", default="neffos", help="channel/subject prefix")
    parser.add_argument("--name", default="node")
    args = parser.parse_args()

    handler = LineHandler()
    logger = logging.getLogger("neffos")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    _changed = asyncio.Event()
    exchange = make_exchange(args)
    exchange.stats = WatchedStats()
    server = neffos.Server(EVENTS, id_generator=by_username, ping_interval=None)
    server.use_stack_exchange(exchange)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    tasks: set[asyncio.Task[None]] = set()

    async def serve_one(command: dict[str, Any]) -> None:
        try:
            answer = await run_command(server, exchange, command)
        except Exception as exc:  # report, never die
            answer = {"ok": False, "error": repr(exc), "type": type(exc).__name__}
        answer["id"] = command.get("id")
        out(json.dumps(answer))

    async with server:
        listener = await server.listen("127.0.0.1", 0, path="/echo", transport="picows")
        out(f"READY {listener.url}")
        while line := await reader.readline():
            if not line.strip():
                continue
            command = json.loads(line)
            if command.get("cmd") == "exit":
                out(json.dumps({"ok": True, "id": command.get("id")}))
                break
            task = loop.create_task(serve_one(command))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in list(tasks):
            task.cancel()
        await listener.close()


if __name__ == "__main__":
    asyncio.run(main())
