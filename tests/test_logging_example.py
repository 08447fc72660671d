"""examples/structured_logging.py: every log record is one JSON line on stderr.

The example server runs as a user runs it; the test reads its stderr line by
line while clients make it log: a handler's bug (ERROR, with its traceback), a
client closing (DEBUG, because ``--debug neffos.server``), a raw peer flooding
frames before the handshake (WARNING), and the application's own records.
Every step waits for the record it caused; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from helpers.programs import ENV, EXAMPLES, WAIT
from helpers.raw import RawPeer

import neffos

Record = dict[str, Any]
KEYS = {"time", "level", "logger", "message"}


class JSONLogServer:
    """The example's server process; its stderr parsed into records as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.records: list[Record] = []  # every record read so far, in order
        self.bad_lines: list[str] = []  # stderr lines that were not JSON objects
        self._seen = 0  # records[:_seen] were offered to wait_for already

    async def read_record(self) -> Record | None:
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            line = raw.decode().rstrip("\r\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                self.records.append(record)
                return record
            self.bad_lines.append(line)
        return None

    async def wait_for(self, what: str, match: Callable[[Record], bool]) -> Record:
        """The first record not yet returned for which ``match`` holds."""
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    while self._seen < len(self.records):
                        record = self.records[self._seen]
                        self._seen += 1
                        if match(record):
                            return record
                    if await self.read_record() is None:
                        raise AssertionError(f"stderr ended before {what}: {self.describe()}")
        except TimeoutError:
            raise AssertionError(f"no record for {what} within {WAIT}s: {self.describe()}")

    def describe(self) -> str:
        return f"records: {self.records!r}\nnot JSON: {self.bad_lines!r}"


@contextlib.asynccontextmanager
async def example_server(*args: str) -> AsyncIterator[tuple[JSONLogServer, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "structured_logging.py"), "server", "--port", "0", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ENV,
    )
    server = JSONLogServer(proc)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening on "), (line, server.describe())
        yield server, line.removeprefix("listening on ").strip()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


def check_shape(record: Record) -> None:
    assert KEYS <= record.keys() <= KEYS | {"conn_id", "exc_info", "stack_info"}, record
    assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, record
    when = datetime.fromisoformat(record["time"])
    assert when.utcoffset() is not None, record  # an aware time, not a local one
    if "conn_id" in record:
        assert record["conn_id"] and isinstance(record["conn_id"], str), record


async def test_structured_logging_example() -> None:
    if sys.platform == "win32" or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("cannot deliver SIGINT to the child here")
    async with example_server("--debug", "neffos.server") as (server, url):
        start = await server.wait_for("the start", lambda r: r["message"].startswith("listening"))
        assert start["logger"] == "example.echo" and start["level"] == "INFO", start
        assert "conn_id" not in start, start

        # The application's record (extra=) and a handler's bug (neffos, ERROR).
        async with neffos.dial(url, {"v1": {}}) as client:
            ns = await client.connect("v1")
            assert (await ns.ask("echo", "hi")).text == "echo back: hi"
            connected = await server.wait_for(
                "the app's connected record", lambda r: r["message"].startswith("connected from")
            )
            assert connected["conn_id"] == client.id, connected
            with pytest.raises(neffos.RemoteError, match="asked to raise"):
                await ns.ask("echo", "raise")
            error = await server.wait_for("the handler's error", lambda r: r["level"] == "ERROR")
        assert error["logger"] == "neffos.server", error
        assert error["conn_id"] == client.id, error
        assert error["message"] == f"[{client.id}] handler of 'v1'/'echo' raised", error
        assert "RuntimeError: asked to raise" in error["exc_info"], error

        # The client has gone: DEBUG from neffos.server, then the app's own record.
        closed = await server.wait_for(
            "the socket closing", lambda r: r.get("conn_id") == client.id and r["level"] == "DEBUG"
        )
        assert closed["logger"] == "neffos.server", closed
        assert closed["message"].startswith(f"[{client.id}] socket closed"), closed
        gone = await server.wait_for("the app's disconnected record", lambda r: (
            r["message"] == "disconnected" and r.get("conn_id") == client.id
        ))
        assert gone["logger"] == "example.echo", gone

        # A peer's mistake is a WARNING, never an ERROR: frames before the handshake.
        peer = await RawPeer.connect(url)
        try:
            for _ in range(4097):  # past max_queued_frames (4096)
                peer.send("x")
            assert await peer.wait_closed(WAIT) == 1008
        finally:
            peer.close()
        warning = await server.wait_for("the flood", lambda r: r["level"] == "WARNING")
        assert warning["logger"] == "neffos.server", warning
        assert warning["message"] == (
            f"[{warning['conn_id']}] closing: too many frames before the handshake"
        ), warning

        # Ctrl-C: a clean exit, and every line of stderr was one JSON object.
        server.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT):
            while await server.read_record() is not None:
                pass
            assert await server.proc.wait() == 0, server.describe()
        assert server.bad_lines == [], server.describe()
        assert [r["level"] for r in server.records].count("ERROR") == 1, server.describe()
        for record in server.records:
            check_shape(record)
