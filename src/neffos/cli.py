"""``neffos serve MODULE:ATTR``: run an application's server from the command line.

The command imports ``MODULE``, takes ``ATTR`` (a :class:`~neffos.Server`, or a
plain or async function returning one), applies the options (bus, TLS, allowed
origins) and listens. On SIGTERM or SIGINT it shuts down gracefully: it stops
accepting, closes every connection with 1001 (going away) and lets what they
were sending drain, closes the bus last, and exits 0; past
``--shutdown-timeout`` it gives up and exits 1. A second signal exits at once.

Failures a user can fix (module or attribute not found, not a server, port in
use, broker unreachable, missing extra, bad certificate) are one line on stderr
and exit status 1; errors raised by the application's own code keep their
traceback.

With ``--workers N`` (N > 1) the command supervises N processes that share the
port (see :mod:`neffos.workers`); each of them runs this same command with the
hidden option ``--worker-fd``, which makes it report to the supervisor instead
of printing its start-up lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib
import inspect
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import transports, workers
from .exchange.base import StackExchange
from .listener import Listener
from .server import Pages, Server

if TYPE_CHECKING:
    from .metrics import MetricsListener

__all__ = ["CommandError", "add_command", "load_server"]

log = logging.getLogger("neffos.cli")

DESCRIPTION = """\
Serve an application's neffos server. MODULE:ATTR names it the way uvicorn does:
MODULE is imported (from the current directory too) and ATTR is a neffos.Server,
or a function (plain or async) that returns one, e.g. `neffos serve chat:server`
or `neffos serve chat:make_server`.

Prints `listening on ws://HOST:PORT/PATH` once it listens. SIGTERM or Ctrl-C
stops it gracefully: no new connections, every connection closed with 1001
(going away) once what it was sending is flushed, the bus closed last, exit 0.

--workers N runs N processes sharing the port (SO_REUSEPORT; Linux, macOS),
restarts one that dies and stops them all on SIGTERM or Ctrl-C. Each worker has
its own connections, so several workers need a bus (--redis or --nats, or a
stack exchange set by the application) for broadcasts, rooms, to= and
server.ask to reach every client.
"""

NO_BUS = (
    "--workers {n} needs a bus: each worker holds only its own connections, so broadcasts, "
    "rooms, to= and server.ask would reach one worker's clients; add --redis URL or --nats URL "
    "(or call server.use_stack_exchange() in the application)"
)

LEVELS = ("critical", "error", "warning", "info", "debug")
LOOPS = ("auto", "asyncio", "uvloop")


class CommandError(Exception):
    """A failure the user can fix, reported as one line (no traceback)."""


def add_command(add_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``serve`` to ``python -m neffos`` (``add_parser`` of the subparsers)."""
    serve = add_parser(
        "serve", help="serve an application's neffos server (MODULE:ATTR)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("app", metavar="MODULE:ATTR", help="the server, or a function making it")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    serve.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one (%(default)s)"
    )
    serve.add_argument(
        "--path", default=None, help="URL path of the endpoint, e.g. /echo (default: any path)"
    )
    serve.add_argument(
        "--transport", choices=transports.NAMES, default=None,
        help="WebSocket library (default: the server's own, normally picows)",
    )
    bus = serve.add_mutually_exclusive_group()
    bus.add_argument(
        "--redis", metavar="URL",
        help="share connections with other servers over Redis (redis://host:port/db or host:port)",
    )
    bus.add_argument(
        "--nats", metavar="URL", help="share connections with other servers over NATS (nats://...)"
    )
    serve.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss://")
    serve.add_argument("--keyfile", help="TLS private key (PEM; default: in --certfile)")
    serve.add_argument(
        "--allowed-origin", action="append", metavar="ORIGIN", dest="allowed_origins",
        help="an Origin browsers may connect from (repeat it; others get 403)",
    )
    serve.add_argument(
        "--loop", choices=LOOPS, default="auto",
        help="event loop: uvloop (neffos[uvloop]), asyncio, or auto: uvloop when it is "
        "installed (%(default)s)",
    )
    serve.add_argument(
        "--log-level", choices=LEVELS, default="warning",
        help="what the neffos loggers print on stderr (%(default)s)",
    )
    serve.add_argument(
        "--shutdown-timeout", type=float, default=10.0, metavar="SECONDS",
        help="how long a graceful shutdown may take before giving up (%(default)s)",
    )
    serve.add_argument(
        "--workers", type=worker_count, default=1, metavar="N",
        help="processes sharing the port; 'auto': one per core; more than 1 needs a bus "
             "(%(default)s)",
    )
    # a worker of `--workers N`: its end of the supervisor's control socket
    serve.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (0 picks a free port; "
        "needs neffos[metrics])",
    )
    serve.add_argument(
        "--metrics-path", metavar="PATH",
        help="serve Prometheus metrics on this path of the endpoint's own port, e.g. /metrics "
        "(needs --path; needs neffos[metrics])",
    )
    serve.set_defaults(run=run)


