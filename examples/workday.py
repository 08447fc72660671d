"""Request/response with JSON bodies and errors that keep their type across the wire.

The client asks the server whether a date is a workday. Requests and answers
are dataclasses encoded as JSON (``neffos.marshal`` / ``msg.unmarshal``). On a
Saturday or a Sunday the server raises ``NotAWorkday``; because both sides
registered it with ``neffos.register_known_error``, the client's ``ask`` raises
that very exception type, so plain ``except NotAWorkday`` works. A date that
cannot be parsed raises ``BadDate``, a *dynamic* known error: its text varies,
a ``resolve_error`` hook recognises it.

Run::

    python examples/workday.py server                 # ws://127.0.0.1:8080/echo
    python examples/workday.py client                 # type dates: 2024-06-03
    printf '2024-06-03\\n2024-06-08\\n' | python examples/workday.py client

    2024-06-03 is a Monday: a workday
    2024-06-08: not a workday

Options: ``server --host H --port P`` (``--port 0`` picks a free port),
``client --url ws://H:P/echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import neffos


@dataclass
class Question:
    date: str  # ISO format: YYYY-MM-DD


@dataclass
class Answer:
    date: str
    weekday: str


class NotAWorkday(Exception):
    """The date falls on a weekend. Its text on the wire is always "not a workday"."""

    def __init__(self, text: str = "not a workday") -> None:
        super().__init__(text)


class BadDate(ValueError):
    """The date could not be parsed; the text names it ("bad date: 'xyz'")."""

    @staticmethod
    def resolve_error(text: str) -> bool:
        return text.startswith("bad date: ")


# Both sides register the errors: the server so that it sends them without
# logging a traceback, the client to turn the received text back into them.
neffos.register_known_error(NotAWorkday())
neffos.register_known_error(BadDate)


def on_workday(ns: neffos.NSConn, msg: neffos.Message) -> Answer:
    question = msg.unmarshal(Question)
    try:
        day = datetime.date.fromisoformat(question.date)
    except ValueError:
        raise BadDate(f"bad date: {question.date!r}") from None
    if day.weekday() >= 5:  # Saturday, Sunday
        raise NotAWorkday()
    return Answer(date=question.date, weekday=day.strftime("%A"))  # sent as JSON


async def run_server(host: str, port: int) -> None:
    async with neffos.Server({"v1": {"workday": on_workday}}) as server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


async def run_client(url: str) -> None:
    async with neffos.dial(url, {"v1": {}}) as client:
        ns = await client.connect("v1")
        async for date in input_lines():
            try:
                reply = await ns.ask("workday", neffos.marshal(Question(date)), timeout=5)
            except NotAWorkday as exc:
                print(f"{date}: {exc}")
            except BadDate as exc:
                print(exc)
            else:
                answer = reply.unmarshal(Answer)
                print(f"{answer.date} is a {answer.weekday}: a workday")


# -- plumbing --------------------------------------------------------------------


async def input_lines() -> AsyncIterator[str]:
    """The lines typed on (or piped into) stdin, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:  # a daemon thread, so that Ctrl-C never waits for it
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.strip())
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    while (line := await queue.get()) is not None:
        if line:
            yield line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the workday server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    client = modes.add_parser("client", help="ask about the dates read from stdin")
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    args = parser.parse_args()

    try:
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port))
        else:
            asyncio.run(run_client(args.url))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
