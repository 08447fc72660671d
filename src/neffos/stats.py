"""What a server counts about itself, and the snapshot it is read as.

The engine counts with plain integers on one :class:`Counters` object that a
server shares with its connections (through their :class:`~neffos.config.Config`):
an increment is an attribute add, done at coarse points (a message in or out,
a close, an ask, an error), never a call into a metrics library. Gauges (open
connections, namespaces, rooms) are not counted at all: they are read from
the server's indexes when a snapshot is taken.

:meth:`neffos.Server.stats` returns a :class:`ServerStats` snapshot: plain
numbers, usable without any metrics library. :mod:`neffos.metrics` turns it
into Prometheus metrics at scrape time.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import LimitExceeded

if TYPE_CHECKING:
    from .exchange.base import StackExchange

__all__ = [
    "ASK_BUCKETS",
    "BusStats",
    "Counters",
    "Histogram",
    "ServerStats",
    "from_json",
    "snapshot",
    "to_json",
]

#: upper bounds (seconds) of the ask latency buckets; one more bucket is +Inf
ASK_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: distinct close codes counted one by one; further codes are counted together
#: as code 0 ("other"), so that a peer choosing codes cannot grow the metrics
MAX_CLOSE_CODES = 32
#: HTTP statuses counted one by one (``before_upgrade`` may choose any), likewise
MAX_STATUSES = 32


class Counters:
    """The counters of one server (or client), shared by all its connections.

    Every attribute is a count since the server was made; the engine adds to
    them in place. Read them through :meth:`neffos.Server.stats`.
    """

    __slots__ = (
        "ask_buckets",
        "ask_seconds",
        "ask_timeouts",
        "asks_answered",
        "asks_sent",
        "bad_frames",
        "closes",
        "connect_refusals",
        "connections_accepted",
        "error_replies",
        "handler_errors",
        "handshake_timeouts",
        "limit_refusals",
        "messages_in",
        "messages_out",
        "namespace_connects",
        "room_joins",
        "send_buffer_drops",
        "upgrades_refused",
        "write_timeout_drops",
    )

    def __init__(self) -> None:
        #: WebSocket connections accepted (made into connections)
        self.connections_accepted = 0
        #: neffos messages received (the handshake's hello included)
        self.messages_in = 0
        #: neffos messages written (the handshake's answer and broadcast deliveries included)
        self.messages_out = 0
        #: namespaces connected (by either side)
        self.namespace_connects = 0
        #: rooms joined (by either side)
        self.room_joins = 0
        #: asks sent to peers (``conn.ask``, ``ns.ask``, ``Server.ask``)
        self.asks_sent = 0
        #: of those, answered (with a reply or an error)
        self.asks_answered = 0
        #: of those, not answered within their timeout
        self.ask_timeouts = 0
        #: answered asks per latency bucket (:data:`ASK_BUCKETS`, then +Inf)
        self.ask_buckets = [0] * (len(ASK_BUCKETS) + 1)
        #: seconds answered asks waited, in total
        self.ask_seconds = 0.0
        #: error answers written to peers (a handler's error, a refused request)
        self.error_replies = 0
        #: handlers that raised an unexpected exception (logged at ERROR)
        self.handler_errors = 0
        #: frames that were not neffos messages (dropped)
        self.bad_frames = 0
        #: requests refused and connections closed by a limit (rooms, pending
        #: asks, queued frames)
        self.limit_refusals = 0
        #: connections refused by ``on_connect``
        self.connect_refusals = 0
        #: connections closed for not completing the handshake in time
        self.handshake_timeouts = 0
        #: slow readers dropped past ``send_buffer``
        self.send_buffer_drops = 0
        #: slow readers dropped past ``write_timeout``
        self.write_timeout_drops = 0
        #: closed connections by close code (0: any other code, see MAX_CLOSE_CODES)
        self.closes: dict[int, int] = {}
        #: HTTP requests answered without an upgrade, by status
        self.upgrades_refused: dict[int, int] = {}

    def limit(self, text: str) -> LimitExceeded:
        """Count a refusal by a limit; the error that says so."""
        self.limit_refusals += 1
        return LimitExceeded(text)

    def error_reply(self, sent: bool) -> None:
        """An error answer was written to a peer (``sent``), or could not be."""
        self.error_replies += sent
        self.messages_out += sent

    def closed(self, code: int) -> None:
        """A connection closed with ``code`` (1006: it dropped without a close frame)."""
        _count(self.closes, code, MAX_CLOSE_CODES)

    def refused(self, status: int) -> None:
        """An HTTP request on the endpoint was answered ``status`` instead of upgraded."""
        _count(self.upgrades_refused, status, MAX_STATUSES)

    def answered(self, seconds: float) -> None:
        """An ask was answered after ``seconds``."""
        self.asks_answered += 1
        self.ask_seconds += seconds
        self.ask_buckets[bisect.bisect_left(ASK_BUCKETS, seconds)] += 1


def _count(table: dict[int, int], key: int, limit: int) -> None:
    if key not in table and len(table) >= limit:
        key = 0
    table[key] = table.get(key, 0) + 1


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A latency histogram: ``buckets`` are (upper bound, cumulative count) pairs,
    the last one ``(inf, count)``."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


@dataclasses.dataclass(frozen=True)
class BusStats:
    """The counters of one stack exchange (see :class:`~neffos.exchange.base.ExchangeStats`)."""

    #: ``redis``, ``nats`` (the exchange's kind; ``redis-2`` for a second one...)
    name: str
    published: int
    #: publications lost (the broker was unreachable, a buffer was full)
    publish_failed: int
    received: int
    #: messages the broker client dropped before the node saw them (slow consumer)
    receive_dropped: int
    #: received payloads that were not neffos frames (dropped)
    malformed: int
    reconnects: int


@dataclasses.dataclass(frozen=True)
class ServerStats:
    """A snapshot of a server's numbers (:meth:`neffos.Server.stats`).

    Gauges are the state at the moment of the snapshot; everything else counts
    since the server was made (see :class:`Counters` for each one's meaning).
    """

    #: open connections
    connections: int
    connections_accepted: int
    #: namespace -> connections connected to it now
    namespaces: Mapping[str, int]
    #: rooms that have at least one member now
    rooms: int
    #: room memberships now (a connection in 3 rooms counts 3)
    room_members: int
    namespace_connects: int
    room_joins: int
    messages_in: int
    messages_out: int
    asks_sent: int
    asks_answered: int
    ask_latency: Histogram
    error_replies: int
    #: kind -> count: ``handler``, ``bad_frame``, ``limit``, ``ask_timeout``,
    #: ``connect_refused``, ``handshake_timeout``
    errors: Mapping[str, int]
    #: close code -> connections closed with it (0: other codes)
    closes: Mapping[int, int]
    #: ``send_buffer`` / ``write_timeout`` -> slow readers dropped
    slow_consumers: Mapping[str, int]
    #: HTTP status -> requests answered without an upgrade
    upgrades_refused: Mapping[int, int]
    #: one entry per stack exchange
    bus: tuple[BusStats, ...]


def snapshot(
    counters: Counters,
    connections: int,
    namespaces: Mapping[str, int],
    rooms: tuple[int, int],
    exchanges: Iterable[StackExchange],
) -> ServerStats:
    """A :class:`ServerStats` from a server's counters and the sizes of its indexes.

    ``rooms`` is (rooms with members, memberships).
    """
    c = counters
    cumulative = 0
    buckets = []
    for bound, n in zip((*ASK_BUCKETS, float("inf")), list(c.ask_buckets), strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    return ServerStats(
        connections=connections,
        connections_accepted=c.connections_accepted,
        namespaces=dict(namespaces),
        rooms=rooms[0],
        room_members=rooms[1],
        namespace_connects=c.namespace_connects,
        room_joins=c.room_joins,
        messages_in=c.messages_in,
        messages_out=c.messages_out,
        asks_sent=c.asks_sent,
        asks_answered=c.asks_answered,
        ask_latency=Histogram(tuple(buckets), c.asks_answered, c.ask_seconds),
        error_replies=c.error_replies,
        errors={
            "handler": c.handler_errors,
            "bad_frame": c.bad_frames,
            "limit": c.limit_refusals,
            "ask_timeout": c.ask_timeouts,
            "connect_refused": c.connect_refusals,
            "handshake_timeout": c.handshake_timeouts,
        },
        closes=dict(c.closes),
        slow_consumers={
            "send_buffer": c.send_buffer_drops,
            "write_timeout": c.write_timeout_drops,
        },
        upgrades_refused=dict(c.upgrades_refused),
        bus=_bus(exchanges),
    )


def _bus(exchanges: Iterable[StackExchange]) -> tuple[BusStats, ...]:
    found: list[BusStats] = []
    seen: dict[str, int] = {}
    for exchange in exchanges:
        kind = type(exchange).__name__.lower().removesuffix("stackexchange") or "exchange"
        seen[kind] = seen.get(kind, 0) + 1
        name = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
        s = exchange.stats
        found.append(BusStats(
            name=name,
            published=s.published,
            publish_failed=s.publish_failed,
            received=s.received,
            receive_dropped=s.receive_dropped,
            malformed=s.malformed,
            reconnects=s.reconnects,
        ))
    return tuple(found)


# -- a snapshot as text (a worker reporting to its supervisor) ---------------------------


def to_json(stats: ServerStats) -> str:
    """``stats`` as one line of JSON; :func:`from_json` reads it back."""
    data = dataclasses.asdict(stats)
    # JSON object keys are strings: the tables keyed by numbers go as pairs
    data["closes"] = list(stats.closes.items())
    data["upgrades_refused"] = list(stats.upgrades_refused.items())
    return json.dumps(data, separators=(",", ":"))  # the +Inf bucket is "Infinity"


def from_json(text: str | bytes) -> ServerStats:
    """The :class:`ServerStats` that :func:`to_json` wrote.

    Raises:
        ValueError: ``text`` is not such a snapshot.
    """
    try:
        data: dict[str, Any] = json.loads(text)
        latency = data.pop("ask_latency")
        return ServerStats(
            **{
                **data,
                "namespaces": {str(k): int(v) for k, v in data["namespaces"].items()},
                "errors": {str(k): int(v) for k, v in data["errors"].items()},
                "slow_consumers": {str(k): int(v) for k, v in data["slow_consumers"].items()},
                "closes": {int(k): int(v) for k, v in data["closes"]},
                "upgrades_refused": {int(k): int(v) for k, v in data["upgrades_refused"]},
                "bus": tuple(BusStats(**bus) for bus in data["bus"]),
            },
            ask_latency=Histogram(
                buckets=tuple((float(b), int(n)) for b, n in latency["buckets"]),
                count=int(latency["count"]),
                sum=float(latency["sum"]),
            ),
        )
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a neffos stats snapshot: {exc}") from None
