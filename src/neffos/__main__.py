"""``python -m neffos COMMAND``: the package's command line.

Each command lives with the code it runs and adds itself to the parser:
``add_command(add_parser)`` gets the ``add_parser`` method of the subcommands,
adds its parser and sets ``run=fn(args) -> exit status`` on it.
Commands: ``demo`` (the demo chat and its terminal client).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .demo import cli as demo_cli

__all__ = ["build_parser", "main"]

#: every command's ``add_command``, in the order ``--help`` lists them
COMMANDS: list[Callable[[Callable[..., argparse.ArgumentParser]], None]] = [
    demo_cli.add_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m neffos",
        description="neffos for Python: a real-time WebSocket framework for asyncio.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(commands.add_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
