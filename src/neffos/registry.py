"""The connections of one server, their indexes, and delivery of broadcasts.

Wire protocol: docs/topics/protocol.md#broadcast.

Three indexes find the audience of a message without scanning every
connection: ID -> connections, namespace -> connections, and (namespace, room)
-> connections. A broadcast encodes each message once and writes the same bytes
to each connection it targets, so its cost follows the audience, not the
number of connections. A message filtered out for one connection never hides
the next ones (Go's batch early-exit, docs/topics/protocol.md#broadcast, is not reproduced).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from typing import Protocol, TypeAlias, TypeVar

from .conn import Conn, Exclude, Exclusion, NSConn, Room
from .protocol import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_LEFT,
    Message,
    is_binary_frame,
    serialize,
)
from .stats import Counters
from .transports.frames import Shared

__all__ = ["BusInterest", "Index", "Registry", "exclusion"]

K = TypeVar("K", bound=Hashable)

#: One index. A key maps to its only connection, or to an insertion-ordered dict
#: of them when there are several: most IDs (and many rooms) have one member, and
#: a dict per key would cost about 230 bytes per connection.
Index: TypeAlias = dict[K, Conn | dict[Conn, None]]


def _add(index: Index[K], key: K, conn: Conn) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = conn
    elif isinstance(bucket, dict):
        bucket[conn] = None
    elif bucket is not conn:
        index[key] = {bucket: None, conn: None}


def _remove(index: Index[K], key: K, conn: Conn) -> None:
    bucket = index.get(key)
    if bucket is None:
        return
    if isinstance(bucket, dict):
        bucket.pop(conn, None)
        if len(bucket) == 1:
            index[key] = next(iter(bucket))
    elif bucket is conn:
        del index[key]


def _members(index: Index[K], key: K) -> Collection[Conn]:
    bucket = index.get(key)
    if bucket is None:
        return ()
    if isinstance(bucket, dict):
        return bucket
    return (bucket,)


def _size(bucket: Conn | dict[Conn, None]) -> int:
    return len(bucket) if isinstance(bucket, dict) else 1


class BusInterest(Protocol):
    """What the registry tells a bus node: which namespaces and IDs have local connections."""

    def add_namespace(self, namespace: str) -> None: ...

    def remove_namespace(self, namespace: str) -> None: ...

    def add_id(self, conn_id: str) -> None: ...

    def remove_id(self, conn_id: str) -> None: ...


def exclusion(exclude: Exclusion) -> tuple[Conn | None, str | None]:
    """The connection and the ID a broadcast skips.

    Raises:
        TypeError: ``exclude`` is none of the accepted kinds.
    """
    if exclude is None:
        return None, None
    if isinstance(exclude, Conn):
        return exclude, None
    if isinstance(exclude, NSConn):
        return exclude.conn, None
    if isinstance(exclude, Room):
        return exclude.nsconn.conn, None
    if isinstance(exclude, Exclude):
        return None, exclude.id
    raise TypeError(f"cannot exclude a {type(exclude).__name__}; use neffos.exclude(id)")


class Registry:
    """The open connections of a server and their indexes."""

    __slots__ = ("by_id", "by_namespace", "by_room", "conns", "interest", "stats")

    def __init__(self, stats: Counters | None = None) -> None:
        #: the server's counters (deliveries are counted once per message here)
        self.stats = stats if stats is not None else Counters()
        #: every registered connection, in arrival order
        self.conns: dict[Conn, None] = {}
        self.by_id: Index[str] = {}
        self.by_namespace: Index[str] = {}
        self.by_room: Index[tuple[str, str]] = {}
        #: the bus node, told about namespaces and IDs once the server has one
        self.interest: BusInterest | None = None

    def __len__(self) -> int:
        return len(self.conns)

    def __iter__(self) -> Iterator[Conn]:
        return iter(self.conns)

    def __contains__(self, conn: object) -> bool:
        return conn in self.conns

    def is_empty(self) -> bool:
        """No connection and no index entry left."""
        return not (self.conns or self.by_id or self.by_namespace or self.by_room)

    # -- changes ------------------------------------------------------------------------

    def add(self, conn: Conn) -> None:
        self.conns[conn] = None
        _add(self.by_id, conn.id, conn)
        if self.interest is not None:
            self.interest.add_id(conn.id)

    def remove(self, conn: Conn) -> None:
        if self.conns.pop(conn, 0) is None:
            _remove(self.by_id, conn.id, conn)
            if self.interest is not None:
                self.interest.remove_id(conn.id)

    def namespace_added(self, conn: Conn, namespace: str) -> None:
        _add(self.by_namespace, namespace, conn)
        if self.interest is not None:
            self.interest.add_namespace(namespace)

    def namespace_removed(self, conn: Conn, namespace: str) -> None:
        _remove(self.by_namespace, namespace, conn)
        if self.interest is not None:
            self.interest.remove_namespace(namespace)

    def room_added(self, conn: Conn, namespace: str, room: str) -> None:
        _add(self.by_room, (namespace, room), conn)

    def room_removed(self, conn: Conn, namespace: str, room: str) -> None:
        _remove(self.by_room, (namespace, room), conn)

    # -- queries --------------------------------------------------------------------------

    def with_id(self, conn_id: str) -> Collection[Conn]:
        return _members(self.by_id, conn_id)

    def in_namespace(self, namespace: str) -> Collection[Conn]:
        return _members(self.by_namespace, namespace)

    def namespace_sizes(self) -> dict[str, int]:
        """namespace -> how many connections are connected to it."""
        # list() first: a copy made at once, so that a reader in another
        # thread (a threaded metrics exporter) never sees the dict change
        return {ns: _size(bucket) for ns, bucket in list(self.by_namespace.items())}

    def room_sizes(self) -> tuple[int, int]:
        """(rooms with members, memberships of all of them)."""
        buckets = list(self.by_room.values())  # at once (see namespace_sizes)
        return len(buckets), sum(_size(bucket) for bucket in buckets)

    def targets(self, msg: Message) -> tuple[Collection[Conn], bool]:
        """The connections ``msg`` is for, and whether each needs the write checks.

        ``to`` selects an ID (checked per connection: namespace connected, room
        joined); connect/disconnect requests go to everyone; a room message to
        its room; anything else to the namespace (docs/topics/protocol.md#broadcast).
        """
        if msg.to:
            return _members(self.by_id, msg.to), True
        event = msg.event
        if event == ON_NAMESPACE_CONNECT or event == ON_NAMESPACE_DISCONNECT:
            return self.conns, False
        room = msg.room
        if room and event != ON_ROOM_JOIN and event != ON_ROOM_LEFT:
            return _members(self.by_room, (msg.namespace, room)), False
        return _members(self.by_namespace, msg.namespace), False

    # -- delivery ----------------------------------------------------------------------------

    def write_to_targets(
        self,
        msg: Message,
        ex_conn: Conn | None,
        ex_id: str | None,
        wait: str,
        seen: set[Conn] | None = None,
    ) -> int:
        """Write ``msg`` (with the wait token ``wait``) to its local targets; return how many.

        ``ex_conn`` and every connection with the ID ``ex_id`` are skipped;
        ``seen`` skips the connections already reached, and collects the ones
        reached now.
        """
        targets, check = self.targets(msg)
        if not targets:
            return 0
        if msg.wait != wait or msg.from_explicit:
            msg = msg.copy(wait=wait, from_explicit="")
        data = serialize(msg)
        # One message for all: a server socket builds its frame once (frames.py).
        shared = Shared(data, is_binary_frame(data, msg.set_binary))
        sent = 0
        if ex_id is None and not check and seen is None:  # the common case, kept tight
            for conn in targets:
                if conn is not ex_conn and conn.write_shared(shared):
                    sent += 1
            self.stats.messages_out += sent
            return sent
        for conn in targets:
            if (
                conn is ex_conn
                or (ex_id is not None and conn.id == ex_id)
                or (check and not conn.can_write(msg))
            ):
                continue
            if seen is not None:
                if conn in seen:
                    continue
                if conn.write_shared(shared):
                    seen.add(conn)
                    sent += 1
            elif conn.write_shared(shared):
                sent += 1
        self.stats.messages_out += sent
        return sent
