"""``neffos serve --workers N``: N server processes sharing one port.

Theory of operation
-------------------
A Python process uses one core. To use N, the command becomes a *supervisor*
that runs N *workers*, each one the ordinary single-process command
(``python -m neffos serve ... --worker-fd FD``), listening on the same port
with ``SO_REUSEPORT``: the kernel spreads new connections over the workers.

Why processes started from scratch (and not ``multiprocessing``): a worker is
exactly what ``neffos serve`` without workers runs (the same start-up errors,
the same graceful shutdown), nothing is pickled or inherited, and the supervisor
never imports the application (its module-level code runs only in workers).

The port is reserved by the supervisor before any worker starts: a socket bound
with ``SO_REUSEPORT`` that never listens. The kernel gives it no connections,
but it holds the port, so ``--port 0`` resolves once and every worker, and
every restarted worker, binds the same port.

Each worker gets one end of a socket pair (``--worker-fd``); the supervisor
keeps the other. On it the worker says ``ready <url>`` once it listens or
``error <text>`` when it cannot start (the one line the supervisor then prints).
The worker watches its end too: end of file means the supervisor is gone (even
killed with SIGKILL), and the worker shuts down gracefully, as on SIGTERM.
With ``--metrics-port``, the supervisor also sends ``stats`` on it at each
scrape, and the worker answers with one line, ``stats <json>``
(:func:`neffos.stats.to_json`); the supervisor serves them all, a ``worker``
label each. The
same mechanism works on Linux and macOS, unlike ``PR_SET_PDEATHSIG``.

Workers run in a process group of their own, so a Ctrl-C in the terminal
reaches only the supervisor, which forwards one SIGTERM to each worker (a
worker that got both would take the second as "stop at once").

The first worker starts alone: a broken application fails once, with one error
line; the others start together once it listens. A worker that dies later is
restarted (after 0.1 s, doubling while restarts keep failing quickly, up to
5 s); when a restarted worker fails to start :data:`START_FAILURES` times in a
row, the supervisor stops everything and exits 1 with the worker's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .stats import ServerStats, from_json, to_json

if TYPE_CHECKING:
    from .metrics import MetricsListener

__all__ = [
    "START_FAILURES",
    "Supervisor",
    "WorkerChannel",
    "cpu_count",
    "describe_exit",
    "reuse_port_problem",
    "supervise",
]

log = logging.getLogger("neffos.workers")

#: seconds before the first restart of a worker that died
RESTART_DELAY = 0.1
#: the longest wait between restarts (the delay doubles while restarts fail quickly)
MAX_RESTART_DELAY = 5.0
#: a worker that served this long before dying is restarted after RESTART_DELAY again
HEALTHY_AFTER = 10.0
#: restarted workers failing to start this many times in a row stop the supervisor
START_FAILURES = 5
#: seconds the supervisor waits past --shutdown-timeout before killing workers
SHUTDOWN_MARGIN = 5.0
#: seconds a scrape of the supervisor's metrics waits for each worker's numbers
STATS_TIMEOUT = 2.0
#: the longest line a worker may send its supervisor (a stats snapshot)
STATS_LIMIT = 1 << 24


def cpu_count() -> int:
    """The cores this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))  # honours taskset and cpusets
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def reuse_port_problem() -> str | None:
    """Why several workers cannot share a port here, or None."""
    if not hasattr(socket, "SO_REUSEPORT") or sys.platform == "win32":
        return (
            f"--workers needs SO_REUSEPORT (Linux or macOS), which {sys.platform} lacks: "
            "run one `neffos serve` per port behind a proxy instead"
        )
    return None


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def reserve_port(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind (never listen) ``SO_REUSEPORT`` sockets on every address of ``host``.

    Returns them and the port (the one picked when ``port`` is 0).

    Raises:
        OSError: the port is taken (by a socket without ``SO_REUSEPORT``), or
            ``host`` is not an address of this machine.
    """
    infos = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = int(sock.getsockname()[1])  # the next addresses get the same one
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held, port


# -- the worker's side -------------------------------------------------------------------


class WorkerChannel:
    """A worker's end of its control socket (``--worker-fd``)."""

    def __init__(self, fd: int) -> None:
        os.set_inheritable(fd, False)  # not for the application's own subprocesses
        self._sock = socket.socket(fileno=fd)
        self._sending: set[asyncio.Future[None]] = set()  # stats answers being sent
        #: the snapshot of the worker's server, once it has one (see :meth:`watch`)
        self.report: Callable[[], ServerStats] | None = None

    def ready(self, url: str) -> None:
        """Tell the supervisor that this worker listens on ``url``."""
        self._send(f"ready {url}")

    def error(self, text: str) -> None:
        """Tell the supervisor why this worker cannot start (one line)."""
        self._send("error " + " ".join(text.splitlines()))

    def _send(self, line: str) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: watch() says so
            self._sock.sendall(line.encode() + b"\n")

    def watch(self, on_gone: Callable[[], None]) -> None:
        """Call ``on_gone()`` once the supervisor's end is closed (it exited).

        Meanwhile, answer the supervisor's ``stats`` requests with
        :attr:`report`'s snapshot (for the metrics of all workers).
        """
        loop = asyncio.get_running_loop()
        sock = self._sock
        sock.setblocking(False)
        pending = bytearray()

        def readable() -> None:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(sock)
                on_gone()
                return
            pending.extend(data)
            while (end := pending.find(b"\n")) >= 0:
                request = bytes(pending[:end])
                del pending[:end + 1]
                if request == b"stats" and self.report is not None:
                    try:
                        answer = to_json(self.report()).encode()
                    except Exception:  # the supervisor must not wait: say "none"
                        log.exception("a snapshot of this worker's numbers failed")
                        answer = b"-"
                    self._answer(b"stats " + answer + b"\n")
            if len(pending) > 4096:  # not a supervisor's request: forget it
                pending.clear()

        loop.add_reader(sock, readable)

    def _answer(self, line: bytes) -> None:
        sending = asyncio.ensure_future(
            asyncio.get_running_loop().sock_sendall(self._sock, line)
        )
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sending.discard(sending)
        if not sending.cancelled():
            sending.exception()  # the supervisor is gone: the reader says so

    def unwatch(self) -> None:
        """Stop watching (before the event loop closes)."""
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock)

    def close(self) -> None:
        self._sock.close()


