"""Handlers that record every system event, for tests of event order."""

from __future__ import annotations

from typing import Any

import neffos
from neffos import (
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
)

from . import Recorder

__all__ = ["SYSTEM", "of", "recording"]

SYSTEM = [
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_CONNECTED,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_JOINED,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
]


def recording(rec: Recorder, side: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Events of namespace "v1" that record (side, event, room, is_local, is_forced)."""

    def make(event: str) -> Any:
        def handler(ns: neffos.NSConn, msg: neffos.Message) -> None:
            rec.add((side, event, msg.room, msg.is_local, msg.is_forced))

        return handler

    events: dict[str, Any] = {e: make(e) for e in SYSTEM}
    events.update(extra or {})
    return {"v1": events}


def of(rec: Recorder, side: str) -> list[tuple[str, str, bool, bool]]:
    return [(e, room, local, forced) for s, e, room, local, forced in rec.items if s == side]
