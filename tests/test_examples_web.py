"""examples/auth.py and web_app.py, run as a user runs them, on each of their stacks.

A good token gets in and its claims reach the handlers; a missing, forged or
expired token gets 401 before any WebSocket exists; a banned user's valid
token is refused by on_connect, and that text is what the client prints.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers.programs import programs
from helpers.wire import http_response

STACKS = ["neffos", "asgi", "aiohttp"]


async def token(run: object, *args: str) -> str:
    program = await run.start("auth", "token", *args)  # type: ignore[attr-defined]
    out, _ = await program.finish()
    (line,) = out
    return str(line)


@pytest.mark.parametrize("stack", STACKS)
async def test_auth_example(stack: str) -> None:
    async with programs() as run:
        server = await run.start("auth", "server", "--port", "0", "--stack", stack)
        url = (await server.expect("listening on ")).removeprefix("listening on ")
        good = await token(run, "--user", "alice", "--role", "admin")

        for extra in ([], ["--subprotocol"]):
            client = await run.start("auth", "client", "--url", url, "--token", good, *extra)
            out, err = await client.finish()
            assert out == ["you are alice (role: admin)"], (extra, err)

        refused = {
            "forged": await token(run, "--user", "alice", "--secret", "not the server's secret"),
            "expired": await token(run, "--user", "alice", "--expires", "-60"),
            "garbage": "not-a-token",
        }
        for what, bad in refused.items():
            client = await run.start("auth", "client", "--url", url, "--token", bad)
            out, err = await client.finish(expect_code=1)
            assert out == [] and "received 401" in err, (what, err)

        banned = await token(run, "--user", "mallory")
        client = await run.start("auth", "client", "--url", url, "--token", banned)
        out, err = await client.finish(expect_code=1)
        assert out == [] and err.strip() == "error: mallory is banned", err
        await server.interrupt()


# -- web_app.py --------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["fastapi", "aiohttp"])
async def test_web_app_example(stack: str) -> None:
    async with programs() as run:
        server = await run.start("web_app", "server", "--port", "0", "--stack", stack)
        url = (await server.expect("listening on ")).removeprefix("listening on ")
        base = url.replace("ws://", "http://").removesuffix("/echo")
        client = await run.start("echo", "client", "--url", url)
        await client.send("hello")
        assert await client.expect("echo back") == "echo back: hello"
        status, body = await http_get(f"{base}/api/stats")
        assert (status, json.loads(body)) == (200, {"connections": 1})
        status, body = await http_get(f"{base}/")
        assert status == 200 and b"/echo" in body
        out, _ = await client.finish()
        assert out == ["echo back: hello"]
        await server.interrupt()


async def http_get(url: str) -> tuple[int, bytes]:
    host, _, rest = url.removeprefix("http://").partition("/")
    name, _, port = host.partition(":")
    reader, writer = await asyncio.open_connection(name, int(port))
    writer.write(f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    status, _, body = await http_response(reader)
    writer.close()
    return status, body
