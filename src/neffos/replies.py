"""Answers to the peer's system requests: connect, disconnect, join and leave.

Wire protocol: docs/topics/protocol.md#namespaces, #rooms.

A system request carries a wait token; the answer is an empty reply (accepted)
or an error reply (refused by the local ``_OnNamespaceConnect``,
``_OnNamespaceDisconnect``, ``_OnRoomJoin`` or ``_OnRoomLeave``). The local
events fire around the change exactly as in Go; what a client may not refuse
(a server's disconnect or leave) it does not.
"""

from __future__ import annotations

from .conn import Conn, NSConn
from .errors import BadNamespace, RemoteError
from .protocol import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    empty_reply,
    serialize,
)

__all__ = ["SYSTEM_REQUESTS", "SystemReplies"]

#: the events that are requests when they carry a wait token
SYSTEM_REQUESTS = frozenset(
    {ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE}
)


class SystemReplies(Conn):
    """The part of the engine that answers the peer's system requests."""

    __slots__ = ()

    def _send_error_reply(self, msg: Message, err: BaseException) -> None:
        if not str(err):
            err = RemoteError(type(err).__name__)
        reply = Message(msg.namespace, msg.event, room=msg.room, wait=msg.wait, err=err)
        self._cfg.stats.error_reply(self.write_encoded(serialize(reply), False))

    def _send_empty_reply(self, wait: str) -> None:
        self._cfg.stats.messages_out += self.write_encoded(empty_reply(wait), False)

    def _not_connected(self, msg: Message) -> None:
        # Go drops such frames silently and its askers hang; a tokened request
        # gets a prompt "bad namespace" instead (docs/topics/protocol.md#dispatch).
        # An empty reply (no event) that came too late is not a request.
        if msg.wait and msg.event and not msg.is_error and not msg.is_native:
            self._send_error_reply(msg, BadNamespace())

    def _is_system_request(self, msg: Message) -> bool:
        event = msg.event
        # neffos.js leaveAll() sends _OnRoomLeft with a token instead of
        # _OnRoomLeave (docs/topics/protocol.md#rooms): a server answers it as a leave.
        return event in SYSTEM_REQUESTS or (
            event == ON_ROOM_LEFT and not self.is_client and bool(msg.wait)
        )

    def _may_suspend(self, msg: Message) -> bool:
        """Whether answering ``msg`` runs an ``async`` handler (then it needs a task)."""
        if msg.event == ON_NAMESPACE_CONNECT:
            table = self.handler.namespaces.get(msg.namespace)
        else:
            ns = self._namespaces.get(msg.namespace)
            table = None if ns is None else ns.events
        return table is not None and table.has_async_system

    async def _reply_system(self, msg: Message) -> None:
        event = msg.event
        if event == ON_NAMESPACE_CONNECT:
            await self._reply_connect(msg)
        elif event == ON_NAMESPACE_DISCONNECT:
            await self._reply_disconnect(msg)
        else:
            ns = self._namespaces.get(msg.namespace)
            if ns is None:
                self._not_connected(msg)
            elif event == ON_ROOM_JOIN:
                await self._reply_room_join(ns, msg)
            else:
                await self._reply_room_leave(ns, msg)

    async def _reply_connect(self, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        if msg.namespace in self._namespaces:
            self._send_empty_reply(wait)
            return
        table = self.handler.namespaces.get(msg.namespace)
        if table is None:
            self._send_error_reply(msg, BadNamespace())
            return
        ns = NSConn(self, msg.namespace, table)
        err = await self._fire(ns, msg)
        if err is not None:
            self._send_error_reply(msg, err)
            return
        if msg.namespace in self._namespaces or self._closed:
            return
        self._add_namespace(ns)
        self._send_empty_reply(wait)
        await self._fire(ns, Message(msg.namespace, ON_NAMESPACE_CONNECTED))

    async def _reply_disconnect(self, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        ns = self._namespaces.get(msg.namespace)
        if ns is None:
            self._send_empty_reply(wait)
            return
        if self.is_client:
            # A client cannot refuse a server's disconnect (docs/topics/protocol.md#namespaces).
            await self._force_leave_all(ns, is_local=False)
            self._remove_namespace(ns)
            self._send_empty_reply(wait)
            await self._fire(ns, msg)
            return
        err = await self._fire(ns, msg)
        if err is not None:
            self._send_error_reply(msg, err)
            return
        if self._closed or self._namespaces.get(ns.namespace) is not ns:
            return  # closed meanwhile: the close sequence fired the events
        await self._force_leave_all(ns, is_local=False)
        self._remove_namespace(ns)
        self._send_empty_reply(wait)

    async def _reply_room_join(self, ns: NSConn, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        if msg.room not in ns.rooms:
            refused = self._room_limit(msg.room)
            if refused is not None:
                self._send_error_reply(msg, refused)
                return
            err = await self._fire(ns, msg)
            if err is not None:
                self._send_error_reply(msg, err)
                return
            if self._closed or self._namespaces.get(ns.namespace) is not ns:
                return  # closed or disconnected while the handler ran
            if msg.room not in ns.rooms:
                self._add_room(ns, msg.room)
            await self._fire(ns, Message(ns.namespace, ON_ROOM_JOINED, room=msg.room))
        self._send_empty_reply(wait)

    async def _reply_room_leave(self, ns: NSConn, msg: Message) -> None:
        wait = msg.wait
        if not wait or msg.is_noop:
            return
        room = ns.rooms.get(msg.room)
        if room is None:
            self._send_empty_reply(wait)
            return
        leave = Message(ns.namespace, ON_ROOM_LEAVE, room=msg.room)
        err = await self._fire(ns, leave)
        # a client cannot refuse (docs/topics/protocol.md#rooms)
        if err is not None and not self.is_client:
            self._send_error_reply(msg, err)
            return
        self._remove_room(ns, room)
        await self._fire(ns, Message(ns.namespace, ON_ROOM_LEFT, room=msg.room))
        self._send_empty_reply(wait)
