"""Prometheus metrics of a neffos server (the ``metrics`` extra: ``prometheus_client``).

The engine never calls ``prometheus_client``: a server counts with plain
integers (:mod:`neffos.stats`) and :class:`NeffosCollector` turns a
:attr:`neffos.Server.stats` snapshot into metric families when a scrape asks
for them. So the cost of metrics is paid per scrape, not per message.

Ways to serve them::

    neffos serve app:server --metrics-port 9100            # the command: own port
    neffos serve app:server --path /echo --metrics-path /metrics   # the same port

    register(server)                                        # into prometheus_client's REGISTRY
    await server.listen(..., path="/echo", pages=page(server))     # next to the endpoint
    listener = await listen(server, "127.0.0.1", 9100)      # a listener of its own
    app = asgi_app(server)                                  # an ASGI app (mount it)

Several servers, or several processes reporting to one (a supervisor of
workers), share one collector through its ``source``: a function returning
``(labels, stats)`` pairs, e.g. ``({"worker": "1"}, stats)``; every sample
gets those labels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "neffos.metrics needs prometheus_client: pip install 'neffos[metrics]'"
    ) from exc

from . import __version__
from ._http import HttpAnswer, Request, plain_text, serve_front
from .server import Pages, Server
from .stats import ServerStats

__all__ = [
    "Gather",
    "MetricsListener",
    "NeffosCollector",
    "Source",
    "asgi_app",
    "collector",
    "exposition",
    "listen",
    "listen_gathered",
    "page",
    "register",
]

#: what a collector reads at each scrape: ``(labels, stats)`` pairs, the same
#: label names in each
Source = Callable[[], Iterable[tuple[Mapping[str, str], ServerStats]]]


class NeffosCollector(Collector):
    """The ``neffos_*`` metrics of one or more servers, read at scrape time.

    Args:
        source: returns the snapshots to report, each with its own labels
            (e.g. ``[({}, server.stats)]``; see :func:`collector`).
    """

    def __init__(self, source: Source) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        # The names, without reading the servers (prometheus_client calls this
        # when the collector is registered, to refuse duplicate names).
        return list(_families([]))

    def collect(self) -> Iterable[Metric]:
        return list(_families(list(self.source())))


def collector(server: Server, *, labels: Mapping[str, str] | None = None) -> NeffosCollector:
    """A collector of ``server``'s metrics; ``labels`` are added to every sample."""
    fixed = dict(labels or {})
    return NeffosCollector(lambda: [(fixed, server.stats)])


def register(
    server: Server,
    registry: CollectorRegistry = REGISTRY,
    *,
    labels: Mapping[str, str] | None = None,
) -> NeffosCollector:
    """Register ``server``'s metrics in ``registry`` (default: prometheus_client's own).

    Raises:
        ValueError: the registry has neffos metrics already (from another
            server: give each its ``labels`` in one collector instead, see
            :class:`NeffosCollector`).
    """
    made = collector(server, labels=labels)
    registry.register(made)
    return made


def _registry_of(what: Server | CollectorRegistry) -> CollectorRegistry:
    if isinstance(what, Server):
        registry = CollectorRegistry(auto_describe=True)
        register(what, registry)
        return registry
    return what


def exposition(registry: CollectorRegistry, accept: str | None = None) -> HttpAnswer:
    """The metrics of ``registry`` as an HTTP answer, in the format ``accept`` asks for
    (the Prometheus text format, or OpenMetrics)."""
    encode, content_type = choose_encoder(accept or "")
    return 200, [("Content-Type", content_type)], encode(registry)


def page(
    what: Server | CollectorRegistry = REGISTRY,
    path: str = "/metrics",
    *,
    other: Pages | None = None,
) -> Pages:
    """A ``pages`` function for :meth:`neffos.Server.listen`: the metrics on ``path``.

    ``what`` is a server (its metrics alone) or a registry (default: the
    process-wide one, with whatever else is registered in it). Requests for
    other paths go to ``other`` (or get 404).
    """
    registry = _registry_of(what)

    def answer(request: Request) -> HttpAnswer | None:
        if request.path != path:
            return other(request) if other is not None else None
        refused = _refused_method(request)
        if refused is not None:
            return refused
        return _for_method(request, exposition(registry, request.headers.get("Accept")))

    return answer


