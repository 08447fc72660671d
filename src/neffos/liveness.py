"""Liveness of a connection: the heartbeat, the read timeout and the write timeout.

* **Heartbeat.** One sweep task per server (and per client) calls
  :meth:`Liveness.heartbeat` of every connection each ``ping_interval``. Any
  frame or pong marks a connection active (``_active``, one attribute write per
  frame, no timer); a connection that was silent for a whole interval gets a
  ping, and one still silent at the next sweep is closed.
* **Read timeout** (``with_timeout(read_timeout=)``, Go's idle timeout): one
  timer per connection, re-armed lazily from the time of the last data frame.
* **Write timeout** (``with_timeout(write_timeout=)``): a timer runs only while
  the transport's buffer is past its high-water mark; a peer that does not read
  for that long is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .base import ConnBase

__all__ = ["Liveness"]


class Liveness(ConnBase):
    """A layer of :class:`~neffos.Conn`: heartbeat and timeouts."""

    __slots__ = ("_active", "_last_data", "_ping_out", "_read_timer", "_write_timer")

    def __init__(self, *args: Any) -> None:  # ConnBase's arguments
        super().__init__(*args)
        self._active = True  # a frame or a pong arrived since the last sweep
        self._ping_out = False  # the last sweep pinged a silent peer
        self._last_data = 0.0  # time of the last data frame, while a read timeout runs
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None  # runs while writing is paused

    def alive(self) -> None:
        """Called by the transport for every pong."""
        self._active = True

    def heartbeat(self) -> None:
        """One tick of the ping sweep: ping a silent peer, close a dead one."""
        if self._active:
            self._active = False
            self._ping_out = False
        elif self._ping_out:
            self._cfg.log.debug("[%s] closing: no pong from the peer", self.id)
            self._fail(1011, "ping timeout")
        else:
            self._ping_out = True
            try:
                self.socket.ping()
            except Exception as exc:
                self._cfg.log.debug("[%s] ping failed: %r", self.id, exc)

    def _start_timeouts(self) -> None:
        """Start the read timeout, if the handler has one (after the handshake)."""
        read_timeout = self.handler.read_timeout
        if read_timeout:
            self._last_data = self._loop.time()
            self._read_timer = self._loop.call_later(read_timeout, self._check_read_timeout)

    def _check_read_timeout(self) -> None:
        timeout = self.handler.read_timeout
        idle = self._loop.time() - self._last_data
        if idle >= timeout:
            self._cfg.log.debug("[%s] closing: no data for %.1fs (read timeout)", self.id, idle)
            self._fail(1001, "read timeout")
        else:
            self._read_timer = self._loop.call_later(timeout - idle, self._check_read_timeout)

    def writing_paused(self) -> None:
        """Called by the transport when its buffer passed its high-water mark."""
        timeout = self.handler.write_timeout
        if timeout and self._write_timer is None and not self._closed:
            self._write_timer = self._loop.call_later(timeout, self._write_timed_out)

    def writing_resumed(self) -> None:
        """Called by the transport when its buffer drained."""
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self._cfg.stats.write_timeout_drops += 1
        self._cfg.log.warning("[%s] closing: the peer has not read for too long", self.id)
        self._fail(1008, "write timeout", abort=True)

    def _stop_timers(self) -> None:
        for timer in (self._read_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = self._write_timer = None
