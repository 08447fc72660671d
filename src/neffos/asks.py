"""Request/response: a connection's asks, a server's asks, and their deadlines.

Wire protocol: docs/topics/protocol.md#asks.

An ask writes a frame with a fresh wait token and waits for the frame that
echoes the token. The reader resolves that future the moment the answer arrives
(:meth:`Asks._resolve_answer`), before any ordering, so a handler can ask
without deadlocking. Every registration is removed in ``finally``; when the
connection closes, every pending ask fails at once with
:class:`~neffos.ConnectionClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import AskTimeout, ConnectionClosed, NeffosError, TooManyPendingAsks, WriteClosed
from .processing import OrderedProcessing, hand_off
from .protocol import Message, is_binary_frame, serialize

__all__ = ["Asks", "ServerAsks", "answer_within"]

_R = TypeVar("_R")

#: how many finished Server.ask tokens are remembered, to drop their late answers
_FINISHED_ASKS = 1024


async def answer_within(fut: Awaitable[_R], timeout: float | None) -> _R:
    """Await ``fut``; after ``timeout`` seconds raise :class:`~neffos.AskTimeout`.

    An enclosing ``asyncio.timeout()`` that expires first raises its own
    ``TimeoutError``, as usual.
    """
    if timeout is None:
        return await fut
    cm = asyncio.timeout(timeout)
    try:
        async with cm:
            return await fut
    except TimeoutError:
        if cm.expired():
            raise AskTimeout(f"no answer within {timeout}s") from None
        raise


class Asks(OrderedProcessing):
    """A layer of :class:`~neffos.Conn`: asks sent to the peer, and their answers."""

    __slots__ = ("_waiters",)

    def __init__(self, *args: Any) -> None:  # ConnBase's arguments
        super().__init__(*args)
        self._waiters: dict[str, asyncio.Future[Message]] | None = None  # pending, by token

    async def ask(self, msg: Message, *, timeout: float | None = None) -> Message:
        """Send ``msg`` with a wait token and return the peer's answer.

        Works from inside an event handler. Honours ``timeout=`` and any enclosing
        ``asyncio.timeout()``.

        Raises:
            AskTimeout: no answer within ``timeout`` seconds.
            WriteClosed: the message could not be written (closed connection,
                namespace not connected, room not joined).
            ConnectionClosed: the connection closed before the answer.
            TooManyPendingAsks: ``max_pending_asks`` asks are already waiting.
            Exception: the error the peer answered with (a registered known
                error, or :class:`~neffos.RemoteError`).
        """
        self._check_open()
        if not self.can_write(msg):
            raise WriteClosed()
        pending = len(self._waiters) if self._waiters else 0
        stats = self._cfg.stats
        if pending >= self._cfg.max_pending_asks:
            stats.limit_refusals += 1
            raise TooManyPendingAsks(f"{pending} asks are already pending")

        def frame_for(token: str) -> tuple[bytes, bool]:
            data = serialize(msg.copy(wait=token, from_explicit=""))
            return data, is_binary_frame(data, msg.set_binary)

        stats.asks_sent += 1
        started = self._loop.time()
        try:
            reply = await self._send_and_wait(frame_for, timeout, WriteClosed)
        except AskTimeout:
            stats.ask_timeouts += 1
            raise
        stats.answered(self._loop.time() - started)
        if reply.err is not None:
            raise reply.err
        return reply

    async def _send_and_wait(
        self,
        frame_for: Callable[[str], tuple[bytes, bool]],
        timeout: float | None,
        unwritten: type[NeffosError],
        *,
        hold: bool = False,
    ) -> Message:
        """Write the frame ``frame_for(token)`` makes, and wait for its answer.

        With ``hold``, processing of the frames that follow the answer is held
        from the moment it arrives: when this returns, the caller must apply
        the answer and then call :meth:`_release` (see :mod:`neffos.processing`).

        Raises:
            unwritten: the frame could not be written.
            ConnectionClosed: the connection closed before the answer.
            AskTimeout: no answer within ``timeout`` seconds.
        """
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = {}
        token = self._tokens()
        fut: asyncio.Future[Message] = self._loop.create_future()
        waiters[token] = fut
        if hold:
            self._hold_on(token)
        try:
            if not self.write_encoded(*frame_for(token)):
                raise unwritten()
            self._cfg.stats.messages_out += 1
            hand_off()
            return await fut if timeout is None else await answer_within(fut, timeout)
        except BaseException:
            if hold and self._forget_hold(token):
                self._release()  # answered (hold taken), then interrupted
            raise
        finally:
            waiters.pop(token, None)
            if hold:
                self._forget_hold(token)

    def _resolve_answer(self, msg: Message) -> bool:
        """Hand ``msg`` to the ask waiting for its token; ``False`` if it answers nothing."""
        wait = msg.wait
        if not self._may_be_answer(wait):
            return False
        waiters = self._waiters
        if waiters:
            fut = waiters.pop(wait, None)
            if fut is not None and not fut.done():
                self._answer_arrived(wait)
                fut.set_result(msg)
                return True
        return self._resolve_other_answer(msg)

    def _may_be_answer(self, wait: str) -> bool:
        """Whether a frame with this token can answer an ask on this side.

        Wire protocol: docs/topics/protocol.md#tokens.
        """
        return True

    def _resolve_other_answer(self, msg: Message) -> bool:
        """Hook: answers to asks that are not this connection's (``Server.ask``, bus asks)."""
        return False

    def _fail_asks(self) -> None:
        """Fail every pending ask with ConnectionClosed (the connection closed)."""
        waiters, self._waiters = self._waiters, None
        if waiters:
            for fut in waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed())
                    fut.exception()  # retrieved: no "never retrieved" warning


class ServerAsks:
    """The pending asks of a server (``Server.ask``), by token.

    Tokens of finished asks are remembered for a while (bounded), so that a late
    or second answer is dropped instead of being dispatched as an event
    (docs/topics/protocol.md#differences).
    """

    __slots__ = ("_finished", "_pending")

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._finished: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, token: str) -> asyncio.Future[Message]:
        """Register an ask; its answer will resolve the returned future."""
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        return fut

    def finish(self, token: str) -> None:
        """Forget an ask (answered, timed out or cancelled)."""
        self._pending.pop(token, None)
        self._finished[token] = None
        if len(self._finished) > _FINISHED_ASKS:
            del self._finished[next(iter(self._finished))]

    def resolve(self, msg: Message) -> bool:
        """Deliver an answer; ``True`` if ``msg.wait`` belongs to a server ask."""
        fut = self._pending.get(msg.wait)
        if fut is not None:
            if not fut.done():
                fut.set_result(msg)
            return True
        return msg.wait in self._finished

    def fail_all(self, text: str) -> None:
        """Fail every pending ask with ConnectionClosed (the server closed)."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(text))
                fut.exception()
