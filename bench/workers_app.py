"""The benchmark's neffos application, served by the ``neffos`` command itself.

The ``workers`` scenario of ``bench/run.py`` runs
``python -m neffos serve workers_app:make_server --workers N [--redis ...]`` in
this directory: the same namespace ``bench`` as the ``neffos`` target of
``servers.py`` (``echo`` answers an ask with its body, ``chat`` is broadcast to
the sender's room, excluding the sender), with the same generous buffers.
"""

from __future__ import annotations

import neffos


def make_server() -> neffos.Server:
    def echo(ns: neffos.NSConn, msg: neffos.Message) -> bytes:
        return msg.body

    def chat(ns: neffos.NSConn, msg: neffos.Message) -> None:
        server.broadcast(ns, msg)

    server = neffos.Server(
        {"bench": {"echo": echo, "chat": chat}},
        send_buffer=16 << 20,
        max_queued_frames=1 << 20,
    )
    return server
