"""Structured logging: the echo server with every log record as one JSON line.

Run it (the JSON lines go to stderr; DEBUG for the connections of the server)::

    python examples/structured_logging.py server --debug neffos.server

then talk to it with the echo client (``python examples/echo.py client``): it
answers ``echo back: <text>``; type ``raise`` to see a handler's bug as an
ERROR record with its traceback. A record looks like::

    {"time": "2026-01-02T10:00:00.123+00:00", "level": "DEBUG",
     "logger": "neffos.server", "message": "[6f1c...] socket closed: None",
     "conn_id": "6f1c..."}

neffos passes no ``extra=`` to its log calls: a record about one connection
starts its message with ``[<connection id>] ``, and the formatter reads the ID
from there. The application's own records pass ``extra={"conn_id": ...}``.

Options: ``--host``, ``--port`` (0 picks a free port), ``--debug LOGGER``
(repeat it: ``neffos.client``, ``neffos.exchange``, ``neffos.transports.picows``,
...; everything else logs from INFO).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import neffos

log = logging.getLogger("example.echo")  # the application's own logger

# "[<id>] ..." opens every neffos record about one connection; an ID never
# holds a control character, but may hold anything else, so stop at "] ".
_CONN_PREFIX = re.compile(r"\[([^\x00-\x1f]+?)\] ")


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, conn_id, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        conn_id = getattr(record, "conn_id", None)  # extra={"conn_id": ...}
        if conn_id is None and (match := _CONN_PREFIX.match(message)):
            conn_id = match.group(1)
        if conn_id is not None:
            entry["conn_id"] = conn_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(debug: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    for name in debug:  # DEBUG for one part only; the others stay at INFO
        logging.getLogger(name).setLevel(logging.DEBUG)


def on_echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes | None:
    if ns.conn.is_client:
        return None
    if msg.text == "raise":
        raise RuntimeError("asked to raise")  # a bug: neffos logs it at ERROR
    return b"echo back: " + msg.body


def on_connect(conn: neffos.Conn) -> None:
    log.info("connected from %s", conn.remote_address, extra={"conn_id": conn.id})


def on_disconnect(conn: neffos.Conn) -> None:
    log.info("disconnected", extra={"conn_id": conn.id})


async def run_server(host: str, port: int) -> None:
    server = neffos.Server(
        {"v1": {"echo": on_echo}}, on_connect=on_connect, on_disconnect=on_disconnect
    )
    async with server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        log.info("listening on %s (%s)", listener.url, listener.transport)
        await asyncio.Event().wait()  # serve until Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the echo server, logging JSON lines")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    server.add_argument(
        "--debug", action="append", default=[], metavar="LOGGER",
        help="log this logger (and its children) from DEBUG; repeat it",
    )
    args = parser.parse_args()

    setup_logging(args.debug)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a quiet exit
        asyncio.run(run_server(args.host, args.port))


if __name__ == "__main__":
    main()
