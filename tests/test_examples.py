"""The examples, run as a user runs them: ``python examples/X.py server|client``.

Each test starts the example's server on a free port, reads the URL it prints,
drives clients through their stdin and checks what everybody prints. Nothing
sleeps: every step waits for an output line, bounded by a timeout.
"""

from __future__ import annotations

import socket

import pytest
from helpers.programs import WAIT, programs

import neffos

# -- echo.py ------------------------------------------------------------------------


async def test_echo_piped() -> None:
    async with programs() as run:
        server, url = await run.server("echo")
        client = await run.client("echo", url)
        await client.send("Greetings!", "", "two words")
        out, err = await client.finish()
        assert out == ["echo back: Greetings!", "echo back: two words"]
        assert err == ""

        conn_id = (await server.expect("connected")).split("]")[0] + "]"
        assert await server.expect("Greetings!") == f"{conn_id} Greetings!"
        assert await server.expect("two words") == f"{conn_id} two words"
        assert await server.expect("disconnected") == f"{conn_id} disconnected"
        await server.interrupt()


async def test_echo_many_piped_lines_all_answered_before_exit() -> None:
    lines = [f"line {i}" for i in range(1000)]
    async with programs() as run:
        _, url = await run.server("echo")
        client = await run.client("echo", url)
        await client.send(*lines)
        out, _ = await client.finish()
        assert out == [f"echo back: {line}" for line in lines]


async def test_echo_interactive() -> None:
    """Lines typed one at a time are answered one at a time (nothing waits for EOF)."""
    async with programs() as run:
        _, url = await run.server("echo")
        client = await run.client("echo", url)
        for text in ["one", "two", "ünïcödé ✓"]:
            await client.send(text)
            assert await client.expect("echo back") == f"echo back: {text}"
        out, _ = await client.finish()
        assert len(out) == 3


async def test_client_ctrl_c() -> None:
    async with programs() as run:
        _, url = await run.server("echo")
        client = await run.client("echo", url)
        await client.send("are you there?")
        await client.expect("echo back: are you there?")
        await client.interrupt()  # while it waits for stdin, which stays open


async def test_client_without_server_fails_cleanly() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"ws://127.0.0.1:{unused.getsockname()[1]}/echo"
        async with programs() as run:
            client = await run.client("echo", url)
            _, err = await client.finish(expect_code=1)
    assert err.startswith(f"error: cannot connect to {url}"), err
    assert "Traceback" not in err


# -- workday.py ---------------------------------------------------------------------


async def test_workday() -> None:
    async with programs() as run:
        server, url = await run.server("workday")
        client = await run.client("workday", url)
        await client.send("2024-06-03", "2024-06-08", "2024-06-09", "tomorrow", "2024-06-07")
        out, err = await client.finish()
        assert out == [
            "2024-06-03 is a Monday: a workday",
            "2024-06-08: not a workday",  # raised NotAWorkday, caught as NotAWorkday
            "2024-06-09: not a workday",
            "bad date: 'tomorrow'",  # raised BadDate, caught as BadDate
            "2024-06-07 is a Friday: a workday",
        ]
        assert err == ""
        # known errors are answers, not server failures: nothing was logged
        await server.interrupt()


async def test_workday_accepts_a_request_with_an_extra_field() -> None:
    """A newer client (or a neffos.js page) sends a field this server does not know."""
    async with programs() as run:
        server, url = await run.server("workday")
        async with neffos.dial(url, {"v1": {}}, timeout=WAIT) as client:
            ns = await client.connect("v1", timeout=WAIT)
            body = b'{"date":"2024-06-03","tz":"Europe/Athens"}'
            reply = await ns.ask("workday", body, timeout=WAIT)
        assert reply.unmarshal() == {"date": "2024-06-03", "weekday": "Monday"}
        await server.interrupt()


# -- chat.py ------------------------------------------------------------------------


