"""Reading a connection's frames in order, and handing processing off while a handler waits.

Theory of operation
-------------------
A transport calls :meth:`OrderedProcessing.feed` with every data message. A
frame that answers one of our own asks resolves that ask at once (see
:mod:`neffos.asks`): an answer never waits behind anything. Every other frame is
*processed* (a system request answered, an event's handler run), and a
connection processes its frames one at a time, in arrival order.

The right to process a connection's frames is its **turn**. A connection has at
most one active :class:`Turn`, and a turn belongs to one task.

1. *Fast path.* With no active turn and no hold, the reader dispatches the frame
   inline. A plain-function handler runs to completion right there: no task,
   no queue, no turn.
2. *A turn starts* when dispatching leaves something to await (the coroutine of
   an ``async`` handler, or a system request whose handlers suspended). Its
   task awaits that, then processes the frames that queued meanwhile (the
   inbox), and ends when the inbox is empty.
3. *Queueing.* While a turn is active or processing is held, the reader appends
   frames to the inbox; past ``max_queued_frames`` frames or ``max_queued_bytes``
   bytes the connection is closed. Frames that arrive before the handshake
   completed wait in a list under the same two limits (:meth:`_keep_early`).
4. *Hand-off.* A handler that waits for the peer (``ask``, ``wait_connect``, a
   system request, ``Server.ask``) first calls :func:`hand_off`: its turn ends
   and the connection starts a new one for the inbox, while the handler goes on
   waiting outside the ordering. Without this, asks nested in both directions
   (A's handler asks B, whose handler asks A) deadlock, which is what Go does
   (docs/topics/protocol.md#asks). The current task's turn is found through a context
   variable, so a wait in a task the handler started (``wait_for``, ``gather``)
   hands it off too. Ordering is unchanged for handlers that never wait for a
   peer.
5. *Hold.* When the answer to our own namespace connect request arrives, the
   requester must register the namespace before the peer's next frames are
   processed: the peer may emit in the namespace right after confirming it
   (docs/topics/protocol.md#namespaces). The requester names the token whose answer holds
   (:meth:`OrderedProcessing._hold_on`); the reader takes the hold when it
   resolves that answer (:meth:`OrderedProcessing._answer_arrived`); the
   requester releases it (:meth:`OrderedProcessing._release`); frames wait in
   the inbox meanwhile.

Only the methods of this module change ``_turn``, ``_holds``, ``_holding``,
``_inbox`` and ``_preack``.
"""

from __future__ import annotations

import contextvars
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from .liveness import Liveness
from .protocol import Message, parse

__all__ = ["OrderedProcessing", "Turn", "hand_off", "run_inline"]

#: the turn of the task that is running (inherited by the tasks it starts)
_current_turn: contextvars.ContextVar[Turn] = contextvars.ContextVar("neffos_turn")


def hand_off() -> None:
    """Hand off the current task's turn, if it has one: call it before waiting for a peer."""
    turn = _current_turn.get(None)
    if turn is not None:
        turn.hand_off()


class Turn:
    """One task's right to process the frames of one connection (see the module docstring)."""

    __slots__ = ("conn",)

    def __init__(self, conn: OrderedProcessing) -> None:
        self.conn = conn

    def hand_off(self) -> None:
        """End this turn now; the connection goes on with its inbox in a new one."""
        conn = self.conn
        if conn._turn is self:
            conn._turn = None
            conn._next_turn()