def _refused_method(request: Request) -> HttpAnswer | None:
    if request.method not in ("GET", "HEAD"):
        return plain_text(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
    return None


def _for_method(request: Request, answer: HttpAnswer) -> HttpAnswer:
    status, headers, body = answer
    return status, headers, b"" if request.method == "HEAD" else body


def asgi_app(what: Server | CollectorRegistry = REGISTRY) -> Any:
    """An ASGI application serving the metrics (mount it, e.g. on ``/metrics``)."""
    return make_asgi_app(_registry_of(what))


class _MetricsRouter:
    """A plain HTTP listener's routes: the metrics page, 404 for anything else."""

    def __init__(
        self, answer: Callable[[Request], HttpAnswer | Awaitable[HttpAnswer] | None], path: str
    ) -> None:
        self.answer = answer
        self.metrics_path = path

    @property
    def path(self) -> str | None:
        return self.metrics_path

    @property
    def handshake_timeout(self) -> float:
        return 10.0  # seconds to send a request head (and for a gathered answer)

    def route(self, request: Request) -> HttpAnswer | Awaitable[HttpAnswer] | None:
        return self.answer(request) or plain_text(404, "404 page not found")


def _no_upgrade(
    router: _MetricsRouter, transport: asyncio.Transport, head: bytes, request: Request
) -> None:
    transport.abort()  # never called: every request gets an answer


class MetricsListener:
    """A listening socket that serves the metrics over plain HTTP (:func:`listen`)."""

    def __init__(self, aio_server: asyncio.Server, path: str) -> None:
        self._aio_server = aio_server
        address = aio_server.sockets[0].getsockname()
        #: the bound address and port (useful with ``port=0``)
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        self.path = path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    async def close(self) -> None:
        """Stop listening and wait until the socket is closed.

        On asyncio's loop from Python 3.13, clients still connected are closed
        too. On 3.12 (whose ``wait_closed`` waits for them, unlike 3.11's and
        uvloop's) a client that sends nothing can make this wait until its
        request times out (10 s).
        """
        self._aio_server.close()
        close_clients = getattr(self._aio_server, "close_clients", None)
        if close_clients is not None:  # Python 3.13+
            close_clients()
        await self._aio_server.wait_closed()


async def listen(
    what: Server | CollectorRegistry = REGISTRY,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    path: str = "/metrics",
    **options: Any,
) -> MetricsListener:
    """Serve the metrics on ``http://host:port/path`` from this event loop.

    Unlike ``prometheus_client.start_http_server`` (a thread), the answers are
    made in the loop that runs the server. Extra ``options`` (``ssl=``,
    ``reuse_port=``...) go to ``loop.create_server``.

    Raises:
        OSError: the address cannot be bound.
    """
    router = _MetricsRouter(page(what, path), path)
    aio_server = await serve_front(router, _no_upgrade, host, port, **options)
    return MetricsListener(aio_server, path)


#: what :func:`listen_gathered` awaits at each scrape: ``(labels, stats)`` pairs
Gather = Callable[[], Awaitable[Iterable[tuple[Mapping[str, str], ServerStats]]]]


async def listen_gathered(
    gather: Gather,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    path: str = "/metrics",
    **options: Any,
) -> MetricsListener:
    """Serve metrics that take I/O to collect on ``http://host:port/path``.

    Each scrape awaits ``gather()`` for the snapshots to report (e.g. asking
    other processes for theirs, as ``neffos serve --workers N --metrics-port``
    does, with a ``worker`` label each) and answers with those alone.

    Raises:
        OSError: the address cannot be bound.
    """

    async def scrape(request: Request) -> HttpAnswer:
        snapshots = list(await gather())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NeffosCollector(lambda: snapshots))
        return _for_method(request, exposition(registry, request.headers.get("Accept")))

    def answer(request: Request) -> HttpAnswer | Awaitable[HttpAnswer] | None:
        if request.path != path:
            return None
        return _refused_method(request) or scrape(request)

    router = _MetricsRouter(answer, path)
    aio_server = await serve_front(router, _no_upgrade, host, port, **options)
    return MetricsListener(aio_server, path)


# -- the metric families --------------------------------------------------------------


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