def worker_count(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` (the cores this process may use)."""
    if text == "auto":
        return workers.cpu_count()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (or 'auto')")
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} workers: give 1 or more (or 'auto')")
    return count


def worker_command(args: argparse.Namespace, port: int, fd: int) -> list[str]:
    """The arguments of one worker of ``args`` (after ``python -m neffos``)."""
    command = [
        "serve", args.app, "--host", args.host, "--port", str(port),
        "--log-level", args.log_level, "--loop", args.loop,
        "--shutdown-timeout", str(args.shutdown_timeout),
        "--workers", str(args.workers), "--worker-fd", str(fd),
    ]
    for option, value in (
        ("--path", args.path), ("--transport", args.transport), ("--redis", args.redis),
        ("--nats", args.nats), ("--certfile", args.certfile), ("--keyfile", args.keyfile),
    ):
        if value is not None:
            command += [option, value]
    for origin in args.allowed_origins or ():
        command += ["--allowed-origin", origin]
    return command


def run(args: argparse.Namespace) -> int:
    """The ``serve`` command; its exit status."""
    if args.keyfile and not args.certfile:
        print("error: --keyfile needs --certfile", file=sys.stderr)
        return 2
    if args.metrics_path is not None and (
        not args.path or not args.metrics_path.startswith("/") or args.metrics_path == args.path
    ):
        print("error: --metrics-path needs --path, and another path starting with /",
              file=sys.stderr)
        return 2
    if args.workers > 1 and args.metrics_path:
        print("error: with --workers, a request on the endpoint's port reaches one worker "
              "at random: use --metrics-port (the supervisor serves every worker's metrics "
              "there)", file=sys.stderr)
        return 2
    channel = None if args.worker_fd is None else workers.WorkerChannel(args.worker_fd)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s" if channel is None else
        "%(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    try:
        if channel is None and args.workers > 1:
            problem = workers.reuse_port_problem()
            if problem is not None:
                raise CommandError(problem)
            if args.metrics_port is not None:
                need_metrics()
            loop_factory(args.loop)  # a missing uvloop fails here, not in every worker
            return asyncio.run(workers.supervise(
                lambda port, fd: worker_command(args, port, fd), args.workers, args.host,
                args.port, args.shutdown_timeout, args.metrics_port,
            ))
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            return runner.run(serve(args, channel))
    except CommandError as exc:
        if channel is not None:  # the supervisor prints it (once, for all workers)
            channel.error(str(exc))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 1
    finally:
        if channel is not None:
            channel.close()


async def serve(args: argparse.Namespace, channel: workers.WorkerChannel | None = None) -> int:
    """Serve until a signal (or, for a worker, until its supervisor is gone)."""
    # The signal handlers come first: a SIGTERM right after "listening on"
    # must find them in place (it is remembered during the start-up).
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[str] = loop.create_future()
    force: asyncio.Future[str] = loop.create_future()

    def stopping(why: str) -> None:
        target = force if stop.done() else stop
        if not target.done():
            target.set_result(why)

    def on_signal(signum: int) -> None:
        stopping(signal.Signals(signum).name)

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except NotImplementedError:  # Windows: a plain handler, into the loop
            signal.signal(signum, lambda n, _: loop.call_soon_threadsafe(on_signal, n))
    if channel is not None:  # a supervisor that exited (even killed) stops its workers
        channel.watch(lambda: stopping("supervisor gone"))
    try:
        server, listener, exporter = await start(args, channel)
        try:
            return await run_until_stopped(args, server, listener, stop, force, channel)
        finally:
            if exporter is not None:
                await exporter.close()
    finally:
        for signum in signals:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
        if channel is not None:
            channel.unwatch()


async def start(
    args: argparse.Namespace, channel: workers.WorkerChannel | None = None
) -> tuple[Server, Listener, MetricsListener | None]:
    """Load the server, apply the options, connect the bus and listen (on
    ``--metrics-port`` too, before saying it listens).

    A worker (``channel``) listens with ``SO_REUSEPORT`` and tells its
    supervisor, instead of printing ``listening on``.

    Raises:
        CommandError: any of it failed for a reason the user can fix.
    """
    server = await load_server(args.app)
    pages = metrics_page(server, args.metrics_path) if args.metrics_path else None
    if args.allowed_origins:
        server.allowed_origins = frozenset(args.allowed_origins)
    if args.redis or args.nats:
        server.use_stack_exchange(make_exchange(args.redis, args.nats))
    if args.workers > 1 and not server.stack_exchanges:
        raise CommandError(NO_BUS.format(n=args.workers))
    context = tls_context(args.certfile, args.keyfile) if args.certfile else None
    try:
        await server.start()  # connects the bus
    except ConnectionError as exc:
        if args.redis and "://" in args.redis:  # the exchange's text names its default address
            detail = str(exc).partition("): ")[2]
            raise CommandError(f"cannot reach Redis at {args.redis}: {detail}")
        raise CommandError(str(exc))
    try:
        options: dict[str, Any] = {"ssl": context} if context is not None else {}
        if channel is not None:
            options["reuse_port"] = True  # the port its supervisor reserved
        listener = await server.listen(
            args.host, args.port, path=args.path, transport=args.transport, pages=pages,
            **options,
        )
    except ImportError as exc:
        await server.close()
        raise CommandError(str(exc))
    except OSError as exc:
        await server.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {reason or exc}")
    exporter = await start_metrics(args, server, listener)
    if channel is not None:
        channel.report = lambda: server.stats  # the supervisor's metrics ask for it
        channel.ready(listener.url)
    else:
        print(f"listening on {listener.url}", flush=True)
    log.info("serving %s on %s (%s)", args.app, listener.url, listener.transport)
    if args.metrics_path:
        scheme = "https" if listener.tls else "http"
        base = listener.url.partition("://")[2].partition("/")[0]
        print(f"metrics on {scheme}://{base}{args.metrics_path}", flush=True)
    if exporter is not None:
        print(f"metrics on {exporter.url}", flush=True)
    return server, listener, exporter


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``--loop``: what makes the event loop of a server process (``None``: asyncio's).

    Raises:
        CommandError: ``uvloop`` was asked for and is not installed.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "auto":
            return None
        if sys.platform == "win32":
            raise CommandError("--loop uvloop: uvloop does not run on Windows")
        raise CommandError("--loop uvloop needs uvloop: pip install 'neffos[uvloop]'")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def need_metrics() -> None:
    """Check that ``neffos.metrics`` can be imported.

    Raises:
        CommandError: prometheus_client is missing (the message names the extra).
    """
    try:
        from . import metrics  # noqa: F401
    except ImportError as exc:
        raise CommandError(str(exc))


def metrics_page(server: Server, path: str) -> Pages:
    """``--metrics-path``: the metrics page served next to the endpoint.

    Raises:
        CommandError: prometheus_client is missing (the message names the extra).
    """
    try:
        from . import metrics
    except ImportError as exc:
        raise CommandError(str(exc))
    return metrics.page(server, path)


async def start_metrics(
    args: argparse.Namespace, server: Server, listener: Listener
) -> MetricsListener | None:
    """``--metrics-port``: a plain HTTP listener on ``--host`` for the metrics.

    Raises:
        CommandError: prometheus_client is missing, or the port cannot be bound
            (the server and its listener are closed first).
    """
    if args.metrics_port is None:
        return None
    try:
        from . import metrics

        exporter = await metrics.listen(server, args.host, args.metrics_port)
    except (ImportError, OSError) as exc:
        await listener.close()
        await server.close()
        if isinstance(exc, ImportError):
            raise CommandError(str(exc))
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CommandError(
            f"cannot listen on {args.host}:{args.metrics_port} for metrics: {reason or exc}"
        )
    return exporter


async def run_until_stopped(
    args: argparse.Namespace, server: Server, listener: Listener,
    stop: asyncio.Future[str], force: asyncio.Future[str],
    channel: workers.WorkerChannel | None = None,
) -> int:
    """Serve until ``stop`` (the first signal), then shut down; the exit status.

    ``force`` (a second signal) or ``--shutdown-timeout`` cut the shutdown short.
    A worker (``channel``) leaves the ``shutting down`` line to its supervisor.
    """
    name = await stop
    if channel is None:
        print(f"shutting down ({name})", flush=True)
    log.info("%s: closing %d connection(s)", name, server.get_total_connections())
    # The listener first (no new connections), then the connections with 1001
    # and then the bus (Server.close does both, in that order).
    # Running handlers get half the deadline to finish, so their replies go out.
    closing = asyncio.gather(listener.close(), server.close(drain=args.shutdown_timeout / 2))
    waiting: set[asyncio.Future[Any]] = {closing, force}
    done, _ = await asyncio.wait(
        waiting, timeout=args.shutdown_timeout, return_when=asyncio.FIRST_COMPLETED,
    )
    if closing in done:
        closing.result()
        return 0
    closing.cancel()
    await asyncio.wait({closing}, timeout=1)  # let the cancellation run (never raises)
    if closing.done() and not closing.cancelled():
        closing.exception()  # retrieved: no "exception was never retrieved" on exit
    left = server.get_total_connections()
    why = f"a second {force.result()}" if force.done() else (
        f"the shutdown deadline ({args.shutdown_timeout:g}s) passed"
    )
    dropping = f"dropping {left} connection(s)" if left else "stopping now"
    who = "" if channel is None else f"worker {os.getpid()}: "
    print(f"error: {who}{why}; {dropping}", file=sys.stderr)
    bus = server.bus_node
    if bus is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await bus.close()
    return 1


async def load_server(spec: str) -> Server:
    """The server named by ``MODULE:ATTR`` (calling, and awaiting, a factory).

    Raises:
        CommandError: the module or attribute is missing, or it is no server.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CommandError(f"{spec!r} is not MODULE:ATTR (e.g. chat:server)")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the console script
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise CommandError(f"no module named {module_name!r} (from {spec!r})")
        raise CommandError(f"importing {module_name!r} failed: {exc}")
    except ImportError as exc:  # e.g. a missing extra, which names itself
        raise CommandError(f"importing {module_name!r} failed: {exc}")
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(target, Server) and callable(target) and not isinstance(target, type):
        target = target()
        if inspect.isawaitable(target):
            target = await target
    if not isinstance(target, Server):
        raise CommandError(
            f"{spec} is {type(target).__name__!r}, not a neffos.Server "
            "(nor a function returning one)"
        )
    return target


def make_exchange(redis: str | None, nats: str | None) -> StackExchange:
    """The Redis or NATS exchange of ``--redis``/``--nats``.

    Raises:
        CommandError: its client library is missing (the message names the extra).
    """
    try:
        if redis:
            from .exchange.redis import RedisStackExchange

            return RedisStackExchange(url=redis) if "://" in redis else RedisStackExchange(redis)
        from .exchange.nats import NatsStackExchange

        return NatsStackExchange(nats or "")
    except ImportError as exc:
        raise CommandError(str(exc))


def tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """A server TLS context from PEM files.

    Raises:
        CommandError: a file is missing or is not a certificate/key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        files = certfile + (f", {keyfile}" if keyfile else "")
        raise CommandError(f"cannot load the TLS certificate ({files}): {exc.strerror or exc}")
    return context
