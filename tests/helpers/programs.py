"""Example programs run as a user runs them: ``python examples/X.py server|client``.

A :class:`Program` is one running example: its stdin to type into, its stdout
read line by line (every step waits for a line, bounded by a timeout; nothing
sleeps), its stderr kept for the failure message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from . import UNIT

__all__ = ["ENV", "EXAMPLES", "WAIT", "Program", "Programs", "programs"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT = 15 * UNIT  # a fresh interpreter importing neffos can be slow on a busy machine
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


class Program:
    """A running example: stdin to write to, stdout read line by line, stderr kept."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []  # stdout lines read so far
        assert proc.stderr is not None
        self._stderr = asyncio.ensure_future(proc.stderr.read())

    @classmethod
    async def start(cls, example: str, *args: str) -> Program:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / f"{example}.py"),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        return cls(f"{example} {' '.join(args)}", proc)

    def _describe(self) -> str:
        stderr = self._stderr.result().decode() if self._stderr.done() else "(still open)"
        return f"{self.name!r}\nstdout so far: {self.lines!r}\nstderr: {stderr}"

    async def expect(self, text: str, timeout: float = WAIT) -> str:
        """Read stdout until a line contains ``text``; return that line."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        await self.proc.wait()
                        await self._stderr
                        raise AssertionError(
                            f"exited ({self.proc.returncode}) before printing {text!r}: "
                            + self._describe()
                        )
                    line = raw.decode().rstrip("\r\n")
                    self.lines.append(line)
                    if text in line:
                        return line
        except TimeoutError:
            raise AssertionError(f"no line with {text!r} within {timeout}s: " + self._describe())

    async def send(self, *lines: str) -> None:
        """Type ``lines`` into the program's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.proc.stdin.drain()

    async def finish(self, expect_code: int = 0, *, eof: bool = True) -> tuple[list[str], str]:
        """Close stdin (Ctrl-D) unless ``eof`` is false, and wait for the exit.

        Returns all the stdout lines and stderr.
        """
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if eof:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(WAIT):
                rest = await self.proc.stdout.read()
                await self.proc.wait()
                stderr = (await self._stderr).decode()
        except TimeoutError:
            raise AssertionError("did not exit: " + self._describe())
        self.lines += rest.decode().splitlines()
        assert self.proc.returncode == expect_code, self._describe()
        return self.lines, stderr

    async def interrupt(self) -> None:
        """Press Ctrl-C (SIGINT); expect a quiet, clean exit (code 0, nothing on stderr)."""
        if sys.platform == "win32" or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            pytest.skip("cannot deliver SIGINT to the child here")  # it would ignore it too
        self.proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(WAIT):
                await self.proc.wait()
                stderr = (await self._stderr).decode()
        except TimeoutError:
            raise AssertionError("Ctrl-C did not stop it: " + self._describe())
        assert self.proc.returncode == 0, self._describe()
        assert stderr == "", self._describe()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        await self.proc.wait()
        with contextlib.suppress(Exception):
            await self._stderr


class Programs:
    """The programs of one test; all killed when it ends, whatever happened."""

    def __init__(self) -> None:
        self.started: list[Program] = []

    async def start(self, example: str, *args: str) -> Program:
        program = await Program.start(example, *args)
        self.started.append(program)
        return program

    async def server(self, example: str) -> tuple[Program, str]:
        """Start ``example``'s server on a free port; return it and its URL."""
        server = await self.start(example, "server", "--port", "0")
        line = await server.expect("listening on ")
        url = line.removeprefix("listening on ")
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/echo"), line
        return server, url

    async def client(self, example: str, url: str, *args: str) -> Program:
        return await self.start(example, "client", "--url", url, *args)


@contextlib.asynccontextmanager
async def programs() -> AsyncIterator[Programs]:
    group = Programs()
    try:
        yield group
    finally:
        for program in group.started:
            await program.kill()
