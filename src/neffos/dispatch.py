"""From a received message to its handler, and from the handler's result back to the peer.

:meth:`Dispatcher._dispatch` is what :mod:`neffos.processing` calls for every
message in order: system requests go to :mod:`neffos.replies`, events to their
handler. A handler's result answers the message: ``None`` sends nothing;
bytes, text, :class:`~neffos.Reply` or any marshalable value is echoed back as
the body; an exception is sent back as an error.

Wire protocol: docs/topics/protocol.md#dispatch, #answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

from .encoding import marshal
from .errors import RemoteError, Reply
from .processing import run_inline
from .protocol import PLAIN, Message, frame, is_binary_frame
from .replies import SystemReplies

__all__ = ["Dispatcher"]


class Dispatcher(SystemReplies):
    """The complete connection engine; :class:`~neffos.server.ServerConn` and
    :class:`~neffos.client.ClientConn` add their side's handshake."""

    __slots__ = ()

    def _dispatch(self, msg: Message) -> Awaitable[None] | None:
        """Process ``msg``; return what is left to await (an async handler), if anything."""
        if self._is_system_request(msg):
            coro = self._reply_system(msg)
            # Driven inline when no handler it calls is async (no task at all).
            return coro if self._may_suspend(msg) else run_inline(coro)
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            self._not_connected(msg)
            return None
        fn = ns.events.lookup(msg.event)
        if fn is None:
            return None
        try:
            result = fn.fn(ns, msg)  # an async handler only makes its coroutine here
        except Exception as exc:
            result = self._raised(exc, msg)
        if result is None:
            return None
        cls = result.__class__
        if cls is bytes or cls is str or not inspect.isawaitable(result):
            self._answer(msg, result)  # also an exception raised by the call itself
            return None
        return self._await_result(result, msg)

    async def _await_result(self, awaitable: Awaitable[Any], msg: Message) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            result = self._raised(exc, msg)
        if result is not None:
            self._answer(msg, result)

    def _answer(self, msg: Message, result: Any) -> None:
        """Write a handler's result back as an echo of ``msg``.

        Wire protocol: docs/topics/protocol.md#answers, #dispatch.
        """
        if msg.is_native:
            self._answer_native(msg, result)
            return
        if isinstance(result, BaseException):
            if isinstance(result, Reply):
                body = result.body
            else:
                if msg.is_error:
                    return  # no error ping-pong (docs/topics/protocol.md#error-texts)
                err = result if str(result) else RemoteError(type(result).__name__)
                reply = Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err)
                self._cfg.stats.error_replies += self.write(reply)  # counted out by write()
                return
        elif isinstance(result, bytes):
            body = result
        elif isinstance(result, str):
            body = result.encode()
        else:
            try:
                body = marshal(result)
            except Exception as exc:
                self._cfg.log.error(
                    "[%s] cannot encode the result of %r/%r: %s",
                    self.id, msg.namespace, msg.event, exc,
                )
                if not msg.is_error:
                    err = RemoteError("cannot encode the reply")
                    reply = Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err)
                    self._cfg.stats.error_replies += self.write(reply)
                return
        # The reply is the request echoed with the new body (docs/topics/protocol.md#answers),
        # written through the same checks as Conn.write but without a Message object.
        if self._closed or not self.can_write(msg):
            return
        data = frame(msg.wait, msg.namespace, msg.room, msg.event, PLAIN, body)
        sent = self.write_encoded(data, is_binary_frame(data, msg.set_binary))
        self._cfg.stats.messages_out += sent

    def _answer_native(self, msg: Message, result: Any) -> None:
        # A native peer cannot read neffos frames: a reply goes back as a raw
        # frame of the same type, an error is not sent at all (docs/topics/protocol.md#native).
        if isinstance(result, Reply):
            body = result.body
        elif isinstance(result, BaseException):
            return
        elif isinstance(result, bytes | str):
            body = result.encode() if isinstance(result, str) else result
        else:
            try:
                body = marshal(result)
            except Exception as exc:
                self._cfg.log.error("[%s] cannot encode a native reply: %s", self.id, exc)
                return
        self.write(Message(body=body, is_native=True, set_binary=msg.set_binary))