# -- the supervisor's side --------------------------------------------------------------


class StartFailed(Exception):
    """A worker exited, or said it cannot start, before it listened."""


class _Worker:
    """One worker process and what it said on its control socket."""

    def __init__(
        self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.proc = proc
        self.pid: int = proc.pid
        #: its ``error`` line, if it sent one
        self.error: str | None = None
        #: its URL once it listens; None if it exited (closed its end) first
        self.ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._writer = writer
        self._stats: asyncio.Future[ServerStats | None] | None = None  # asked, not answered
        self._reading = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while raw := await reader.readline():
                kind, _, rest = raw.decode(errors="replace").rstrip("\n").partition(" ")
                if kind == "ready" and not self.ready.done():
                    self.ready.set_result(rest)
                elif kind == "error":
                    self.error = rest
                elif kind == "stats" and self._stats is not None and not self._stats.done():
                    try:
                        self._stats.set_result(from_json(rest))
                    except ValueError as exc:
                        log.warning("worker %d: %s", self.pid, exc)
                        self._stats.set_result(None)
        except (OSError, ValueError):  # ValueError: a line past the reader's limit
            pass
        finally:
            if not self.ready.done():
                self.ready.set_result(None)
            if self._stats is not None and not self._stats.done():
                self._stats.set_result(None)

    async def stats(self, timeout: float) -> ServerStats | None:
        """The snapshot of the worker's server; None if it does not answer in time."""
        if (
            self.proc.returncode is not None or not self.ready.done()
            or self.ready.result() is None or self._reading.done()
        ):
            return None
        asking = self._stats
        if asking is None or asking.done():  # else: join the request in flight
            asking = self._stats = asyncio.get_running_loop().create_future()
            self._writer.write(b"stats\n")
        try:
            return await asyncio.wait_for(asyncio.shield(asking), timeout)
        except TimeoutError:
            return None

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def wait(self) -> int:
        """Wait for the exit; its status. Closes the control socket."""
        returncode = await self.proc.wait()
        with contextlib.suppress(Exception):
            await self._reading
        self._writer.close()
        return returncode


class _Slot:
    """One of the N worker positions; its task keeps a worker running in it."""

    def __init__(self, index: int) -> None:
        self.index = index
        #: the worker in the slot now (None before the first start)
        self.worker: _Worker | None = None
        #: the URL of the slot's first worker once it listens, or StartFailed
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        #: the task running :meth:`Supervisor._keep` for this slot
        self.task: asyncio.Task[int] | None = None


class Supervisor:
    """Runs ``count`` workers on one port; restarts them; stops them on a signal.

    Made inside the running event loop (see :func:`supervise`).

    Args:
        command: ``fn(port, fd)``: the worker's arguments after
            ``python -m neffos`` (``fd``: its end of the control socket).
        count: the number of workers.
        host: the address to listen on.
        port: the port (0: a free one, picked once for all workers).
        shutdown_timeout: the workers' ``--shutdown-timeout``; the supervisor
            kills those still running :data:`SHUTDOWN_MARGIN` seconds later.
        metrics_port: serve the metrics of every worker on
            ``http://host:metrics_port/metrics`` (needs ``neffos[metrics]``),
            one sample set per worker with a ``worker`` label (its slot, 0 to
            N-1; a restarted worker keeps its slot and counts from 0 again).
    """

    def __init__(
        self, command: Callable[[int, int], list[str]], count: int, host: str, port: int,
        shutdown_timeout: float, metrics_port: int | None = None,
    ) -> None:
        self.command = command
        self.metrics_port = metrics_port
        self.count = count
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self._slots: list[_Slot] = []
        self._stopping = asyncio.Event()  # set once the workers are being stopped
        #: why the supervisor gives up (restarted workers that cannot start)
        self._fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def run(self) -> int:
        """Supervise until a signal (or workers that cannot start); the exit status."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[str] = loop.create_future()
        force: asyncio.Future[str] = loop.create_future()

        def on_signal(signum: int) -> None:
            target = force if stop.done() else stop
            if not target.done():
                target.set_result(signal.Signals(signum).name)

        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        held: list[socket.socket] = []
        exporter: MetricsListener | None = None
        try:
            try:
                held, self.port = reserve_port(self.host, self.port)
            except OSError as exc:
                reason = "address already in use" if exc.errno == errno.EADDRINUSE else (
                    exc.strerror or str(exc)
                )
                print(f"error: cannot listen on {self.host}:{self.port}: {reason}",
                      file=sys.stderr)
                return 1
            if self.metrics_port is not None:
                exporter = await self._serve_metrics()
                if exporter is None:
                    return 1
            try:
                return await self._supervise(stop, force, exporter)
            except BaseException:
                for slot in self._slots:  # never leave workers behind
                    if slot.worker is not None:
                        slot.worker.signal(signal.SIGKILL)
                raise
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            for sock in held:
                sock.close()
            if exporter is not None:
                await exporter.close()

    async def _serve_metrics(self) -> MetricsListener | None:
        """Listen on the metrics port (before any worker starts); None if it cannot."""
        from .metrics import listen_gathered  # the supervisor alone needs prometheus_client

        try:
            return await listen_gathered(self.stats, self.host, self.metrics_port or 0)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (
                exc.strerror or str(exc)
            )
            print(f"error: cannot listen on {self.host}:{self.metrics_port} for metrics: "
                  f"{reason}", file=sys.stderr)
            return None

    async def stats(self) -> list[tuple[dict[str, str], ServerStats]]:
        """The snapshot of every worker that answers, labelled ``worker="<slot>"``."""
        slots = [slot for slot in self._slots if slot.worker is not None]
        found = await asyncio.gather(*(
            slot.worker.stats(STATS_TIMEOUT) for slot in slots if slot.worker is not None
        ))
        return [
            ({"worker": str(slot.index)}, stats)
            for slot, stats in zip(slots, found, strict=True)
            if stats is not None
        ]

    async def _supervise(
        self, stop: asyncio.Future[str], force: asyncio.Future[str],
        exporter: MetricsListener | None = None,
    ) -> int:
        starting = asyncio.ensure_future(self._start_all())
        await asyncio.wait({starting, stop, self._fatal}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal (or a failing restart) during the start-up
            starting.cancel()
            await asyncio.wait({starting})
        elif starting.exception() is not None:
            await self._stop_workers(force)
            print(f"error: {starting.exception()}", file=sys.stderr)
            return 1
        else:
            print(f"listening on {starting.result()} ({self.count} workers)", flush=True)
            if exporter is not None:
                print(f"metrics on {exporter.url} (all workers)", flush=True)
            await asyncio.wait({stop, self._fatal}, return_when=asyncio.FIRST_COMPLETED)
        if self._fatal.done():
            await self._stop_workers(force)
            print(f"error: {self._fatal.result()}", file=sys.stderr)
            return 1
        print(f"shutting down ({stop.result()})", flush=True)
        statuses = await self._stop_workers(force)
        if statuses is None:
            return 1
        unclean = [status for status in statuses if status != 0]
        if unclean:
            print(f"error: {len(unclean)} of {len(statuses)} worker(s) did not stop cleanly "
                  f"({', '.join(describe_exit(status) for status in unclean)})", file=sys.stderr)
            return 1
        return 0

    async def _start_all(self) -> str:
        """Start the first worker, then the others; the URL they listen on.

        Raises:
            StartFailed: a worker could not start (the message says why).
        """
        first = self._add_slot()
        url = await first.first
        others = [self._add_slot() for _ in range(1, self.count)]
        await asyncio.gather(*(slot.first for slot in others))
        return url

    def _add_slot(self) -> _Slot:
        slot = _Slot(len(self._slots))
        self._slots.append(slot)
        slot.task = asyncio.ensure_future(self._keep(slot))
        return slot

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "neffos", *self.command(self.port, theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                process_group=0,  # terminal signals reach the supervisor only
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=STATS_LIMIT)
        log.info("worker %d started", proc.pid)
        return _Worker(proc, reader, writer)

    async def _keep(self, slot: _Slot) -> int:
        """Keep a worker running in ``slot`` until the workers stop; its last exit status."""
        try:
            return await self._keep_running(slot)
        except Exception as exc:  # e.g. no process or file descriptor left to start one
            text = f"cannot start a worker: {exc}"
            if not slot.first.done():
                slot.first.set_exception(StartFailed(text))
                slot.first.exception()  # retrieved here, raised where it is awaited
            elif not self._fatal.done():
                self._fatal.set_result(text)
            return 1

    async def _keep_running(self, slot: _Slot) -> int:
        delay = RESTART_DELAY
        failures = 0  # restarted workers in a row that failed to start
        replacing: int | None = None  # the pid of the worker that died
        loop = asyncio.get_running_loop()
        while True:
            worker = slot.worker = await self._spawn()
            if self._stopping.is_set():  # stopping began while it was being started
                worker.signal(signal.SIGTERM)
            url = await worker.ready
            ready_at = loop.time()
            if url is None:
                returncode = await worker.wait()
                text = worker.error or (
                    f"worker {worker.pid} exited ({describe_exit(returncode)}) before it "
                    "listened; its output is above"
                )
                if not slot.first.done():
                    slot.first.set_exception(StartFailed(text))
                    slot.first.exception()  # retrieved here, raised where it is awaited
                    return returncode
                if self._stopping.is_set():
                    return returncode
                failures += 1
                if failures >= START_FAILURES:
                    if not self._fatal.done():
                        self._fatal.set_result(
                            f"a restarted worker failed to start {failures} times in a row: {text}"
                        )
                    return returncode
                log.warning("worker %d could not start (%s); trying again in %.1fs",
                            worker.pid, text, delay)
            else:
                failures = 0
                if not slot.first.done():
                    slot.first.set_result(url)
                elif replacing is not None:
                    print(f"worker {worker.pid} ready (replacing {replacing})", flush=True)
                returncode = await worker.wait()
                if self._stopping.is_set():
                    return returncode
                if loop.time() - ready_at >= HEALTHY_AFTER:
                    delay = RESTART_DELAY
                log.warning("worker %d died (%s); restarting it in %.1fs",
                            worker.pid, describe_exit(returncode), delay)
                replacing = worker.pid
            with contextlib.suppress(TimeoutError):  # the backoff, cut short by a stop
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return returncode
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def _stop_workers(self, force: asyncio.Future[str]) -> list[int] | None:
        """SIGTERM every worker and wait; kill them past the deadline or on ``force``.

        Returns the exit statuses of the last worker of each slot, or None if
        some had to be killed (after printing why).
        """
        self._stopping.set()
        for slot in self._slots:
            if slot.worker is not None:
                slot.worker.signal(signal.SIGTERM)
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        ending: asyncio.Future[list[int]] = asyncio.gather(*tasks)
        deadline = self.shutdown_timeout + SHUTDOWN_MARGIN
        waiting: set[asyncio.Future[Any]] = {ending, force}
        await asyncio.wait(waiting, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        if ending.done():
            return ending.result()
        left = [
            slot.worker for slot in self._slots
            if slot.worker is not None and slot.worker.proc.returncode is None
        ]
        why = f"a second {force.result()}" if force.done() else (
            f"the shutdown deadline ({self.shutdown_timeout:g}s + {SHUTDOWN_MARGIN:g}s) passed"
        )
        print(f"error: {why}; killing {len(left)} worker(s)", file=sys.stderr)
        for worker in left:
            worker.signal(signal.SIGKILL)
        await asyncio.wait({ending})
        return None


async def supervise(
    command: Callable[[int, int], list[str]], count: int, host: str, port: int,
    shutdown_timeout: float, metrics_port: int | None = None,
) -> int:
    """Run a :class:`Supervisor` until it stops; its exit status."""
    return await Supervisor(command, count, host, port, shutdown_timeout, metrics_port).run()
