"""``python -m neffos COMMAND``: the package's command line.

Each command lives with the code it runs and adds itself to the parser:
``add_command(add_parser)`` gets the ``add_parser`` method of the subcommands,
adds its parser and sets ``run=fn(args) -> exit status`` on it.
Commands: ``serve`` (an application's server, see :mod:`neffos.cli`),
``demo`` (the demo chat and its terminal client) and ``version``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__, cli
from .demo import cli as demo_cli

__all__ = ["build_parser", "main"]


def add_version(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``version``: print the package's version."""
    version = add_parser(
        "version", help="print the version of neffos", description="Print the version of neffos."
    )
    version.set_defaults(run=print_version)


def print_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


#: every command's ``add_command``, in the order ``--help`` lists them
COMMANDS: list[Callable[[Callable[..., argparse.ArgumentParser]], None]] = [
    cli.add_command,
    demo_cli.add_command,
    add_version,
]


def build_parser(prog: str = "python -m neffos") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="neffos for Python: a real-time WebSocket framework for asyncio.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(commands.add_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    prog = "neffos" if script in ("neffos", "neffos.exe") else "python -m neffos"
    args = build_parser(prog).parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
