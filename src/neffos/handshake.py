"""The server side of the neffos handshake (docs/topics/protocol.md#handshake).

Two things must happen before a server answers a new connection: the client's
``M`` frame arrives, and ``on_connect`` gives its verdict (accept or refuse).
They come in either order. The answer is ``A<id>`` (then the frames the client
sent before ``M`` are processed) or ``H<text>`` followed by a close. Only ``M``
completes a handshake: a client cannot pick its ID with an ``A`` frame of its
own (docs/topics/protocol.md#handshake, #differences).

``on_connect`` may also call ``conn.connect()`` before returning: that *admits*
the client at once (``A`` goes out as soon as ``M`` is there), because the
connect request could never be answered otherwise. If ``on_connect`` then
fails, the connection is closed (Go would ignore the error).

A server's first request to the client waits until the client has surely read
``A``: neffos.js resolves ``dial()`` when it reads ``A``, and the usual
``await dial(); await conn.waitServerConnect(ns)`` only sees a connect request
that arrives in a later read (frames read together are handled in one go,
before the code after ``await dial()`` runs, and ``waitServerConnect`` ignores a
namespace connected already). So the server pings right after ``A`` and sends
the request after the pong: the pong proves the client read ``A``, and the
request then lands in a later read. Go's server gets the same effect, most of
the time, from a 15 ms polling sleep.

The states and what moves them are the table :data:`TRANSITIONS`; the
per-frame check of the engine stays one ``is not None`` test (``_preack``).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .conn import Conn, NSConn
from .dispatch import Dispatcher
from .errors import ConnectionClosed
from .protocol import ACK_HELLO, TokenGenerator, ack_ok, ack_refused

if TYPE_CHECKING:
    from .config import Config, Tasks
    from .handlers import ConnHandler
    from .transports.base import Socket

__all__ = ["TRANSITIONS", "Handshake", "HandshakeEvent", "OnConnect", "ServerHandshake"]

#: how long the first server request waits for the pong that proves the client
#: read ``A`` (a client that never answers pings gets the request after this)
_PONG_WAIT = 1.0

#: ``fn(conn)``, plain or async: raise or return an exception to refuse
OnConnect = Callable[[Conn], Any]


class Handshake(enum.Enum):
    """Where the handshake of a server connection stands."""

    #: neither ``M`` nor the verdict of ``on_connect`` yet
    WAITING = enum.auto()
    #: ``M`` arrived; ``on_connect`` is still running
    HELLO = enum.auto()
    #: ``on_connect`` is still running but admitted the client; ``M`` not yet
    ADMITTED = enum.auto()
    #: ``on_connect`` accepted; ``M`` not yet
    ACCEPTED = enum.auto()
    #: ``on_connect`` refused; ``H`` goes out when ``M`` arrives
    REFUSING = enum.auto()
    #: the client is in while ``on_connect`` still runs: it admitted the client
    #: (``A`` sent), or the handler is native-only (no ``M``/``A`` at all)
    OPEN_BEFORE_VERDICT = enum.auto()
    #: the client is in and ``on_connect`` accepted: the normal, final state
    OPEN = enum.auto()
    #: ``H`` sent; the connection is closing
    REFUSED = enum.auto()


class HandshakeEvent(enum.Enum):
    """What moves a handshake."""

    HELLO = enum.auto()  # the client's M frame
    ACCEPT = enum.auto()  # on_connect returned
    REFUSE = enum.auto()  # on_connect raised or returned an exception
    ADMIT = enum.auto()  # conn.connect() inside on_connect


S = Handshake
#: (state, event) -> next state; pairs that are missing leave the state as it is
TRANSITIONS: dict[tuple[Handshake, HandshakeEvent], Handshake] = {
    (S.WAITING, HandshakeEvent.HELLO): S.HELLO,
    (S.WAITING, HandshakeEvent.ACCEPT): S.ACCEPTED,
    (S.WAITING, HandshakeEvent.REFUSE): S.REFUSING,
    (S.WAITING, HandshakeEvent.ADMIT): S.ADMITTED,
    (S.HELLO, HandshakeEvent.ACCEPT): S.OPEN,
    (S.HELLO, HandshakeEvent.REFUSE): S.REFUSED,
    (S.HELLO, HandshakeEvent.ADMIT): S.OPEN_BEFORE_VERDICT,
    (S.ADMITTED, HandshakeEvent.HELLO): S.OPEN_BEFORE_VERDICT,
    (S.ADMITTED, HandshakeEvent.ACCEPT): S.ACCEPTED,
    (S.ADMITTED, HandshakeEvent.REFUSE): S.REFUSING,
    (S.ACCEPTED, HandshakeEvent.HELLO): S.OPEN,
    (S.REFUSING, HandshakeEvent.HELLO): S.REFUSED,
    (S.OPEN_BEFORE_VERDICT, HandshakeEvent.ACCEPT): S.OPEN,
}
#: states in which the client is in (``A`` sent, or native-only)
OPEN_STATES = frozenset({S.OPEN_BEFORE_VERDICT, S.OPEN})
#: states in which ``on_connect`` accepted (``on_disconnect`` will fire)
ACCEPTED_STATES = frozenset({S.ACCEPTED, S.OPEN})
#: states still waiting for ``M``
AWAITING_HELLO = frozenset({S.WAITING, S.ADMITTED, S.ACCEPTED, S.REFUSING})


class ServerHandshake(Dispatcher):
    """The engine of a server connection, with the handshake in front of it."""

    __slots__ = ("_ack_future", "_caught_up", "_handshake", "_handshake_timer", "_refusal")

    def __init__(
        self,
        socket: Socket,
        handler: ConnHandler,
        cfg: Config,
        tasks: Tasks,
        tokens: TokenGenerator,
        conn_id: str,
    ) -> None:
        super().__init__(socket, handler, cfg, tasks, tokens, conn_id)
        self._handshake = Handshake.WAITING
        self._refusal: str | None = None  # the text of H, once on_connect refused
        self._ack_future: asyncio.Future[None] | None = None  # connect() before A waits here
        self._handshake_timer: asyncio.TimerHandle | None = None  # handshake_timeout
        # the client read our A: True, or the pong of the ping sent to find out
        self._caught_up: bool | asyncio.Future[None] = False

    def _begin_handshake(self, on_connect: OnConnect | None) -> None:
        """Start the handshake of the new connection and run ``on_connect``."""
        if self.handler.only_native:
            # Native-only mode (docs/topics/protocol.md#native): no M/A exchange; "" is connected
            # from the start.
            self._handshake = Handshake.OPEN_BEFORE_VERDICT
            self._add_namespace(NSConn(self, "", self.handler.namespaces[""]))
            self._start_timeouts()
        else:
            self._preack = []
            timeout = self._cfg.handshake_timeout
            if timeout:
                self._handshake_timer = self._loop.call_later(timeout, self._handshake_expired)
        self._run_on_connect(on_connect)

    @property
    def is_acknowledged(self) -> bool:
        return self._handshake in OPEN_STATES

    @property
    def _accepted(self) -> bool:
        """Whether ``on_connect`` accepted the connection (so ``on_disconnect`` fires)."""
        return self._handshake in ACCEPTED_STATES

    def _advance(self, event: HandshakeEvent) -> None:
        before = self._handshake
        after = TRANSITIONS.get((before, event))
        if after is None or self._closed:
            return
        self._handshake = after
        if after in OPEN_STATES and before not in OPEN_STATES:
            self._acknowledge()
        elif after is Handshake.REFUSED:
            # The answer to "M" is "H<text>", then the connection closes
            # (docs/topics/protocol.md#handshake).
            self._stop_handshake_timer()
            self._take_early()
            refusal = ack_refused(self._refusal or "")
            self._cfg.stats.messages_out += self.write_encoded(refusal, False)
            self.close(1008, "refused")

    def _acknowledge(self) -> None:
        self._stop_handshake_timer()
        queued = self._take_early()
        self._cfg.stats.messages_out += self.write_encoded(ack_ok(self.id), False)
        if self._ack_future is not None and not self._ack_future.done():
            self._ack_future.set_result(None)
        self._start_timeouts()
        # Frames the client sent before "M" are processed only now, after "A".
        for data, binary in queued:
            self.feed(data, binary)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self.is_acknowledged:
            self._cfg.stats.handshake_timeouts += 1
            self._cfg.log.debug(
                "[%s] closing: no handshake within %ss", self.id, self._cfg.handshake_timeout
            )
            self.close(1008, "handshake timeout")

    def _stop_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    # -- on_connect ----------------------------------------------------------------

    def _run_on_connect(self, hook: OnConnect | None) -> None:
        if hook is None:
            self._verdict(None)
            return
        try:
            result = hook(self)
        except Exception as exc:
            self._verdict(exc)
            return
        if inspect.isawaitable(result):
            self._tasks.spawn(self._await_on_connect(result), self._loop)
        else:
            self._verdict(result if isinstance(result, BaseException) else None)

    async def _await_on_connect(self, awaitable: Awaitable[Any]) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            result = exc
        self._verdict(result if isinstance(result, BaseException) else None)

    def _verdict(self, err: BaseException | None) -> None:
        if self._closed:
            return
        if err is None:
            self._advance(HandshakeEvent.ACCEPT)
            return
        self._cfg.stats.connect_refusals += 1
        text = str(err) or type(err).__name__
        if self._handshake is Handshake.OPEN_BEFORE_VERDICT:
            # on_connect let the client in already (it called connect()), so
            # "H" cannot be sent any more: close instead of ignoring the error.
            self._cfg.log.warning(
                "[%s] on_connect failed after the acknowledgement: %r", self.id, text
            )
            self.close(1008, "refused")
            return
        self._cfg.log.debug("[%s] refused by on_connect: %r", self.id, text)
        self._refusal = text
        self._advance(HandshakeEvent.REFUSE)

    # -- engine hooks ------------------------------------------------------------------

    def _feed_preack(self, data: bytes, binary: bool) -> None:
        if data == ACK_HELLO and self._handshake in AWAITING_HELLO:
            self._cfg.stats.messages_in += 1
            self._advance(HandshakeEvent.HELLO)
            return
        if not self._keep_early(data, binary):
            self._cfg.stats.limit_refusals += 1
            self._cfg.log.warning("[%s] closing: too many frames before the handshake", self.id)
            self.close(1008, "handshake not completed")

    async def _before_request(self) -> None:
        if not self.is_acknowledged:
            # connect() inside on_connect: let the client in now, otherwise the
            # request could never be answered.
            self._advance(HandshakeEvent.ADMIT)
            if not self.is_acknowledged:
                if self._ack_future is None:
                    self._ack_future = self._loop.create_future()
                await self._ack_future
                if self._closed:
                    raise ConnectionClosed()
        if self._caught_up is not True and not self.handler.only_native:
            await self._client_caught_up()

    async def _client_caught_up(self) -> None:
        """Wait for a pong to a ping sent after ``A`` (see the module docstring)."""
        waiter = self._caught_up
        if waiter is False:
            waiter = self._caught_up = self._loop.create_future()
            try:
                self.socket.ping()
            except Exception as exc:  # the socket is going away
                self._cfg.log.debug("[%s] ping failed: %r", self.id, exc)
                self._caught_up = True
                raise ConnectionClosed() from exc
        assert isinstance(waiter, asyncio.Future)
        try:
            async with asyncio.timeout(_PONG_WAIT):
                await asyncio.shield(waiter)
        except TimeoutError:
            pass  # a client that never answers pings: go on without the proof
        self._caught_up = True

    def alive(self) -> None:
        super().alive()
        waiter = self._caught_up
        if isinstance(waiter, asyncio.Future) and not waiter.done():
            waiter.set_result(None)

    def _abort_pending(self) -> None:
        super()._abort_pending()
        self._stop_handshake_timer()
        for fut in (self._ack_future, self._caught_up):
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(ConnectionClosed())
                fut.exception()
