"""Sans-I/O tier: every vector of protocol-vectors.json, plus round-trip properties."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neffos import errors, protocol
from neffos.protocol import Message

VECTORS: list[dict[str, Any]] = json.loads(
    (pathlib.Path(__file__).parent / "protocol-vectors.json").read_text()
)
FRAMES = [v for v in VECTORS if v["decoded"].get("kind") != "ack"]
ACKS = [v for v in VECTORS if v["decoded"].get("kind") == "ack"]
ENCODABLE = [v for v in VECTORS if "go" in v.get("encoders_verified", [])]


def frame_bytes(v: dict[str, Any]) -> bytes:
    if "bytes_b64" in v:
        return base64.b64decode(v["bytes_b64"])
    return v["bytes"].encode()


def test_vector_count() -> None:
    assert len(VECTORS) == 77
    assert len(FRAMES) + len(ACKS) == 77


@pytest.mark.parametrize("v", FRAMES, ids=[v["name"] for v in FRAMES])
def test_decode_vector(v: dict[str, Any]) -> None:
    opts = v["decode_options"]
    msg = protocol.parse(
        frame_bytes(v),
        v["frame"] == "binary",
        allow_native=opts["allow_native"],
        only_native=opts["only_native"],
    )
    want = v["decoded"]
    got = {
        "wait": msg.wait,
        "namespace": msg.namespace,
        "room": msg.room,
        "event": msg.event,
        "is_error": msg.is_error,
        "is_noop": msg.is_noop,
        "error_text": None if msg.err is None else str(msg.err),
        "is_native": msg.is_native,
        "from_explicit": msg.from_explicit,
        "from_stack_exchange": msg.from_stack_exchange,
        "is_invalid": msg.is_invalid,
        "set_binary": msg.set_binary,
        "is_wait_on_server": protocol.is_wait_on_server(msg.wait),
        "is_wait_on_client": protocol.is_wait_on_client(msg.wait),
    }
    if "body_b64" in want:
        got["body_b64"] = base64.b64encode(msg.body).decode()
    else:
        got["body"] = msg.body.decode()
    assert got == want


@pytest.mark.parametrize("v", ENCODABLE, ids=[v["name"] for v in ENCODABLE])
def test_encode_vector(v: dict[str, Any]) -> None:
    src = v["encode_from"]
    if "empty_reply_to_wait" in src:
        assert protocol.empty_reply(src["empty_reply_to_wait"]) == frame_bytes(v)
        return
    body = base64.b64decode(src["BodyB64"]) if "BodyB64" in src else src.get("Body", "")
    msg = Message(
        src.get("Namespace", ""),
        src.get("Event", ""),
        body,
        room=src.get("Room", ""),
        wait=src.get("wait", ""),
        is_noop=src.get("isNoOp", False),
        is_native=src.get("IsNative", False),
        set_binary=src.get("SetBinary", False),
        from_explicit=src.get("FromExplicit", ""),
    )
    if "ErrText" in src:
        msg.err = errors.RemoteError(src["ErrText"])
    if "Reply" in src:
        msg.err = errors.Reply(src["Reply"])
    assert protocol.serialize(msg) == frame_bytes(v)


@pytest.mark.parametrize("v", ACKS, ids=[v["name"] for v in ACKS])
def test_ack_vector(v: dict[str, Any]) -> None:
    data = frame_bytes(v)
    want = v["decoded"]
    kind, value = protocol.parse_ack(data) or ("", "")
    assert kind == want["ack_type"]
    if kind == "A":
        assert value == want["id"]
        assert protocol.ack_ok(value) == data
    elif kind == "H":
        assert value == want["error_text"]
        assert protocol.ack_refused(value) == data
    else:
        assert data == protocol.ACK_HELLO


def test_known_errors_resolve_to_builtin_types() -> None:
    for text, cls in [
        ("bad namespace", errors.BadNamespace),
        ("bad room", errors.BadRoom),
        ("write closed", errors.WriteClosed),
        ("invalid payload", errors.InvalidPayload),
    ]:
        msg = protocol.parse(f"$1;ns;;ev;1;0;{text}".encode())
        assert type(msg.err) is cls
        assert str(msg.err) == text
    other = protocol.parse(b"$1;ns;;ev;1;0;[-1] write closed")
    assert isinstance(other.err, errors.RemoteError)
    assert other.err.text == "[-1] write closed"


def test_serialize_refuses_wait_with_from_explicit() -> None:
    with pytest.raises(ValueError):
        protocol.serialize(Message("ns", "ev", wait="1", from_explicit="neffos(0xa)"))


def test_token_generator_is_unique_and_go_shaped() -> None:
    gen = protocol.TokenGenerator()
    tokens = [gen() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(t.isdigit() for t in tokens)
    client = protocol.TokenGenerator("$")()
    assert client.startswith("$") and client[1:].isdigit()
    assert not protocol.is_wait_on_server(client) and protocol.is_wait_on_client(client)


def test_protocol_module_imports_no_asyncio() -> None:
    """protocol.py is sans-I/O: it and what it imports never import asyncio or sockets."""
    import ast

    src = pathlib.Path(protocol.__file__).parent
    allowed_local = {"errors", "encoding", "protocol"}
    for name in allowed_local:
        tree = ast.parse((src / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert (node.module or "") in allowed_local, (name, node.module)
                    continue
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in {"asyncio", "socket", "selectors"}, name


def test_import_neffos_is_light() -> None:
    code = (
        "import sys, neffos;"
        "heavy = {'picows', 'websockets', 'aiohttp', 'redis', 'nats'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- properties ---------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20).filter(
    lambda s: protocol.SEPARATOR_TOKEN not in s
)
bodies = st.binary(max_size=200)
tokens = st.one_of(
    st.just(""),
    st.from_regex(r"\$[0-9]{1,20}", fullmatch=True),
    st.from_regex(r"[1-9][0-9]{0,19}", fullmatch=True),
    st.from_regex(r"\$[0-9]{1,8}\.[0-9]{1,8}", fullmatch=True),
)


@given(names, names, names, bodies, tokens, st.booleans(), st.booleans())
def test_roundtrip(
    ns: str, room: str, event: str, body: bytes, wait: str, noop: bool, binary: bool
) -> None:
    msg = Message(ns, event, body, room=room, wait=wait, is_noop=noop, set_binary=binary)
    out = protocol.parse(protocol.serialize(msg), binary)
    assert not out.is_invalid
    assert (out.namespace, out.room, out.event, out.body, out.wait, out.is_noop) == (
        ns,
        room,
        event,
        body,
        wait,
        noop,
    )
    assert out.set_binary == binary and out.err is None


@given(names, names, st.text(min_size=1, max_size=100), tokens)
def test_error_roundtrip(ns: str, event: str, text: str, wait: str) -> None:
    msg = Message(ns, event, wait=wait, err=errors.RemoteError(text))
    out = protocol.parse(protocol.serialize(msg))
    assert out.is_error and str(out.err) == text
    assert out.body == b""


@given(st.binary(max_size=300), st.booleans(), st.booleans(), st.booleans())
def test_parse_never_raises(data: bytes, binary: bool, allow: bool, only: bool) -> None:
    msg = protocol.parse(data, binary, allow_native=allow, only_native=allow and only)
    if msg.is_invalid:
        assert not msg.is_native
    elif msg.is_native and (only or data.count(b";") < 6):
        assert msg.body == data


@given(st.text(max_size=40))
def test_escape_is_undone_by_unescape(name: str) -> None:
    if protocol.SEPARATOR_TOKEN not in name:
        assert protocol.unescape(protocol.escape(name)) == name
    assert ";" not in protocol.escape(name)
