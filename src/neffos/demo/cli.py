"""``python -m neffos demo``: the command line of the demo chat."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import neffos

from .assets import default_cache_dir
from .client import DEFAULT_URL, run_client
from .server import run

__all__ = ["add_command"]

DESCRIPTION = """\
The demo chat (the Go neffos "basic" example): serves a chat page at / and the
neffos endpoint /echo on one port. Open the page in two browser tabs, pick a name
and a room in each, and chat; `python -m neffos demo client` chats from a terminal.
The page's neffos.js client is installed from npm (`npm ci`) into a cache
directory the first time; without npm the demo runs and says how to get the page.
"""

CLIENT_DESCRIPTION = """\
Chat with the demo's browser users from a terminal: each line you type goes to
your room; the others' lines and joins and leaves are printed. /leave leaves the
room, /join ROOM moves to another one, end of input (Ctrl-D) quits.
"""


def add_command(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``demo`` (and ``demo client``) to ``python -m neffos``.

    ``add_parser`` is the ``add_parser`` method of the command's subparsers.
    """
    demo = add_parser(
        "demo", help="the demo chat: a browser page and a terminal client",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    demo.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one (%(default)s)"
    )
    demo.add_argument(
        "--cache-dir", type=Path, default=None,
        help="where neffos.js is installed (default: $NEFFOS_DEMO_CACHE, else "
        f"{default_cache_dir()})",
    )
    demo.set_defaults(run=serve_demo)
    modes = demo.add_subparsers(dest="demo_command", metavar="[client]")
    client = modes.add_parser(
        "client", help="chat from a terminal", description=CLIENT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument("--room", help="the room to join (asked when missing)")
    client.add_argument("--user", help="your name: the X-Username header (asked when missing)")
    client.add_argument("--url", default=DEFAULT_URL, help="the demo's endpoint (%(default)s)")


def serve_demo(args: argparse.Namespace) -> int:
    if args.demo_command == "client":
        return chat(args)
    cache_dir: Path = args.cache_dir or default_cache_dir()
    try:
        asyncio.run(run(args.host, args.port, cache_dir=cache_dir))
    except KeyboardInterrupt:  # Ctrl-C is how the demo stops
        return 0
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def chat(args: argparse.Namespace) -> int:
    try:
        user = args.user or input("Your name: ").strip()
        room = args.room if args.room is not None else input("Room to join, e.g. lobby: ").strip()
    except (EOFError, KeyboardInterrupt):
        return 1
    if not user:
        print("error: a name is needed (--user)", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_client(args.url, user, room))
    except KeyboardInterrupt:
        return 0
    except neffos.NeffosError as exc:  # cannot connect, refused, connection lost
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
