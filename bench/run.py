"""Run the benchmark suite: every scenario against every target, one process each.

    python bench/run.py                       # defaults: about a minute here
    python bench/run.py --scenarios idle --conns 19900
    python bench/run.py --targets ceiling,neffos-picows --scenarios echo --duration 10
    python bench/run.py --scenarios workers          # `neffos serve --workers N` vs 1

Each target server runs in its own process; the load generator (bench/loadgen.py)
runs in another, so on a 2-core machine the server gets one core. Figures are
printed as a table, with each target's ratio to the ceiling (the raw picows
library doing the same work) and to python-socketio, and saved as JSON in
bench/results/.

A target that cannot start (a missing module, a port in use...) stops the run
at once: its own error output is printed and the exit status is 1. A scenario
that fails later is reported, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

HERE = pathlib.Path(__file__).parent
PY = sys.executable
#: command prefixes that pin servers and load generators to cores (``--pin``)
SERVER_PIN: list[str] = []
GEN_PIN: list[str] = []

TARGETS = {
    "ceiling": (["ceiling"], "raw"),
    "ceiling-plain": (["ceiling-plain"], "raw"),
    "neffos-picows": (["neffos", "--transport", "picows"], "neffos"),
    "neffos-websockets": (["neffos", "--transport", "websockets"], "neffos"),
    "neffos-aiohttp": (["neffos", "--transport", "aiohttp"], "neffos"),
    "socketio": (["socketio"], "socketio"),
    "neffos-asgi": (["neffos", "--transport", "asgi"], "neffos"),
    "socketio-asgi": (["socketio-asgi"], "socketio"),
}
#: how many connections one load generator process holds (RLIMIT_NOFILE)
PER_LOADGEN = 9000
#: seconds a target may take to print ``PORT <n>``
START_TIMEOUT = 30


def broker_class() -> Any:
    """``tests/helpers/brokers.Broker``: the same broker processes as the tests."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from helpers.brokers import Broker

    return Broker


@contextlib.asynccontextmanager
async def running_broker(kind: str) -> AsyncIterator[Any]:
    """A ``redis-server`` or ``nats-server`` of our own for the length of the block."""
    broker = broker_class()(kind)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