def run_inline(coro: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run ``coro`` without a task as far as it goes.

    Returns ``None`` when it finished, or an awaitable that finishes it in a task
    when it suspended (a handler returned something to await).
    """
    try:
        suspended_at = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, suspended_at)


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], waiting_for: Any) -> Generator[Any, Any, Any]:
    # A coroutine started with send() cannot be handed to a task as it is: this
    # awaitable passes on to the task what the coroutine waits for, and brings
    # the results (or exceptions) back to it.
    while True:
        try:
            sent = yield waiting_for
        except BaseException as exc:
            try:
                waiting_for = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_for = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class OrderedProcessing(Liveness):
    """A layer of :class:`~neffos.Conn`: the reader and the order of processing."""

    __slots__ = ("_holding", "_holds", "_inbox", "_preack", "_queued_bytes", "_turn")

    def __init__(self, *args: Any) -> None:  # ConnBase's arguments
        super().__init__(*args)
        self._inbox: deque[Message] | None = None  # frames waiting for their turn
        self._queued_bytes = 0  # their size (or that of the frames before the handshake)
        # frames received before the handshake completed; None once it did
        self._preack: list[tuple[bytes, bool]] | None = None
        self._turn: Turn | None = None  # the active turn, if any
        self._holds = 0  # answers that hold processing and were not applied yet
        self._holding: set[str] | None = None  # tokens whose answer will hold

    def feed(self, data: bytes, binary: bool) -> None:
        """Process one data message from the socket (called by the transport)."""
        self._active = True
        if not data or self._closed:
            return
        if self._preack is not None:
            self._feed_preack(data, binary)
            return
        self._cfg.stats.messages_in += 1  # frames kept before the handshake: once, here
        handler = self.handler
        msg = parse(
            data, binary, allow_native=handler.allow_native, only_native=handler.only_native
        )
        if msg.is_invalid:
            self._cfg.stats.bad_frames += 1
            self._cfg.log.debug("[%s] dropped an invalid frame: %r", self.id, data[:80])
            return
        if self._last_data:  # a read timeout is running (liveness)
            self._last_data = self._loop.time()
        if msg.from_explicit or msg.from_stack_exchange:
            # Bus-only markers: never honour them on frames from a peer
            # (docs/topics/protocol.md#differences).
            msg.from_explicit = ""
            msg.from_stack_exchange = False
        if msg.wait and self._resolve_answer(msg):
            return
        if self._turn is not None or self._holds:
            self._enqueue(msg)
            return
        try:
            rest = self._dispatch(msg)
        except Exception:  # never let a bug reach the transport's callback
            self._cfg.log.exception("[%s] processing of %r failed", self.id, msg)
            return
        if rest is not None:
            self._start_turn(rest)

    def _enqueue(self, msg: Message) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        size = self._queued_bytes + _size(msg)
        cfg = self._cfg
        if len(inbox) >= cfg.max_queued_frames or size > cfg.max_queued_bytes:
            cfg.stats.limit_refusals += 1
            cfg.log.warning(
                "[%s] closing: more than %d frames or %d bytes waiting for a slow handler",
                self.id,
                cfg.max_queued_frames,
                cfg.max_queued_bytes,
            )
            self._fail(1008, "too many queued messages")
            return
        inbox.append(msg)
        self._queued_bytes = size

    def _dequeue(self, inbox: deque[Message]) -> Message:
        msg = inbox.popleft()
        self._queued_bytes -= _size(msg)
        return msg

    def _keep_early(self, data: bytes, binary: bool) -> bool:
        """Keep a frame that arrived before the handshake completed.

        Returns ``False`` (keeping nothing) past ``max_queued_frames`` or
        ``max_queued_bytes``: the caller ends the handshake.
        """
        early = self._preack
        assert early is not None
        size = self._queued_bytes + len(data)
        cfg = self._cfg
        if len(early) >= cfg.max_queued_frames or size > cfg.max_queued_bytes:
            return False
        early.append((data, binary))
        self._queued_bytes = size
        return True

    def _take_early(self) -> list[tuple[bytes, bool]]:
        """The frames kept before the handshake; from now on frames are processed."""
        early = self._preack or []
        self._preack = None
        self._queued_bytes = 0
        return early

    def _start_turn(self, first: Awaitable[None] | None) -> None:
        turn = Turn(self)
        self._turn = turn
        self._tasks.spawn(self._run_turn(turn, first), self._loop)

    async def _run_turn(self, turn: Turn, first: Awaitable[None] | None) -> None:
        _current_turn.set(turn)
        log = self._cfg.log
        try:
            if first is not None:
                try:
                    await first
                except Exception:
                    log.exception("[%s] processing failed", self.id)
            inbox = self._inbox
            while inbox and self._turn is turn and not self._holds and not self._closed:
                msg = self._dequeue(inbox)
                try:
                    rest = self._dispatch(msg)
                    if rest is not None:
                        await rest
                except Exception:
                    log.exception("[%s] processing of %r failed", self.id, msg)
        finally:
            if self._turn is turn:
                self._turn = None
                self._next_turn()

    def _next_turn(self) -> None:
        """Start a turn for the inbox, unless one is active or processing is held."""
        if self._turn is None and not self._holds and self._inbox and not self._closed:
            self._start_turn(None)

    def _hold_on(self, token: str) -> None:
        """The answer to ``token`` will hold processing until :meth:`_release`."""
        if self._holding is None:
            self._holding = set()
        self._holding.add(token)

    def _answer_arrived(self, token: str) -> None:
        """The reader resolved the answer to ``token``: hold, if it was asked to."""
        holding = self._holding
        if holding and token in holding:
            holding.discard(token)
            self._holds += 1

    def _forget_hold(self, token: str) -> bool:
        """Stop waiting for ``token``; ``True`` if its answer took a hold already."""
        holding = self._holding
        if holding is not None and token in holding:
            holding.discard(token)
            return False
        return True

    def _release(self) -> None:
        self._holds -= 1
        if not self._holds:
            self._next_turn()

    def _drop_queued(self) -> None:
        """Forget the queued frames (the connection closed).

        Holds are not touched: each requester forgets or releases its own.
        """
        if self._inbox:
            self._inbox.clear()
        self._queued_bytes = 0


def _size(msg: Message) -> int:
    """What a queued message counts against ``max_queued_bytes`` (about its frame)."""
    return len(msg.body) + len(msg.namespace) + len(msg.room) + len(msg.event) + len(msg.wait)