def _families(
    snapshots: list[tuple[Mapping[str, str], ServerStats]],
) -> Iterator[Metric]:
    """Every neffos metric family with one sample set per snapshot."""
    fixed = list(snapshots[0][0]) if snapshots else []

    def counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=[*fixed, *labels])

    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*fixed, *labels])

    def each(
        family: CounterMetricFamily | GaugeMetricFamily,
        values: Callable[[ServerStats], Iterable[tuple[tuple[str, ...], float]]],
    ) -> CounterMetricFamily | GaugeMetricFamily:
        for labels, stats in snapshots:
            base = [labels.get(name, "") for name in fixed]
            for own, value in values(stats):
                family.add_metric([*base, *own], value)
        return family

    yield each(
        gauge("neffos_build_info", "The neffos version serving (always 1)", "version"),
        lambda s: [((__version__,), 1)],
    )
    yield each(
        gauge("neffos_connections", "Open WebSocket connections"),
        lambda s: [((), s.connections)],
    )
    yield each(
        counter("neffos_connections_accepted", "WebSocket connections accepted"),
        lambda s: [((), s.connections_accepted)],
    )
    yield each(
        gauge("neffos_namespace_connections",
              "Connections connected to each namespace", "namespace"),
        lambda s: [((name,), n) for name, n in sorted(s.namespaces.items())],
    )
    yield each(
        counter("neffos_namespace_connects", "Namespace connections made (by either side)"),
        lambda s: [((), s.namespace_connects)],
    )
    yield each(
        gauge("neffos_rooms", "Rooms with at least one member"),
        lambda s: [((), s.rooms)],
    )
    yield each(
        gauge("neffos_room_members", "Room memberships (a connection in 3 rooms counts 3)"),
        lambda s: [((), s.room_members)],
    )
    yield each(
        counter("neffos_room_joins", "Rooms joined (by either side)"),
        lambda s: [((), s.room_joins)],
    )
    yield each(
        counter("neffos_messages", "neffos messages received (in) and written (out), "
                "broadcast deliveries and the handshake included", "direction"),
        lambda s: [(("in",), s.messages_in), (("out",), s.messages_out)],
    )
    yield each(
        counter("neffos_error_replies", "Error answers written to peers"),
        lambda s: [((), s.error_replies)],
    )
    yield each(
        counter("neffos_asks_sent", "Asks sent to clients (conn.ask, ns.ask, Server.ask)"),
        lambda s: [((), s.asks_sent)],
    )
    yield each(
        counter("neffos_asks_answered", "Asks sent to clients that were answered"),
        lambda s: [((), s.asks_answered)],
    )
    latency = HistogramMetricFamily(
        "neffos_ask_duration_seconds",
        "Time from sending an ask to its answer (answered asks)",
        labels=fixed,
    )
    for labels, stats in snapshots:
        h = stats.ask_latency
        latency.add_metric(
            [labels.get(name, "") for name in fixed],
            [(_le(bound), n) for bound, n in h.buckets],
            h.sum,
        )
    yield latency
    yield each(
        counter("neffos_errors", "Errors by kind: handler (a handler raised unexpectedly), "
                "bad_frame, limit, ask_timeout, connect_refused, handshake_timeout", "kind"),
        lambda s: [((kind,), n) for kind, n in s.errors.items()],
    )
    yield each(
        counter("neffos_connections_closed",
                "Connections closed, by close code (1006: dropped without a close frame; "
                "other: codes past the first 32)", "code"),
        lambda s: [((str(code) if code else "other",), n) for code, n in sorted(s.closes.items())],
    )
    yield each(
        counter("neffos_slow_consumers_dropped",
                "Slow readers dropped, by the limit they passed", "limit"),
        lambda s: list(((limit,), n) for limit, n in s.slow_consumers.items()),
    )
    yield each(
        counter("neffos_upgrades_refused",
                "HTTP requests on the endpoint answered without an upgrade, by status", "status"),
        lambda s: [((str(status),), n) for status, n in sorted(s.upgrades_refused.items())],
    )
    yield each(
        counter("neffos_bus_published", "Messages published to the bus", "exchange"),
        lambda s: [((b.name,), b.published) for b in s.bus],
    )
    yield each(
        counter("neffos_bus_received", "Messages received from the bus", "exchange"),
        lambda s: [((b.name,), b.received) for b in s.bus],
    )
    yield each(
        counter("neffos_bus_lost", "Bus messages lost: publications that failed (publish), "
                "messages the broker client dropped (receive)", "exchange", "direction"),
        lambda s: [
            item
            for b in s.bus
            for item in (((b.name, "publish"), b.publish_failed),
                         ((b.name, "receive"), b.receive_dropped))
        ],
    )
    yield each(
        counter("neffos_bus_malformed", "Bus payloads that were not neffos frames", "exchange"),
        lambda s: [((b.name,), b.malformed) for b in s.bus],
    )
    yield each(
        counter("neffos_bus_reconnections", "Reconnections to the broker", "exchange"),
        lambda s: [((b.name,), b.reconnects) for b in s.bus],
    )
