"""Handler shapes: Events, Namespaces, on(), joins, timeouts, class-based handlers, encoding."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest
from helpers import UNIT, Recorder, environment

import neffos
from neffos import ConnHandler, Message


def test_shapes_compile_to_the_same_thing() -> None:
    def fn(ns: neffos.NSConn, m: Message) -> None: ...

    for handler in ({"chat": fn}, neffos.Events(chat=fn)):
        compiled = ConnHandler.compile(handler)
        assert list(compiled.namespaces) == [""]
        assert compiled.namespaces[""].lookup("chat").fn is fn  # type: ignore[union-attr]
    for handler in ({"v1": {"chat": fn}}, neffos.Namespaces(v1={"chat": fn})):
        compiled = ConnHandler.compile(handler)
        assert list(compiled.namespaces) == ["v1"]
    with pytest.raises(TypeError):
        ConnHandler.compile({"chat": fn, "v1": {"x": fn}})
    with pytest.raises(TypeError):
        ConnHandler.compile(42)


def test_on_and_decorators() -> None:
    nss = neffos.Namespaces()

    @nss.on("v1", "chat")
    def chat(ns: neffos.NSConn, m: Message) -> None: ...

    nss.on("v1", "other", chat).on("v2", "x", chat)
    events = neffos.Events()
    events.on("a", chat)

    @events.on("b")
    async def b(ns: neffos.NSConn, m: Message) -> None: ...

    compiled = ConnHandler.compile(nss)
    assert sorted(compiled.namespaces) == ["v1", "v2"]
    assert sorted(compiled.namespaces["v1"].names) == ["chat", "other"]
    table = ConnHandler.compile(events).namespaces[""]
    assert table.lookup("b").is_async and not table.lookup("a").is_async  # type: ignore[union-attr]


def test_join_conn_handlers_and_timeouts() -> None:
    def one(ns: neffos.NSConn, m: Message) -> None: ...

    def two(ns: neffos.NSConn, m: Message) -> None: ...

    joined = neffos.join_conn_handlers(
        {"v1": {"a": one, "b": one}},
        neffos.with_timeout({"v1": {"b": two}, "v2": {"c": two}}, read_timeout=5, write_timeout=3),
    )
    assert joined.namespaces["v1"].lookup("a").fn is one  # type: ignore[union-attr]
    assert joined.namespaces["v1"].lookup("b").fn is two  # later wins  # type: ignore[union-attr]
    assert (joined.read_timeout, joined.write_timeout) == (5, 3)
    assert ConnHandler.compile([{"v1": {}}, {"v2": {}}]).namespaces.keys() == {"v1", "v2"}


def test_native_modes() -> None:
    def native(ns: neffos.NSConn, m: Message) -> None: ...

    only = ConnHandler.compile({"": {neffos.ON_NATIVE_MESSAGE: native}})
    assert only.allow_native and only.only_native
    mixed = ConnHandler.compile({"": {neffos.ON_NATIVE_MESSAGE: native}, "v1": {}})
    assert mixed.allow_native and not mixed.only_native
    assert not ConnHandler.compile({"v1": {}}).allow_native


class SharedChat:
    """A shared object: methods take (ns, msg)."""

    namespace = "v1"

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def on_chat(self, ns: neffos.NSConn, msg: Message) -> bytes:
        self.rec.add(("shared", msg.body))
        return b"ok"

    def on_namespace_connected(self, ns: neffos.NSConn, msg: Message) -> None:
        self.rec.add(("connected", ns.namespace))

    def helper(self) -> None:  # not an event: the matcher skips it
        raise AssertionError


class PerConn:
    """A per-connection object: a fresh copy per namespace connection."""

    conn: neffos.NSConn

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.count = 0

    async def on_count(self, msg: Message) -> bytes:
        self.count += 1
        return f"{self.conn.conn.id}:{self.count}".encode()

    def OnNamespaceDisconnect(self, msg: Message) -> None:
        self.rec.add(("bye", self.count))


def test_from_object_registers_methods() -> None:
    rec = Recorder()
    handler = neffos.from_object(
        SharedChat(rec), event_matcher=neffos.event_trim_prefix_matcher("on_")
    )
    compiled = ConnHandler.compile(handler)
    assert list(compiled.namespaces) == ["v1"]
    assert compiled.namespaces["v1"].names == {"chat", neffos.ON_NAMESPACE_CONNECTED}
    handler = neffos.from_object(PerConn(rec), namespace="c", read_timeout=7, write_timeout=2)
    compiled = ConnHandler.compile(handler)
    assert (compiled.read_timeout, compiled.write_timeout) == (7, 2)
    names = compiled.namespaces["c"].names
    assert names == {"on_count", neffos.ON_NAMESPACE_DISCONNECT}
    prefixed = neffos.from_object(SharedChat(rec), event_matcher=neffos.event_prefix_matcher("on_"))
    assert ConnHandler.compile(prefixed).namespaces["v1"].names == {
        "on_chat", neffos.ON_NAMESPACE_CONNECTED,
    }

    class Empty:
        pass

    with pytest.raises(TypeError):
        neffos.from_object(Empty())


async def test_class_based_handlers_over_the_wire(transport: str) -> None:
    rec = Recorder()
    handler = neffos.join_conn_handlers(
        neffos.from_object(SharedChat(rec), event_matcher=neffos.event_trim_prefix_matcher("on_")),
        neffos.from_object(
            PerConn(rec), namespace="counter",
            event_matcher=neffos.event_trim_prefix_matcher("on_"),
        ),
    )
    async with environment(transport) as env:
        server = await env.server(handler, id_generator=lambda r: r.headers["X-Username"])
        a = await env.dial(server, {"v1": {}, "counter": {}}, headers={"X-Username": "a"})
        b = await env.dial(server, {"v1": {}, "counter": {}}, headers={"X-Username": "b"})
        v1 = await a.connect("v1")
        assert (await v1.ask("chat", "hi", timeout=5 * UNIT)).body == b"ok"
        ca = await a.connect("counter")
        cb = await b.connect("counter")
        assert (await ca.ask("count", timeout=5 * UNIT)).body == b"a:1"
        assert (await ca.ask("count", timeout=5 * UNIT)).body == b"a:2"
        assert (await cb.ask("count", timeout=5 * UNIT)).body == b"b:1"  # its own copy
        (sns,) = [n for n in server.get_connections_by_namespace("counter") if n.conn.id == "a"]
        assert isinstance(sns.value, PerConn) and sns.value.count == 2
        await ca.disconnect()
        await rec.wait_for(lambda items: ("bye", 2) in items)
        assert ("connected", "v1") in rec.items and ("shared", b"hi") in rec.items


async def test_read_and_write_timeouts_from_handler(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {}})
        client = await env.dial(server, neffos.with_timeout({"v1": {}}, read_timeout=0.1 * UNIT))
        # The client's read timeout: the server sends nothing, so the client gives up.
        await asyncio.wait_for(client.wait_closed(), 5 * UNIT)


# -- encoding ----------------------------------------------------------------------


@dataclasses.dataclass
class User:
    name: str
    age: int


class Proto:
    def __init__(self, value: str = "") -> None:
        self.value = value

    def marshal(self) -> bytes:
        return b"P:" + self.value.encode()

    def unmarshal(self, body: bytes) -> None:
        self.value = body[2:].decode()


def test_marshal() -> None:
    assert neffos.marshal({"a": [1, 2]}) == b'{"a":[1,2]}'
    assert neffos.marshal(User("kim", 3)) == b'{"name":"kim","age":3}'
    assert neffos.marshal("é") == "é".encode() and neffos.marshal(b"raw") == b"raw"
    assert neffos.marshal(Proto("x")) == b"P:x"
    assert json.loads(neffos.marshal({"t": (1, 2)})) == {"t": [1, 2]}
    with pytest.raises(TypeError):
        neffos.marshal(object())


def test_unmarshal() -> None:
    msg = Message("v1", "e", b'{"name":"kim","age":3}')
    assert msg.unmarshal() == {"name": "kim", "age": 3}
    assert msg.unmarshal(User) == User("kim", 3)
    assert msg.unmarshal(dict) == {"name": "kim", "age": 3}
    target = User("", 0)
    assert msg.unmarshal(target) is target and target == User("kim", 3)
    proto = Message(body=b"P:value").unmarshal(Proto())
    assert isinstance(proto, Proto) and proto.value == "value"
    assert Message(body=b"[1,2]").unmarshal(list) == [1, 2]
    # a body that does not decode is the peer's mistake: InvalidPayload, from the cause
    with pytest.raises(neffos.InvalidPayload) as bad:
        Message(body=b"not json").unmarshal()
    assert isinstance(bad.value.__cause__, ValueError)
    with pytest.raises(neffos.InvalidPayload):
        Message(body=b"[1]").unmarshal(User)
    # like Go's encoding/json, unknown fields are ignored; missing ones are an error
    assert Message(body=b'{"name":"a","age":1,"tz":"x"}').unmarshal(User) == User("a", 1)
    with pytest.raises(neffos.InvalidPayload) as missing:
        Message(body=b'{"name":"a"}').unmarshal(User)
    assert "age" in str(missing.value.__cause__)
    with pytest.raises(TypeError):  # the caller's mistake stays a TypeError
        Message(body=b"{}").unmarshal(3)
    for body, into in ((b"[1]", dict), (b"5", list), (b"[1]", {})):  # the peer's, again
        with pytest.raises(neffos.InvalidPayload):
            Message(body=body).unmarshal(into)
    partial = User("old", 9)
    Message(body=b'{"age":2,"nope":1}').unmarshal(partial)
    assert partial == User("old", 2) and not hasattr(partial, "nope")


def test_message_basics() -> None:
    m = Message("v1", "e", "héllo", room="r", to="bob")
    assert m.body == "héllo".encode() and m.text == "héllo"
    assert not m.is_error and "room='r'" in repr(m)
    copy = m.copy(event="f")
    assert (copy.event, copy.namespace, copy.to) == ("f", "v1", "bob") and m.event == "e"
    with pytest.raises(TypeError):
        Message(body=42)  # type: ignore[arg-type]


def test_public_api() -> None:
    for name in neffos.__all__:
        assert getattr(neffos, name) is not None, name
    assert neffos.ON_NAMESPACE_CONNECT == "_OnNamespaceConnect"
    assert neffos.is_system_event("_OnRoomLeft") and not neffos.is_system_event("_OnAnyEvent")
    assert issubclass(neffos.AskTimeout, TimeoutError)
    for exc in (neffos.BadNamespace, neffos.BadRoom, neffos.WriteClosed, neffos.InvalidPayload,
                neffos.RemoteError, neffos.AskTimeout, neffos.DialError,
                neffos.HandshakeRefused, neffos.ConnectionClosed, neffos.TooManyPendingAsks,
                neffos.CloseError):
        assert issubclass(exc, neffos.NeffosError)
    assert str(neffos.CloseError(-1, "write closed")) == "[-1] write closed"
    with pytest.raises(TypeError):
        neffos.register_known_error("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        neffos.register_known_error(ValueError)  # a class needs resolve_error
    with pytest.raises(ValueError):
        neffos.transports.load("carrier-pigeon")


async def test_a_result_that_cannot_be_encoded_keeps_the_connection(transport: str) -> None:
    async with environment(transport) as env:
        server = await env.server(
            {"chat": {"bad": lambda ns, m: object(), "ok": lambda ns, m: b"ok"}}
        )
        client = await env.dial(server, {"chat": {}})
        ns = await client.connect("chat")
        with pytest.raises(neffos.RemoteError, match="cannot encode the reply"):
            await ns.ask("bad", timeout=5 * UNIT)
        ns.emit("bad")  # a plain emit too: nothing may escape into the transport
        assert (await ns.ask("ok", timeout=5 * UNIT)).body == b"ok"


async def test_a_body_that_does_not_decode_is_answered_not_logged(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with environment(transport) as env:
        server = await env.server({"v1": {"add": lambda ns, m: m.unmarshal(User)}})
        client = await env.dial(server, {"v1": {}})
        ns = await client.connect("v1")
        with pytest.raises(neffos.InvalidPayload):
            await ns.ask("add", b"not json", timeout=5 * UNIT)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