class TargetDidNotStart(Exception):
    """A target server exited, or printed no port, before it listened."""


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def start_server(
    target: str, loop: str, extra: tuple[str, ...] = ()
) -> tuple[asyncio.subprocess.Process, int]:
    args, _ = TARGETS[target]
    # The server's errors go to a file, not a pipe: nobody reads a pipe while the
    # server runs, and a full one would stall it mid-benchmark.
    with tempfile.TemporaryFile() as errors:
        proc = await asyncio.create_subprocess_exec(
            *SERVER_PIN, PY, str(HERE / "servers.py"), *args, "--loop", loop, *extra,
            stdout=asyncio.subprocess.PIPE, stderr=errors,
        )
        assert proc.stdout is not None
        timed_out = False
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line, timed_out = b"", True
        if line.startswith(b"PORT "):
            return proc, int(line.split()[1])
        if not timed_out:
            # It is exiting or has exited: wait for its status rather than kill it, as a
            # kill races with the child watcher for the exit status (asyncio then
            # reports 255).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        await stop(proc)
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    if timed_out:
        how = f"no port printed within {START_TIMEOUT} s"
    elif line:
        how = f"printed {line!r} instead of its port"
    else:
        how = f"exited with status {proc.returncode}"
    raise TargetDidNotStart(
        f"target {target} did not start ({how}); its error output:\n{said[-4000:] or '(none)'}"
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *GEN_PIN, PY, str(HERE / "loadgen.py"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def run_echo(target: str, opts: argparse.Namespace) -> dict[str, Any]:
    proc, port = await start_server(target, opts.loop)
    try:
        return await loadgen(
            ["echo", "--url", f"ws://127.0.0.1:{port}/", "--protocol", TARGETS[target][1],
             "--clients", str(opts.clients), "--size", str(opts.size),
             "--duration", str(opts.duration), "--loop", opts.loop],
            opts.duration + 120,
        )
    finally:
        await stop(proc)


async def run_broadcast(target: str, opts: argparse.Namespace) -> dict[str, Any]:
    proc, port = await start_server(target, opts.loop)
    try:
        return await loadgen(
            ["broadcast", "--url", f"ws://127.0.0.1:{port}/", "--protocol", TARGETS[target][1],
             "--receivers", str(opts.receivers), "--messages", str(opts.messages),
             "--loop", opts.loop],
            240,
        )
    finally:
        await stop(proc)


async def run_idle(target: str, opts: argparse.Namespace) -> dict[str, Any]:
    proc, port = await start_server(target, opts.loop)
    gens: list[asyncio.subprocess.Process] = []
    try:
        # One connection first, so the baseline includes what the first
        # connection initialises once (imports, caches), not per connection.
        await asyncio.sleep(0.5)
        before = rss_bytes(proc.pid)
        remaining = opts.conns
        started = asyncio.get_running_loop().time()
        while remaining > 0:
            n = min(PER_LOADGEN, remaining)
            remaining -= n
            gens.append(await asyncio.create_subprocess_exec(
                *GEN_PIN, PY, str(HERE / "loadgen.py"), "idle", "--url",
                f"ws://127.0.0.1:{port}/",
                "--protocol", TARGETS[target][1], "--conns", str(n), "--loop", opts.loop,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            ))
        ready = []
        for gen in gens:
            assert gen.stdout is not None
            line = await asyncio.wait_for(gen.stdout.readline(), 600)
            if not line:
                assert gen.stderr is not None
                raise RuntimeError((await gen.stderr.read()).decode()[-2000:])
            ready.append(json.loads(line))
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(1.0)  # let the server settle (no work is pending)
        after = rss_bytes(proc.pid)
        held = sum(r["conns"] for r in ready)
        results = []
        for gen in gens:
            assert gen.stdin is not None and gen.stdout is not None
            gen.stdin.write(b"exit\n")
            await gen.stdin.drain()
            results.append(json.loads(await asyncio.wait_for(gen.stdout.readline(), 120)))
        server_alive = proc.returncode is None
        return {
            "scenario": "idle",
            "conns": held,
            "seconds": elapsed,
            "connects_per_s": held / elapsed,
            "rss_before_mb": before / 2**20,
            "rss_after_mb": after / 2**20,
            "bytes_per_conn": (after - before) / max(held, 1),
            "errors": sum(r["errors"] for r in results) + (0 if server_alive else 1),
        }
    finally:
        for gen in gens:
            await stop(gen)
        await stop(proc)


def add_baseline(ref: str, name: str) -> None:
    """Add the target ``name``: our server as of git ``ref`` (same run, same machine)."""
    root = HERE.parent
    out = pathlib.Path(tempfile.mkdtemp(prefix="neffos-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    TARGETS[name] = (
        ["neffos", "--transport", "picows", "--src", str(out / "src")], "neffos"
    )


CROSS_TARGETS = ("one-node", "redis", "nats")


async def run_cross_node(target: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Two server processes sharing a broker: receivers on B, the sender on A.

    ``one-node`` is the baseline measured in the same run: sender and receivers
    on one server without any exchange.
    """
    Broker = broker_class()
    broker = None
    procs: list[asyncio.subprocess.Process] = []
    try:
        extra: tuple[str, ...] = ()
        if target != "one-node":
            broker = Broker(target)
            await broker.start()
            url = broker.address if target == "redis" else broker.url
            extra = ("--exchange", target, "--broker", url)
        proc_a, port_a = await start_server("neffos-picows", opts.loop, extra)
        procs.append(proc_a)
        if target == "one-node":
            port_b = port_a
        else:
            proc_b, port_b = await start_server("neffos-picows", opts.loop, extra)
            procs.append(proc_b)
        base = ["broadcast", "--url", f"ws://127.0.0.1:{port_b}/",
                "--sender-url", f"ws://127.0.0.1:{port_a}/", "--loop", opts.loop,
                "--receivers", str(opts.receivers)]
        throughput = await loadgen([*base, "--messages", str(opts.messages)], 240)
        latency = await loadgen([*base, "--messages", str(opts.latency_messages),
                                 "--rate", str(opts.latency_rate), "--batch", "1"], 240)
        result = {
            "scenario": "cross-node",
            "deliveries_per_s": throughput["deliveries_per_s"],
            "seconds": throughput["seconds"],
            "lost": throughput["lost"] + latency["lost"],
            "reordered": throughput["reordered"] + latency["reordered"],
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "latency_rate": opts.latency_rate,
        }
        if broker is not None:
            result["broker_conns_0_clients"] = await broker.connection_count()
            one = await _hold_clients(port_a, 1, opts.loop)
            result["broker_conns_1_client"] = await broker.connection_count()
            await _release(one)
            many = await _hold_clients(port_a, 1000, opts.loop)
            result["broker_conns_1000_clients"] = await broker.connection_count()
            await _release(many)
        return result
    finally:
        for proc in procs:
            await stop(proc)
        if broker is not None:
            await broker.close()


async def _hold_clients(port: int, n: int, loop: str) -> asyncio.subprocess.Process:
    gen = await asyncio.create_subprocess_exec(
        *GEN_PIN, PY, str(HERE / "loadgen.py"), "idle", "--url", f"ws://127.0.0.1:{port}/",
        "--conns", str(n), "--loop", loop,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert gen.stdout is not None
    await asyncio.wait_for(gen.stdout.readline(), 120)
    return gen


async def _release(gen: asyncio.subprocess.Process) -> None:
    assert gen.stdin is not None
    gen.stdin.write(b"exit\n")
    await gen.stdin.drain()
    await asyncio.wait_for(gen.wait(), 60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def room_scenario(name: str) -> tuple[int, float] | None:
    """``room-1000-50`` -> (1000 receivers, 50 messages/s); ``room-1000-max`` -> rate 0."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "room":
        return None
    return int(parts[1]), 0.0 if parts[2] == "max" else float(parts[2])


async def run_room(target: str, opts: argparse.Namespace, size: int, rate: float) -> dict[str, Any]:
    """A big room: ``size`` receivers spread over ``--room-procs`` generator processes,
    one sender in a process of its own, at ``rate`` messages/s (0: flat out).

    Latency is send to receipt, measured on every ``--sample``-th receiver (the
    clocks are the same: perf_counter is CLOCK_MONOTONIC in every process).
    """
    async with room_server(target, opts) as (cpu_seconds_so_far, port):
        return await _run_room(target, opts, size, rate, cpu_seconds_so_far, port)


#: the room-* target that is ``neffos serve --workers N`` (``--workers``) on a Redis bus
ROOM_WORKERS = "neffos-workers-redis"


@contextlib.asynccontextmanager
async def room_server(
    target: str, opts: argparse.Namespace
) -> AsyncIterator[tuple[Callable[[], float], int]]:
    """The target's server for a room run: a function giving its CPU seconds so
    far (with every worker's, for ``neffos-workers-redis``), and its port."""
    if target != ROOM_WORKERS:
        proc, port = await start_server(target, opts.loop)
        try:
            yield (lambda: cpu_seconds(proc.pid)), port
        finally:
            await stop(proc)
        return
    async with running_broker("redis") as broker:
        command, port = await start_command(opts.workers, broker.address, opts.loop)
        try:
            pid = command.pid
            yield (lambda: sum(map(cpu_seconds, process_tree(pid)))), port
        finally:
            await stop_command(command)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux: /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        found.append(parent)
        with contextlib.suppress(OSError):
            for task in pathlib.Path(f"/proc/{parent}/task").iterdir():
                todo += map(int, (task / "children").read_text().split())
    return found


async def _run_room(
    target: str,
    opts: argparse.Namespace,
    size: int,
    rate: float,
    server_cpu: Callable[[], float],
    port: int,
) -> dict[str, Any]:
    gens: list[asyncio.subprocess.Process] = []
    url = f"ws://127.0.0.1:{port}/"
    protocol = "neffos" if target == ROOM_WORKERS else TARGETS[target][1]
    if rate:
        messages = max(1, round(rate * opts.room_seconds))
    else:
        messages = max(1, opts.room_deliveries // size)
    try:
        procs = min(opts.room_procs, size)
        for i in range(procs):
            n = size // procs + (1 if i < size % procs else 0)
            gens.append(await asyncio.create_subprocess_exec(
                *GEN_PIN, PY, str(HERE / "loadgen.py"), "receive", "--url", url,
                "--protocol", protocol,
                "--receivers", str(n), "--messages", str(messages),
                "--sample", str(opts.sample), "--loop", opts.loop,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=2**24,  # the result line holds a latency histogram
            ))
        for gen in gens:
            assert gen.stdout is not None
            line = await asyncio.wait_for(gen.stdout.readline(), 600)
            if not line:
                assert gen.stderr is not None
                raise RuntimeError((await gen.stderr.read()).decode()[-2000:])
        cpu_before = server_cpu()
        sent = await loadgen(
            ["send", "--url", url, "--protocol", protocol, "--messages", str(messages),
             "--rate", str(rate), "--loop", opts.loop], 600,
        )
        # Each receiver process ends once its clients have every message; past
        # the timeout it is told to stop and reports what it has (lost > 0).
        results = []
        for gen in gens:
            assert gen.stdin is not None and gen.stdout is not None
            try:
                line = await asyncio.wait_for(gen.stdout.readline(), opts.timeout)
            except TimeoutError:
                gen.stdin.write(b"exit\n")
                await gen.stdin.drain()
                line = await asyncio.wait_for(gen.stdout.readline(), 120)
            results.append(json.loads(line))
        cpu = server_cpu() - cpu_before
        histogram: dict[int, int] = {}
        for r in results:
            for bucket, count in r["histogram"].items():
                histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
        deliveries = sum(r["deliveries"] for r in results)
        # first send to last delivery (perf_counter is one clock for all processes)
        last_ns = max(r["last_ns"] for r in results)
        elapsed = (last_ns - sent["first_ns"]) / 1e9 if last_ns else float("nan")
        expected = size * messages
        return {
            "scenario": f"room-{size}",
            "receivers": size,
            "rate": rate,
            "messages": messages,
            "deliveries": deliveries,
            "lost": expected - deliveries,
            "reordered": sum(r["reordered"] for r in results),
            "send_seconds": sent["seconds"],
            "seconds": elapsed,
            "deliveries_per_s": deliveries / elapsed if elapsed else 0.0,
            "p50_ms": _histogram_percentile(histogram, 50),
            "p99_ms": _histogram_percentile(histogram, 99),
            "cpu_s_per_million": cpu / max(deliveries, 1) * 1e6,
            # the receiver processes' CPU over the run, in cores (not printed)
            "receivers_cores": sum(r["cpu_s"] for r in results) / elapsed if elapsed else 0.0,
            "server_cores": cpu / elapsed if elapsed else 0.0,
            "errors": sum(r["errors"] for r in results),
        }
    finally:
        for gen in gens:
            await stop(gen)


def _histogram_percentile(histogram: dict[int, int], p: float) -> float:
    """The p-th percentile of 0.1 ms buckets, in ms (the bucket's upper edge)."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank, seen = p / 100 * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return (bucket + 1) / 10
    return float("nan")


#: the ``workers`` scenario: the command with one worker (without and with a
#: Redis bus) and with ``--workers`` workers (Redis)
WORKER_TARGETS = ("1-worker", "1-worker-redis", "n-workers-redis")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


async def start_command(
    workers: int, redis: str | None, loop: str
) -> tuple[asyncio.subprocess.Process, int]:
    """``python -m neffos serve workers_app:make_server --workers N`` here; its port."""
    args = ["-m", "neffos", "serve", "workers_app:make_server", "--port", "0",
            "--workers", str(workers)]
    args += ["--loop", loop]
    if redis is not None:
        args += ["--redis", redis]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src"), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as errors:
        proc = await asyncio.create_subprocess_exec(
            PY, *args, cwd=HERE, env=env, stdout=asyncio.subprocess.PIPE, stderr=errors,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            line = b""
        match = re.match(rb"listening on wss?://[^ ]+:(\d+)/", line)
        if match is not None:
            return proc, int(match[1])
        await stop_command(proc)
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    raise TargetDidNotStart(
        f"neffos serve --workers {workers} did not start (printed {line!r});"
        f" its error output:\n{said[-4000:] or '(none)'}"
    )


async def stop_command(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the supervisor stops its workers), then SIGKILL if it lingers."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            await stop(proc)


async def run_workers(target: str, opts: argparse.Namespace) -> dict[str, Any]:
    """The echo and broadcast loads against ``neffos serve`` with 1 or N workers.

    Connections are spread over the workers by the kernel (``SO_REUSEPORT``); a
    broadcast reaches the receivers of the other workers through Redis.
    """
    Broker = broker_class()
    workers = opts.workers if target == "n-workers-redis" else 1
    broker = None
    proc = None
    try:
        if target.endswith("-redis"):
            broker = Broker("redis")
            await broker.start()
        proc, port = await start_command(
            workers, broker.address if broker else None, opts.loop
        )
        url = f"ws://127.0.0.1:{port}/"
        echo = await loadgen(
            ["echo", "--url", url, "--clients", str(opts.clients), "--size", str(opts.size),
             "--duration", str(opts.duration), "--loop", opts.loop],
            opts.duration + 120,
        )
        broadcast = await loadgen(
            ["broadcast", "--url", url, "--receivers", str(opts.receivers),
             "--messages", str(opts.messages), "--loop", opts.loop, "--probe"],
            240,
        )
        return {
            "scenario": "workers",
            "workers": workers,
            "bus": "redis" if broker else "none",
            "rps": echo["rps"],
            "p99_ms": echo["p99_ms"],
            "echo_loadgen_cpu": echo["loadgen_cpu"],
            "deliveries_per_s": broadcast["deliveries_per_s"],
            "lost": broadcast["lost"],
            "reordered": broadcast["reordered"],
            "broadcast_loadgen_cpu": broadcast["loadgen_cpu"],
            "errors": echo["errors"] + broadcast["errors"],
        }
    finally:
        if proc is not None:
            await stop_command(proc)
        if broker is not None:
            await broker.close()


SCENARIOS = {
    "echo": run_echo,
    "broadcast": run_broadcast,
    "idle": run_idle,
    "cross-node": run_cross_node,
    "workers": run_workers,
}
HEADLINE = {
    "echo": ("rps", "round trips/s"),
    "broadcast": ("deliveries_per_s", "deliveries/s"),
    "idle": ("bytes_per_conn", "bytes/conn"),
    "cross-node": ("deliveries_per_s", "deliveries/s"),
    "workers": ("rps", "round trips/s"),
}


def headline(scenario: str) -> tuple[str, str]:
    """The figure a scenario's runs are ranked by (the median is kept), and its unit."""
    room = room_scenario(scenario)
    if room is None:
        return HEADLINE[scenario]
    return ("p99_ms", "p99 ms") if room[1] else ("deliveries_per_s", "deliveries/s")


def ratio(a: float, b: float | None, lower_is_better: bool) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{(b / a if lower_is_better else a / b):.2f}x"


def workers_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["\n## workers (`neffos serve --workers N`, one port; echo round trips/s and"
             " broadcast deliveries/s; loadgen: its CPU, share of one core)"]
    lines.append(f"{'target':<18}{'workers':>8}{'bus':>6}{'echo rt/s':>11}{'p99 ms':>8}"
                 f"{'bcast deliv/s':>15}{'lost':>6}{'reord':>6}{'loadgen':>9}")
    for name, r in rows.items():
        lines.append(
            f"{name:<18}{r['workers']:>8}{r['bus']:>6}{r['rps']:>11.0f}{r['p99_ms']:>8.2f}"
            f"{r['deliveries_per_s']:>15.0f}{r['lost']:>6}{r['reordered']:>6}"
            f"{max(r['echo_loadgen_cpu'], r['broadcast_loadgen_cpu']):>8.0%} "
        )
    one, bus, many = (rows.get(t) for t in WORKER_TARGETS)
    if one and bus:
        lines.append(
            f"bus cost (1 worker, Redis / no bus): echo {ratio(bus['rps'], one['rps'], False)},"
            f" broadcast {ratio(bus['deliveries_per_s'], one['deliveries_per_s'], False)}"
        )
    if bus and many:
        n = many["workers"]
        for what, key in (("echo", "rps"), ("broadcast", "deliveries_per_s")):
            scale = many[key] / bus[key] if bus[key] else math.nan
            lines.append(f"scaling, {what} ({n} workers / 1 worker, both with Redis):"
                         f" {scale:.2f}x, {scale / n:.2f}x per worker")
    return "\n".join(lines)


def table(scenario: str, rows: dict[str, dict[str, Any]]) -> str:
    key, unit = headline(scenario)
    lower = scenario == "idle"
    room = room_scenario(scenario)
    if room is not None:
        size, rate = room
        what = f"{rate:g} messages/s" if rate else "flat out"
        plain = rows.get("ceiling-plain", {}).get("deliveries_per_s")
        lines = [f"\n## {scenario} ({size} receivers in one room, {what}; latency send to"
                 " receipt; CPU: server seconds per million deliveries; vs plain: deliv/s"
                 " against raw picows framing every send)"]
        lines.append(f"{'target':<20}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>8}"
                     f"{'reord':>6}{'CPU s/M':>9}{'vs plain':>10}")
        for name, r in rows.items():
            lines.append(
                f"{name:<20}{r['deliveries_per_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['lost']:>8}{r['reordered']:>6}{r['cpu_s_per_million']:>9.2f}"
                f"{ratio(r['deliveries_per_s'], plain, False):>10}"
            )
        return "\n".join(lines)
    if scenario == "workers":
        return workers_table(rows)
    if scenario == "cross-node":
        base = rows.get("one-node", {}).get(key)
        lines = ["\n## cross-node (receivers on node B, sender on node A; ratio: vs one node;"
                 " broker connections of both nodes together)"]
        lines.append(f"{'bus':<12}{'deliv/s':>10}{'lost':>6}{'reord':>6}{'p50 ms':>9}"
                     f"{'p99 ms':>9}{'broker conns, 1|1000 clients':>30}{'vs one node':>13}")
        for name, r in rows.items():
            conns = (f"{r['broker_conns_1_client']:g} | {r['broker_conns_1000_clients']:g}"
                     if "broker_conns_1_client" in r else "-")
            lines.append(
                f"{name:<12}{r['deliveries_per_s']:>10.0f}{r['lost']:>6}{r['reordered']:>6}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{conns:>30}"
                f"{ratio(r['deliveries_per_s'], base, False):>13}"
            )
        return "\n".join(lines)
    ceiling = rows.get("ceiling", {}).get(key)
    plain = rows.get("ceiling-plain", {}).get(key)

    def sio_for(name: str) -> float | None:
        """python-socketio on the same kind of server (ASGI targets: under uvicorn)."""
        other = "socketio-asgi" if name.endswith("-asgi") else "socketio"
        value = rows.get(other, {}).get(key)
        return None if value is None else float(value)

    lines = [f"\n## {scenario} ({unit}; ratios: ours/ceiling, ours/socketio"
             f"{', lower is better, shown inverted' if lower else ''})"]
    if scenario == "echo":
        head = f"{'target':<20}{'rt/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        lines += [head + f"{'vs ceiling':>12}{'vs plain':>10}{'vs sio':>9}"]
        for name, r in rows.items():
            lines.append(
                f"{name:<20}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}"
                f"{r['p99_ms']:>9.2f}{ratio(r['rps'], ceiling, False):>12}"
                f"{ratio(r['rps'], plain, False):>10}"
                f"{ratio(r['rps'], sio_for(name), False):>9}"
            )
    elif scenario == "broadcast":
        head = (f"{'target':<20}{'deliv/s':>10}{'all in s':>9}{'lost':>6}{'reord':>6}"
                f"{'p50 ms':>9}{'p99 ms':>9}")
        lines += [head + f"{'vs ceiling':>12}{'vs plain':>10}{'vs sio':>9}"]
        for name, r in rows.items():
            lines.append(
                f"{name:<20}{r['deliveries_per_s']:>10.0f}{r['seconds']:>9.3f}{r['lost']:>6}"
                f"{r['reordered']:>6}{r.get('p50_ms', math.nan):>9.2f}"
                f"{r.get('p99_ms', math.nan):>9.2f}"
                f"{ratio(r['deliveries_per_s'], ceiling, False):>12}"
                f"{ratio(r['deliveries_per_s'], plain, False):>10}"
                f"{ratio(r['deliveries_per_s'], sio_for(name), False):>9}"
            )
    else:
        head = f"{'target':<20}{'conns':>7}{'conn/s':>9}{'B/conn':>9}{'RSS MB':>8}{'errors':>7}"
        lines += [head + f"{'vs ceiling':>12}{'vs sio':>9}"]
        for name, r in rows.items():
            lines.append(
                f"{name:<20}{r['conns']:>7}{r['connects_per_s']:>9.0f}"
                f"{r['bytes_per_conn']:>9.0f}{r['rss_after_mb']:>8.1f}{r['errors']:>7}"
                f"{ratio(r['bytes_per_conn'], ceiling, True):>12}"
                f"{ratio(r['bytes_per_conn'], sio_for(name), True):>9}"
            )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="echo,broadcast,idle")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--receivers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--room-procs", type=int, default=2,
                        help="room-*: load generator processes holding the receivers")
    parser.add_argument("--room-seconds", type=float, default=5.0,
                        help="room-N-RATE: seconds of sending at RATE messages/s")
    parser.add_argument("--room-deliveries", type=int, default=2_000_000,
                        help="room-N-max: deliveries to make flat out (messages = this / N)")
    parser.add_argument("--sample", type=int, default=10,
                        help="room-*: measure latency and order on every Nth receiver")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="room-*: seconds to wait for the last delivery")
    parser.add_argument("--latency-rate", type=float, default=200.0,
                        help="cross-node latency phase: messages/s")
    parser.add_argument("--latency-messages", type=int, default=400)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="workers scenario and the neffos-workers-redis target: N"
                             " (default: the cores here, %(default)s)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each scenario N times (interleaved), keep the median")
    parser.add_argument("--baseline", action="append", default=[], metavar="GIT_REF",
                        help="also run neffos (picows) as of GIT_REF, as target 'baseline'"
                             " (repeatable: 'baseline-<ref>' each)")
    parser.add_argument("--pin", action="store_true",
                        help="run servers on core 0 and load generators on the other cores "
                             "(taskset, Linux): far less noise between runs on a small machine")
    opts = parser.parse_args()
    if opts.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2 or shutil.which("taskset") is None:
            parser.error("--pin needs taskset and at least 2 cores")
        SERVER_PIN[:] = ["taskset", "-c", str(cores[0])]
        GEN_PIN[:] = ["taskset", "-c", ",".join(map(str, cores[1:]))]
    for ref in opts.baseline:
        name = "baseline" if len(opts.baseline) == 1 else f"baseline-{ref}"
        add_baseline(ref, name)
        if name not in opts.targets.split(","):
            opts.targets += f",{name}"
    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    scenarios: list[str] = []
    for scenario in opts.scenarios.split(","):
        if scenario == "room":  # the four big-room runs of the fan-out issue
            scenarios += ["room-1000-50", "room-1000-max", "room-10000-50", "room-10000-max"]
        elif scenario in SCENARIOS or room_scenario(scenario):
            scenarios.append(scenario)
        else:
            print(f"bench: unknown scenario {scenario!r}", file=sys.stderr)
            return 2
    if ROOM_WORKERS in opts.targets.split(",") and not all(map(room_scenario, scenarios)):
        print(f"bench: {ROOM_WORKERS} runs the room-* scenarios only", file=sys.stderr)
        return 2
    for scenario in scenarios:
        results[scenario] = {}
        targets = (
            CROSS_TARGETS if scenario == "cross-node"
            else WORKER_TARGETS if scenario == "workers"
            else opts.targets.split(",")
        )
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
        # Repetitions are interleaved (a, b, a, b...) so that a slow phase of the
        # machine hits every target alike; the run with the median figure is kept.
        for rep in range(opts.repeat):
            for target in targets:
                print(f"running {scenario} on {target} ({rep + 1}/{opts.repeat})...",
                      file=sys.stderr, flush=True)
                try:
                    room = room_scenario(scenario)
                    runs[target].append(
                        await run_room(target, opts, *room) if room
                        else await SCENARIOS[scenario](target, opts)
                    )
                except TargetDidNotStart as exc:
                    print(f"bench: {exc}", file=sys.stderr)
                    if "No module named" in str(exc):
                        print("bench: the targets' modules come with the bench extra:"
                              " .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
                    return 1
                except Exception as exc:
                    print(f"  failed: {exc}", file=sys.stderr)
                    failures.append(f"{scenario} on {target}")
        key = headline(scenario)[0]
        for target, done in runs.items():
            if done:
                done.sort(key=lambda r: r[key])
                results[scenario][target] = {
                    **done[len(done) // 2], "runs": [r[key] for r in done],
                }
        print(table(scenario, results[scenario]), flush=True)
    out = pathlib.Path(opts.out) if opts.out else HERE / "results" / (
        datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join([os.path.basename(PY), *sys.argv]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "options": vars(opts),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nsaved {out}")
    if failures:
        print(f"bench: failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
