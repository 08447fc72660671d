"""A connection's key/value store (Go's ``Conn.Set``/``Conn.Get``)."""

from __future__ import annotations

from typing import Any

from .asks import Asks

__all__ = ["KeyValueStore"]


class KeyValueStore(Asks):
    """A layer of :class:`~neffos.Conn`: values kept with a connection for its lifetime."""

    __slots__ = ("_store",)

    def __init__(self, *args: Any) -> None:  # ConnBase's arguments
        super().__init__(*args)
        self._store: dict[str, Any] | None = None  # made on the first set(): stays small

    def set(self, key: str, value: Any) -> None:
        """Keep a value with the connection (Go's ``Conn.Set``)."""
        if self._store is None:
            self._store = {}
        self._store[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """A value kept with :meth:`set`, or ``default``."""
        return default if self._store is None else self._store.get(key, default)

    def increment(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to an integer value (missing counts as 0) and return it."""
        value = int(self.get(key, 0)) + delta
        self.set(key, value)
        return value

    def decrement(self, key: str, delta: int = 1) -> int:
        """Subtract ``delta`` from an integer value and return it."""
        return self.increment(key, -delta)