async def test_chat_rooms() -> None:
    async with programs() as run:
        server, url = await run.server("chat")

        alice = await run.client("chat", url, "--user", "alice")
        assert await alice.expect("connected as") == "connected as alice"
        await alice.expect("joined lobby")
        bob = await run.client("chat", url, "--user", "bob", "--room", "lobby")
        await bob.expect("joined lobby")
        assert await alice.expect("bob joined") == "[lobby] * bob joined"
        carol = await run.client("chat", url, "--user", "carol", "--room", "kitchen")
        await carol.expect("joined kitchen")

        # alice talks to the lobby: bob hears her, with her X-Username as the sender
        await alice.send("hello bob")
        assert await bob.expect("hello bob") == "[lobby] alice: hello bob"
        await bob.send("hi alice")
        assert await alice.expect("hi alice") == "[lobby] bob: hi alice"

        # carol moves to the lobby. Anything the server had sent her before its
        # answer to her join would have arrived before "joined lobby".
        await carol.send("/join lobby")
        await carol.expect("left kitchen")
        await carol.expect("joined lobby")
        assert not any("hello bob" in line for line in carol.lines)
        assert await alice.expect("carol joined") == "[lobby] * carol joined"
        # ...and alice never got her own line back (it would have come before this notice)
        assert not any("alice: hello bob" in line for line in alice.lines)

        # bob leaves: the others are told, and bob cannot talk any more
        await bob.send("/leave")
        await bob.expect("left lobby")
        assert await alice.expect("bob left") == "[lobby] * bob left"
        await bob.send("anyone?")
        assert await bob.expect("not in a room") == "you are not in a room; type /join <room>"
        await bob.send("/join")
        await bob.expect("commands: /join <room>, /leave")

        # carol quits (Ctrl-D): the room is told that she left
        _, err = await carol.finish()
        assert err == ""
        assert await alice.expect("carol left") == "[lobby] * carol left"
        assert await server.expect("carol disconnected") == "carol disconnected"

        # the server stops (Ctrl-C): the clients notice it and exit with an error
        await server.interrupt()
        for client in (alice, bob):
            _, err = await client.finish(expect_code=1, eof=False)
            assert err == "error: the server closed the connection\n"
        # bob had left the lobby before carol quit: he was not told
        assert not any("carol left" in line for line in bob.lines)


async def test_chat_without_user_gets_an_id() -> None:
    async with programs() as run:
        _, url = await run.server("chat")
        client = await run.client("chat", url)  # no --user, default room
        line = await client.expect("connected as ")
        assert len(line.removeprefix("connected as ")) == 8
        await client.expect("joined lobby")
        await client.send("/leave", "hello?")
        await client.expect("left lobby")
        await client.expect("you are not in a room")
        await client.finish()


# -- native.py ----------------------------------------------------------------------


async def test_native_with_the_example_client() -> None:
    async with programs() as run:
        server, url = await run.server("native")
        client = await run.client("native", url)
        await client.send("ping", "not;neffos;framing;at;all;0;0;", "ünï")
        out, err = await client.finish()
        assert out == [
            "echo back: ping",
            "echo back: not;neffos;framing;at;all;0;0;",
            "echo back: ünï",
        ]
        assert err == ""
        assert (await server.expect("ping")).endswith("] ping")
        await server.interrupt()


async def test_native_with_any_websocket_client() -> None:
    from websockets.asyncio.client import connect

    async with programs() as run:
        server, url = await run.server("native")
        async with connect(url) as first, connect(url) as second:
            await first.send("hello")
            await second.send("world")
            assert await first.recv() == "echo back: hello"
            assert await second.recv() == "echo back: world"
        await server.expect("disconnected")
        await server.interrupt()


# -- class_handlers.py --------------------------------------------------------------


async def test_class_handlers() -> None:
    async with programs() as run:
        server, url = await run.server("class_handlers")
        first = await run.client("class_handlers", url)
        second = await run.client("class_handlers", url)

        # each connection has its own Session copy, so its own counter
        await first.send("a")
        assert await first.expect("a") == "#1 a"
        await second.send("x")
        assert await second.expect("x") == "#1 x"
        await first.send("b")
        assert await first.expect("b") == "#2 b"

        # the shared Stats object counts everybody's messages
        out, err = await first.finish()
        assert out == ["#1 a", "#2 b", "stats: 3 messages in total, 2 connection(s) now"]
        assert err == ""
        assert (await server.expect("left after")).endswith("left after 2 message(s)")

        out, err = await second.finish()
        assert out[-1] == "stats: 3 messages in total, 1 connection(s) now"
        assert (await server.expect("left after")).endswith("left after 1 message(s)")
        connected = [line for line in server.lines if "connected to v1" in line]
        assert len(connected) == 2
        await server.interrupt()


# -- all of them ----------------------------------------------------------------------


@pytest.mark.parametrize("example", ["echo", "workday", "chat", "native", "class_handlers"])
async def test_help(example: str) -> None:
    async with programs() as run:
        program = await run.start(example, "--help")
        out, err = await program.finish()
        assert out[0].startswith("usage:")
        assert "{server,client}" in out[0]
        assert err == ""
