"""What the connections of one server or client share: their settings and a task owner."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from typing import Any

from .stats import Counters

__all__ = ["Config", "Tasks"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Limits and settings shared by the connections of one server or client.

    Built once by :class:`~neffos.Server` or :func:`~neffos.dial` from their
    keyword arguments (documented there) and never changed afterwards.
    """

    #: the logger of the side (``neffos.server`` or ``neffos.client``)
    log: logging.Logger
    #: bytes allowed to wait in a connection's send buffer before it is closed
    send_buffer: int
    #: unanswered asks allowed per connection
    max_pending_asks: int
    #: the largest data message accepted from the peer, in bytes
    max_message_size: int
    #: seconds from accept to the neffos handshake (server), or the dial timeout
    handshake_timeout: float | None
    #: seconds between heartbeat sweeps; ``None`` disables them
    ping_interval: float | None
    #: frames allowed to wait behind a busy handler or before the handshake
    max_queued_frames: int
    #: bytes of those frames allowed to wait
    max_queued_bytes: int
    #: rooms one connection may be in (all its namespaces together)
    max_rooms: int
    #: the longest room name accepted, in characters
    max_room_name_length: int
    #: seconds a closing connection may take to flush before it is dropped
    close_timeout: float
    #: the counters of the server (or client); the object is shared and its
    #: numbers change, the reference never does
    stats: Counters = dataclasses.field(default_factory=Counters)


class Tasks:
    """The background tasks of one server or client.

    Every task the engine starts belongs to the server or client it serves: it
    is referenced here until it is done (so it is never garbage-collected half
    way), and closing the owner waits for what is left (:meth:`drain`).
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(
        self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in a task owned by this set (on ``loop``, default: the running one)."""
        task = (loop or asyncio.get_running_loop()).create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the tasks running now (none is cancelled)."""
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks, then cancel the rest."""
        tasks = [t for t in self._tasks if not t.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
