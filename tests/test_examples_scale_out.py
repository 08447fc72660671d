"""examples/scale_out/, run as its README says: one broker, two servers, a client on each.

The broker is a real redis-server / nats-server (tests/helpers/brokers.py); the servers
and clients are the example scripts, driven through stdin/stdout like
tests/test_examples.py. Nothing sleeps: a server subscribes to the bus in the
background, so the first line is typed again (with a new number) until it has
crossed — every later step waits for an output line.
"""

from __future__ import annotations

import itertools

import pytest
from helpers import UNIT
from helpers.brokers import running
from helpers.programs import Program, Programs, programs

pytestmark = pytest.mark.broker

RETRY = 1 * UNIT


async def start_server(run: Programs, *bus: str) -> tuple[Program, str, str]:
    server = await run.start("scale_out/server", "--port", "0", *bus)
    line = await server.expect("listening on ")
    url = line.removeprefix("listening on ")
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/echo"), line
    port = url.removeprefix("ws://127.0.0.1:").removesuffix("/echo")
    await server.expect("sharing rooms over ")
    return server, url, port


async def say_until_heard(speaker: Program, listener: Program, text: str) -> str:
    """Type ``text (n)`` until the listener prints it; return the line it printed."""
    for n in itertools.count(1):
        await speaker.send(f"{text} ({n})")
        try:
            return await listener.expect(f"{text} (", timeout=RETRY)
        except AssertionError:
            assert n < 15, f"{text!r} never crossed the bus"


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_two_servers_one_bus(kind: str) -> None:
    async with running(kind) as broker, programs() as run:
        bus = ["--redis", broker.address] if kind == "redis" else ["--nats", broker.url]
        first, url1, port1 = await start_server(run, *bus)
        second, url2, port2 = await start_server(run, *bus)

        kim = await run.start("scale_out/client", "--url", url1, "--user", "kim")
        assert await kim.expect("connected as") == "connected as kim"
        await kim.expect("joined lobby")
        lee = await run.start("scale_out/client", "--url", url2, "--user", "lee")
        await lee.expect("joined lobby")

        # a line typed on one server's client shows up on the other server's client
        heard = await say_until_heard(kim, lee, "hello from 8080")
        assert heard.startswith(f"[lobby] kim@{port1}: hello from 8080 (")
        heard = await say_until_heard(lee, kim, "hi from 8081")
        assert heard.startswith(f"[lobby] lee@{port2}: hi from 8081 (")

        # both servers listen now: a newcomer's notices and lines cross at once
        ann = await run.start("scale_out/client", "--url", url2, "--user", "ann")
        await ann.expect("joined lobby")
        assert await kim.expect("ann joined") == f"[lobby] * ann joined on {port2}"
        await kim.send("welcome ann")
        assert await ann.expect("welcome ann") == f"[lobby] kim@{port1}: welcome ann"
        assert await lee.expect("welcome ann") == f"[lobby] kim@{port1}: welcome ann"
        _, err = await ann.finish()  # Ctrl-D
        assert err == ""
        assert await kim.expect("ann left") == "[lobby] * ann left"

        # nobody heard their own lines
        assert not any("kim@" in line for line in kim.lines)
        assert not any("lee@" in line for line in lee.lines)

        for client in (kim, lee):
            _, err = await client.finish()
            assert err == ""
        await first.expect("kim disconnected")
        await second.expect("lee disconnected")
        for server in (first, second):
            await server.interrupt()  # Ctrl-C: exit 0, nothing on stderr
            # what could not be published would be counted as lost
            assert ", 0 lost, " in await server.expect("bus: ")


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_server_without_broker_fails_cleanly(kind: str) -> None:
    from helpers.brokers import free_port

    address = f"127.0.0.1:{free_port()}" if kind == "redis" else f"nats://127.0.0.1:{free_port()}"
    async with programs() as run:
        server = await run.start("scale_out/server", "--port", "0", f"--{kind}", address)
        # within the exchange's dial timeout (5 s), not forever
        _, err = await server.finish(expect_code=1)
    name = "Redis" if kind == "redis" else "NATS"
    assert err.startswith(f"error: cannot reach {name}"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("script", ["server", "client"])
async def test_help(script: str) -> None:
    async with programs() as run:
        program = await run.start(f"scale_out/{script}", "--help")
        out, err = await program.finish()
    assert out[0].startswith("usage:")
    assert err == ""
