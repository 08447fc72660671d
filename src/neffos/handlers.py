"""Connection handlers: which events of which namespaces a connection understands.

A *connection handler* tells a server or a client which namespaces exist and which
function handles each event. Accepted shapes (all interchangeable):

* ``{"chat": fn}`` or :class:`Events` - events of the namespace ``""``;
* ``{"v1": {"chat": fn}}`` or :class:`Namespaces`;
* :func:`with_timeout` around any of them (read/write timeouts);
* :func:`from_object` - methods of an object become events (Go's ``NewStruct``);
* :func:`join_conn_handlers` (or a list) - several of the above merged.

A handler is ``fn(ns: NSConn, msg: Message)``, plain or ``async``. Its result:
``None`` sends nothing; ``bytes``/``str``/:class:`~neffos.Reply`/any other
marshalable value answers an ``ask``; an exception (returned or raised) is sent
back as an error (docs/topics/protocol.md#dispatch, #answers).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .protocol import (
    ON_ANY_EVENT,
    ON_NATIVE_MESSAGE,
    SYSTEM_EVENTS,
)

if TYPE_CHECKING:
    from .protocol import Message

__all__ = [
    "ConnHandler",
    "EventHandler",
    "EventTable",
    "Events",
    "HandlerFn",
    "HandlerSpec",
    "Namespaces",
    "ObjectHandler",
    "WithTimeout",
    "event_prefix_matcher",
    "event_trim_prefix_matcher",
    "from_object",
    "join_conn_handlers",
    "with_timeout",
]

#: ``fn(ns, msg)``: ``ns`` is the :class:`neffos.NSConn` the event arrived on.
#: (Typed ``Any`` here because this module sits below the engine: the engine
#: consumes compiled handlers, and handlers never depend on the engine.)
EventHandler: TypeAlias = Callable[[Any, "Message"], Any]
EventMatcher: TypeAlias = Callable[[str], "str | None"]


class BoundNamespace(Protocol):
    """What a per-connection handler object is bound to (an ``NSConn``)."""

    value: Any


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class HandlerFn:
    """A handler function and whether it must be awaited."""

    __slots__ = ("fn", "is_async")

    def __init__(self, fn: EventHandler) -> None:
        if not callable(fn):
            raise TypeError(f"an event handler must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.is_async = _is_async(fn)


class EventTable:
    """The compiled events of one namespace (shared, or bound to one connection)."""

    __slots__ = ("any", "handlers", "has_async_system")

    def __init__(self, handlers: Mapping[str, EventHandler]) -> None:
        self.handlers: dict[str, HandlerFn] = {name: HandlerFn(fn) for name, fn in handlers.items()}
        self.any: HandlerFn | None = self.handlers.get(ON_ANY_EVENT)
        self.has_async_system = any(
            f.is_async for name, f in self.handlers.items() if name in _SYSTEM_OR_ANY
        )

    def lookup(self, event: str) -> HandlerFn | None:
        """The handler for ``event``: exact match, else ``_OnAnyEvent``.

        Wire protocol: docs/topics/protocol.md#dispatch.
        """
        fn = self.handlers.get(event)
        return self.any if fn is None else fn

    def bind(self, ns: BoundNamespace) -> EventTable:
        return self

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.handlers)


_SYSTEM_OR_ANY = SYSTEM_EVENTS | {ON_ANY_EVENT}


class _ObjectTable(EventTable):
    """Events of a per-connection object: each namespace connection gets a copy."""

    __slots__ = ("_methods", "_prototype")

    def __init__(self, prototype: Any, methods: Mapping[str, str]) -> None:
        self._prototype = prototype
        self._methods = dict(methods)  # event name -> method name
        # Compile once against the prototype to learn names and async-ness.
        super().__init__({ev: _adapt(getattr(prototype, m)) for ev, m in self._methods.items()})

    def bind(self, ns: BoundNamespace) -> EventTable:
        instance = copy.copy(self._prototype)
        instance.conn = ns
        ns.value = instance
        return EventTable({ev: _adapt(getattr(instance, m)) for ev, m in self._methods.items()})


def _adapt(method: Callable[[Message], Any]) -> EventHandler:
    """Turn a per-connection ``method(msg)`` into a ``fn(ns, msg)`` handler."""
    if _is_async(method):

        async def call_async(ns: Any, msg: Message) -> Any:
            return await method(msg)

        return call_async

    def call(ns: Any, msg: Message) -> Any:
        return method(msg)

    return call


class _MergedTable(EventTable):
    """Several tables of one namespace, some of them per-connection."""

    __slots__ = ("_parts",)

    def __init__(self, parts: list[EventTable]) -> None:
        self._parts = parts
        merged: dict[str, EventHandler] = {}
        for part in parts:
            merged.update({name: f.fn for name, f in part.handlers.items()})
        super().__init__(merged)

    def bind(self, ns: BoundNamespace) -> EventTable:
        merged: dict[str, EventHandler] = {}
        for part in self._parts:
            merged.update({name: f.fn for name, f in part.bind(ns).handlers.items()})
        return EventTable(merged)


class Events(dict[str, EventHandler]):
    """Event name -> handler, for the namespace ``""`` (or as a value of :class:`Namespaces`)."""

    def on(self, event: str, fn: EventHandler | None = None) -> Any:
        """Register ``fn`` for ``event``; without ``fn``, return a decorator."""
        if fn is None:

            def decorator(f: EventHandler) -> EventHandler:
                self[event] = f
                return f

            return decorator
        self[event] = fn
        return self


class Namespaces(dict[str, Mapping[str, EventHandler]]):
    """Namespace -> events."""

    def on(self, namespace: str, event: str, fn: EventHandler | None = None) -> Any:
        """Register ``fn`` for ``event`` of ``namespace``; without ``fn``, a decorator."""
        events = self.get(namespace)
        if not isinstance(events, Events):
            events = Events(events or {})
            self[namespace] = events
        if fn is None:
            return events.on(event)
        events[event] = fn
        return self


class WithTimeout:
    """A handler with read/write timeouts (Go's ``WithTimeout``); see :func:`with_timeout`."""

    __slots__ = ("handler", "read_timeout", "write_timeout")

    def __init__(
        self, handler: HandlerSpec, *, read_timeout: float = 0, write_timeout: float = 0
    ) -> None:
        self.handler = handler
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout


def with_timeout(
    handler: HandlerSpec, *, read_timeout: float = 0, write_timeout: float = 0
) -> WithTimeout:
    """Attach timeouts (seconds, ``0`` = none) to a connection handler.

    * ``read_timeout``: close the connection when no data frame arrives for this
      long (an idle timeout, as in Go; heartbeat pings do not count as data).
    * ``write_timeout``: close the connection when its send buffer has not drained
      for this long (a stuck or very slow reader).
    """
    return WithTimeout(handler, read_timeout=read_timeout, write_timeout=write_timeout)


# -- class-based handlers (Go's NewStruct) ---------------------------------------

_SYSTEM_METHOD_NAMES: dict[str, str] = {}
for _event in (*SYSTEM_EVENTS, ON_ANY_EVENT, ON_NATIVE_MESSAGE):
    _camel = _event[1:]  # "OnNamespaceConnect"
    _snake = "".join("_" + c.lower() if c.isupper() else c for c in _camel).lstrip("_")
    _SYSTEM_METHOD_NAMES[_camel] = _event
    _SYSTEM_METHOD_NAMES[_snake] = _event  # "on_namespace_connect"


def event_prefix_matcher(prefix: str) -> EventMatcher:
    """Register only methods whose name starts with ``prefix``, under their full name."""

    def match(name: str) -> str | None:
        return name if name.startswith(prefix) else None

    return match


def event_trim_prefix_matcher(prefix: str) -> EventMatcher:
    """Register only methods starting with ``prefix``, under the name without it.

    ``event_trim_prefix_matcher("on_")`` maps ``on_chat`` to the event ``chat``.
    """

    def match(name: str) -> str | None:
        return name[len(prefix) :] if name.startswith(prefix) and len(name) > len(prefix) else None

    return match


class ObjectHandler:
    """The result of :func:`from_object`."""

    __slots__ = ("namespace", "read_timeout", "table", "write_timeout")

    def __init__(
        self, table: EventTable, namespace: str, read_timeout: float, write_timeout: float
    ) -> None:
        self.table = table
        self.namespace = namespace
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout


def from_object(
    obj: Any,
    *,
    namespace: str | None = None,
    event_matcher: EventMatcher | None = None,
    read_timeout: float = 0,
    write_timeout: float = 0,
) -> ObjectHandler:
    """Build a connection handler from an object's methods (Go's ``NewStruct``).

    * Public methods become events: named by ``event_matcher(method_name)`` (skip
      the method when it returns ``None``) or by the method name itself. Methods
      named like a system event without the underscore (``OnNamespaceConnect`` or
      ``on_namespace_connect``, ``on_room_join``, ``on_any_event``...) handle that
      system event whatever the matcher says.
    * If the object has a ``conn`` attribute (or annotation), each namespace
      connection gets a shallow copy of it with ``conn`` set to the
      :class:`~neffos.NSConn`, and methods take ``(self, msg)``. Otherwise the
      object is shared and methods take ``(self, ns, msg)``.
    * The namespace is ``namespace=``, else the object's ``namespace`` attribute,
      else ``""``.

    Raises:
        TypeError: the object has no method that maps to an event.
    """
    cls = type(obj)
    per_conn = hasattr(obj, "conn") or any(
        "conn" in getattr(klass, "__annotations__", {}) for klass in cls.__mro__
    )
    methods: dict[str, str] = {}
    for name in dir(cls):
        if name.startswith("_") or name in ("conn", "namespace"):
            continue
        attr = getattr(cls, name, None)
        if not callable(attr) or isinstance(attr, type | property):
            continue
        event = _SYSTEM_METHOD_NAMES.get(name)
        if event is None:
            event = event_matcher(name) if event_matcher is not None else name
        if event:
            methods[event] = name
    if not methods:
        raise TypeError(f"{cls.__name__} has no method that maps to an event")
    if namespace is None:
        ns_attr = getattr(obj, "namespace", "")
        namespace = ns_attr() if callable(ns_attr) else str(ns_attr or "")
    if per_conn:
        table: EventTable = _ObjectTable(obj, methods)
    else:
        table = EventTable({ev: getattr(obj, m) for ev, m in methods.items()})
    return ObjectHandler(table, namespace, read_timeout, write_timeout)


# -- compilation ----------------------------------------------------------------


class ConnHandler:
    """A compiled connection handler (what servers and clients use internally)."""

    __slots__ = ("allow_native", "namespaces", "only_native", "read_timeout", "write_timeout")

    def __init__(
        self,
        namespaces: dict[str, EventTable],
        read_timeout: float = 0,
        write_timeout: float = 0,
    ) -> None:
        self.namespaces = namespaces
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        root = namespaces.get("")
        self.allow_native = root is not None and ON_NATIVE_MESSAGE in root.handlers
        # Native-only mode (docs/topics/protocol.md#native): "" is the only namespace and
        # _OnNativeMessage its only event.
        self.only_native = (
            self.allow_native and len(namespaces) == 1 and root is not None
            and len(root.handlers) == 1
        )

    @classmethod
    def compile(cls, handler: HandlerSpec) -> ConnHandler:
        """Normalise any accepted handler shape.

        Raises:
            TypeError: the shape is not understood (e.g. functions and namespaces
                mixed at the top level).
        """
        if isinstance(handler, ConnHandler):
            return handler
        parts: dict[str, list[EventTable]] = {}
        timeouts = [0.0, 0.0]
        _collect(handler, parts, timeouts)
        namespaces = {
            ns: tables[0] if len(tables) == 1 else _MergedTable(tables)
            for ns, tables in parts.items()
        }
        return cls(namespaces, timeouts[0], timeouts[1])


#: Every accepted shape of a connection handler (see the module docstring).
HandlerSpec: TypeAlias = (
    "ConnHandler | WithTimeout | ObjectHandler | Mapping[str, Any] | Iterable[HandlerSpec]"
)


def _collect(handler: Any, out: dict[str, list[EventTable]], timeouts: list[float]) -> None:
    if isinstance(handler, ConnHandler):
        for ns, table in handler.namespaces.items():
            out.setdefault(ns, []).append(table)
        _merge_timeouts(timeouts, handler.read_timeout, handler.write_timeout)
    elif isinstance(handler, WithTimeout):
        _collect(handler.handler, out, timeouts)
        _merge_timeouts(timeouts, handler.read_timeout, handler.write_timeout)
    elif isinstance(handler, ObjectHandler):
        out.setdefault(handler.namespace, []).append(handler.table)
        _merge_timeouts(timeouts, handler.read_timeout, handler.write_timeout)
    elif isinstance(handler, Mapping):
        values = list(handler.values())
        if isinstance(handler, Events) or (values and all(callable(v) for v in values)):
            out.setdefault("", []).append(EventTable(handler))
        elif isinstance(handler, Namespaces) or all(isinstance(v, Mapping) for v in values):
            for ns, events in handler.items():
                if not isinstance(ns, str):
                    raise TypeError(f"namespace names must be str, not {type(ns).__name__}")
                out.setdefault(ns, []).append(EventTable(events))
        else:
            raise TypeError(
                "a handler mapping must map events to functions or namespaces to events, "
                "not both"
            )
    elif isinstance(handler, Iterable) and not isinstance(handler, str | bytes):
        for part in handler:
            _collect(part, out, timeouts)
    else:
        raise TypeError(f"not a connection handler: {type(handler).__name__}")


def _merge_timeouts(timeouts: list[float], read: float, write: float) -> None:
    if read:
        timeouts[0] = read if not timeouts[0] else min(timeouts[0], read)
    if write:
        timeouts[1] = write if not timeouts[1] else min(timeouts[1], write)


def join_conn_handlers(*handlers: HandlerSpec) -> ConnHandler:
    """Merge several connection handlers into one (Go's ``JoinConnHandlers``).

    Namespaces are merged; for an event defined twice, the later handler wins.
    """
    return ConnHandler.compile(list(handlers))

