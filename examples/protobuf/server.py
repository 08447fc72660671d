"""A chat whose messages are protocol buffers: the server.

Clients send each typed line as a protobuf ``Post`` (chat.proto) in the body of a
*binary* neffos message, the event ``post`` of the namespace ``chat``. The
server decodes ``msg.body``, stamps the line — a sequence number, the sender's
connection ID, the ``@mentions``, the time — and broadcasts the ``ChatLine`` to
every client of the namespace, the sender included, as a binary message
(``neffos.Message(..., set_binary=True)``, the server-side ``emit_binary``).
Joins and leaves are ChatLines too, told to the others, so every client sees
one numbered sequence of lines in one order. A body that is not a ``Post`` with
some text is answered with the error ``bad post: ...``; nothing else happens.

Why a newcomer is not sent its own join: neffos.js registers a namespace only
after its ``connect()`` promise resumes, so a message that arrives in the same
TCP read as the server's acceptance finds no namespace there and is dropped.

Connection IDs come from the ``X-Username`` header (a random ID without it).
The schema is compiled when the program starts; schema.py says how and why.

Run it, then clients (``client.py``) in other terminals::

    python examples/protobuf/server.py          # ws://127.0.0.1:8080/echo

It needs ``pip install protobuf grpcio-tools`` once (both are in neffos' ``test``
extra). Options: ``--host H --port P`` (``--port 0`` picks a free port and
prints it). Any language with a protobuf library can join with chat.proto: the
tests run a neffos.js peer that uses protobufjs (tests/js/protobuf.mjs).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import sys
import uuid

from schema import ChatLine, DecodeError, Message, Post

import neffos

MENTION = re.compile(r"@(\w+)")


class BadPost(ValueError):
    """A ``post`` whose body is not a Post, or has no text. The text says which."""

    @staticmethod
    def resolve_error(text: str) -> bool:
        return text.startswith("bad post: ")


# A known error is an answer to the peer, not a server failure: no traceback logged.
neffos.register_known_error(BadPost)


class Chat:
    """The server's handlers and its one piece of state, the next line's number."""

    def __init__(self) -> None:
        self.numbers = itertools.count(1)

    def events(self) -> dict[str, dict[str, neffos.EventHandler]]:
        return {
            "chat": {
                "post": self.on_post,
                neffos.ON_NAMESPACE_CONNECTED: self.on_joined,
                neffos.ON_NAMESPACE_DISCONNECT: self.on_left,
            }
        }

    def on_post(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        try:
            post = Post.FromString(msg.body)
        except DecodeError:
            raise BadPost(f"bad post: {len(msg.body)} bytes that are not a chat.Post") from None
        if not post.text.strip():
            raise BadPost("bad post: no text")
        line = self.stamp(ChatLine.KIND_POST, ns.conn.id, post.text)
        print(f"#{line.seq} {line.user}: {line.text}", flush=True)
        ns.broadcast(chat_message(line))

    def on_joined(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        line = self.stamp(ChatLine.KIND_JOINED, ns.conn.id)
        print(f"#{line.seq} * {line.user} joined", flush=True)
        ns.broadcast_others(chat_message(line))  # see the module's docstring

    def on_left(self, ns: neffos.NSConn, msg: neffos.Message) -> None:
        # also runs when the connection is lost (msg.is_forced)
        line = self.stamp(ChatLine.KIND_LEFT, ns.conn.id)
        print(f"#{line.seq} * {line.user} left", flush=True)
        ns.broadcast_others(chat_message(line))

    def stamp(self, kind: int, user: str, text: str = "") -> Message:
        line = ChatLine(
            seq=next(self.numbers),
            kind=kind,
            user=user,
            text=text,
            mentions=MENTION.findall(text),
        )
        line.sent_at.GetCurrentTime()
        return line


def chat_message(line: Message) -> neffos.Message:
    """``line`` as the binary event ``chat`` (the namespace is the broadcaster's)."""
    return neffos.Message(event="chat", body=line.SerializeToString(), set_binary=True)


def username(request: neffos.Request) -> str:
    return request.headers.get("X-Username") or uuid.uuid4().hex[:8]


async def run_server(host: str, port: int) -> None:
    server = neffos.Server(Chat().events(), id_generator=username)
    async with server:
        listener = await server.listen(host, port, path="/echo")
        print(f"listening on {listener.url}", flush=True)
        await asyncio.Event().wait()  # serve until Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    try:
        asyncio.run(run_server(args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
