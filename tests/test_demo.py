"""The demo chat, ``python -m neffos demo``, used as people use it.

* Two headless Chromium pages (Debian's ``chromium`` driven by playwright, no
  browser download) and one terminal client chat in one room, see each other's
  lines, joins and leaves; a screenshot of a page goes to ``tests/output/``.
  Skipped, with the reason, where there is no Chromium (``scripts/test.sh``
  installs it when run as root); required with ``NEFFOS_REQUIRE_BROWSER=1``.
* Terminal clients alone, the page's HTTP answers, a forged sender name.
* Without npm: one line saying how to get the page; the demo still runs.
* neffos.js from npm into the cache: once, reused, failures reported.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.programs import ENV, WAIT, Program

import neffos
from neffos.__main__ import main
from neffos.demo import NO_NPM, prepare_neffos_js, start
from neffos.demo.server import chat_line

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "tests" / "output"
SYSTEM_CHROMIUM = Path("/usr/bin/chromium")


def required(variable: str, problem: str) -> None:
    """Skip for ``problem``, or fail when the environment ``variable`` is ``1`` (CI)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def chromium() -> str:
    """The Chromium to drive: ``$NEFFOS_CHROMIUM``, else Debian's, else ``chromium`` on PATH."""
    path = os.environ.get("NEFFOS_CHROMIUM") or (
        str(SYSTEM_CHROMIUM) if SYSTEM_CHROMIUM.exists() else shutil.which("chromium")
    )
    if not path or not Path(path).is_file():
        required(
            "NEFFOS_REQUIRE_BROWSER",
            f"no Chromium at {path or SYSTEM_CHROMIUM} (scripts/test.sh installs Debian's "
            "chromium when run as root)",
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        required("NEFFOS_REQUIRE_BROWSER", "playwright is not installed (pip install -e '.[test]')")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def neffos_js_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo cache directory with neffos.js installed by the demo's own ``npm ci``."""
    if shutil.which("npm") is None:
        for variable in ("NEFFOS_REQUIRE_BROWSER", "NEFFOS_REQUIRE_NODE"):
            if os.environ.get(variable) == "1":
                pytest.fail(f"{variable}=1 but npm is not installed", pytrace=False)
        pytest.skip("npm is not installed: the demo page needs neffos.js from npm")
    cache = tmp_path_factory.mktemp("demo-cache")
    said: list[str] = []
    script = asyncio.run(prepare_neffos_js(cache, say=said.append))
    assert script is not None and script.is_file(), said
    return cache


# -- the command -------------------------------------------------------------------


async def run_demo(*args: str, env: dict[str, str] | None = None) -> Program:
    """``python -m neffos demo ARGS`` (or ``demo client ARGS``), as a user runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "neffos", "demo", *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or ENV,
    )
    return Program("python -m neffos demo " + " ".join(args), proc)


@asynccontextmanager
async def demo_server(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[
    tuple[Program, str, str]
]:
    """The demo on a free port: the program, its page URL and its WebSocket URL.

    It must stop quietly on Ctrl-C at the end.
    """
    server = await run_demo("--port", "0", *args, env=env)
    try:
        line = await server.expect("Demo chat on ")
        found = re.search(r"(http://127\.0\.0\.1:\d+/) \(WebSocket endpoint (ws://\S+)\)", line)
        assert found, line
        yield server, found[1], found[2]
        await server.interrupt()
    finally:
        await server.kill()


async def client(url: str, user: str, room: str) -> Program:
    program = await run_demo("client", "--url", url, "--user", user, "--room", room)
    await program.expect(f"connected to {url} as {user}")
    await program.expect(f"joined room {room}")
    return program


async def http(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request; the status, headers and body of the answer."""
    found = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert found, url
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection(found[1], int(found[2]))
        writer.write(f"{method} {found[3]} HTTP/1.1\r\nHost: {found[1]}\r\n\r\n".encode())
        answer = await reader.read()  # the server closes after answering
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


# -- in a browser --------------------------------------------------------------------


class Page:
    """A browser tab on the demo page: answers its prompts, reads its chat log."""

    def __init__(self, page: Any, user: str, room: str) -> None:
        self.page = page
        self.user = user
        self.room = room
        self.errors: list[str] = []  # script errors and error messages of the console
        page.on("dialog", self._answer)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    async def _answer(self, dialog: Any) -> None:
        if "name" in dialog.message:
            await dialog.accept(self.user)
        elif "Room" in dialog.message:
            await dialog.accept(self.room)
        else:
            self.errors.append(f"unexpected dialog: {dialog.message}")
            await dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    async def log(self) -> list[str]:
        lines: list[str] = await self.page.eval_on_selector_all(
            "#log li", "items => items.map(item => item.textContent)"
        )
        return lines

    async def sees(self, line: str) -> None:
        """Wait until the chat log has exactly ``line``."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            await self.page.wait_for_function(
                "line => Array.from(document.querySelectorAll('#log li'))"
                ".some(item => item.textContent === line)",
                arg=line,
                timeout=WAIT * 1000,
            )
        except PlaywrightTimeout:
            raise AssertionError(
                f"{self.user}'s page never showed {line!r}; it shows {await self.log()!r}"
                f" (errors: {self.errors})"
            ) from None

    async def types(self, text: str) -> None:
        await self.page.fill("#text", text)
        await self.page.press("#text", "Enter")


async def test_two_browsers_and_a_terminal_chat_in_one_room(neffos_js_cache: Path) -> None:
    executable = chromium()  # skips (or fails in CI) before playwright is imported
    from playwright.async_api import async_playwright

    async with (
        demo_server("--cache-dir", str(neffos_js_cache)) as (server, page_url, ws_url),
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=executable)
        terminal: Program | None = None
        try:
            ana = Page(await browser.new_page(), "ana", "lobby")
            await ana.page.goto(page_url)
            await ana.sees("joined room lobby")
            bo = Page(await browser.new_page(), "bo", "lobby")
            await bo.page.goto(page_url)
            await bo.sees("joined room lobby")
            await ana.sees("[bo] joined to room [lobby].")

            terminal = await client(ws_url, "cy", "lobby")
            await ana.sees("[cy] joined to room [lobby].")
            await bo.sees("[cy] joined to room [lobby].")

            await ana.types("hello from ana")
            await ana.sees("[lobby] me: hello from ana")
            await bo.sees("[lobby] ana: hello from ana")
            await terminal.expect("[lobby] ana: hello from ana")

            await terminal.send("hi from the terminal")
            await ana.sees("[lobby] cy: hi from the terminal")
            await bo.sees("[lobby] cy: hi from the terminal")

            await bo.types("bo <b>here</b>")  # shown as text, never as HTML
            await ana.sees("[lobby] bo: bo <b>here</b>")
            await terminal.expect("[lobby] bo: bo <b>here</b>")

            OUTPUT.mkdir(parents=True, exist_ok=True)
            screenshot = OUTPUT / "demo-chat.png"
            await ana.page.screenshot(path=screenshot)
            assert screenshot.read_bytes().startswith(b"\x89PNG"), screenshot
            print(f"\nscreenshot of the demo page: {screenshot}")

            await terminal.send("/leave")  # a leave...
            await terminal.expect("left room lobby")
            await ana.sees("[cy] left from room [lobby].")
            await bo.sees("[cy] left from room [lobby].")
            await terminal.finish()  # end of input: the client quits (exit status 0)

            await bo.page.close()  # ...and a disconnect
            await ana.sees("[bo] left from room [lobby].")

            # nobody hears their own lines back; the page loaded without errors
            assert "[lobby] ana: hello from ana" not in await ana.log()
            assert terminal.lines.count("[lobby] cy: hi from the terminal") == 0
            assert ana.errors == [] and bo.errors == []
            assert await ana.page.inner_text("#status") == "you are ana, in room lobby"
        finally:
            await browser.close()
            if terminal is not None:
                await terminal.kill()
        await server.expect("[bo] left from room [lobby].")


# -- terminal clients, the page's HTTP side ------------------------------------------


async def test_terminal_clients_chat_and_nobody_speaks_for_another() -> None:
    said: list[str] = []
    demo = await start(port=0, neffos_js=None, say=said.append)
    kim = lee = None
    try:
        kim = await client(demo.ws_url, "kim", "lobby")
        lee = await client(demo.ws_url, "lee", "lobby")
        await kim.expect("[lee] joined to room [lobby].")
        await kim.send("hello lee")
        await lee.expect("[lobby] kim: hello lee")
        await lee.send("hi kim")
        await kim.expect("[lobby] lee: hi kim")

        # "from" is the sender's connection ID, whatever the body says; a body
        # that is not {"from", "text"} JSON is dropped
        events = {"default": {"chat": lambda ns, msg: None}}
        async with neffos.dial(demo.ws_url, events, headers={"X-Username": "mallory"}) as conn:
            room = await (await conn.connect("default")).join_room("lobby", timeout=WAIT)
            await lee.expect("[mallory] joined to room [lobby].")
            assert room.emit("chat", b"not json")
            assert room.emit("chat", neffos.marshal({"from": "kim", "text": "I am kim"}))
            await lee.expect("mallory: I am kim")
            assert lee.lines[-2:] == [
                "[mallory] joined to room [lobby].", "[lobby] mallory: I am kim"
            ]
        await lee.expect("[mallory] left from room [lobby].")
        assert "[mallory] sent a chat message without a text: dropped" in said

        # a name is one person: a second "kim" is refused, and says why
        with pytest.raises(neffos.HandshakeRefused, match="the name kim is taken"):
            await neffos.dial(demo.ws_url, events, headers={"X-Username": "kim"}, timeout=WAIT)
        # what others type cannot drive the terminal: control characters are escaped
        async with neffos.dial(demo.ws_url, events, headers={"X-Username": "eve"}) as conn:
            room = await (await conn.connect("default")).join_room("lobby", timeout=WAIT)
            assert room.emit("chat", neffos.marshal({"from": "eve", "text": "\x1b[2Jgone"}))
            await lee.expect("eve: \\x1b[2Jgone")

        await kim.send("/join attic")  # moves: lobby hears the leave, kim hears no more of it
        await kim.expect("left room lobby")
        await kim.expect("joined room attic")
        await lee.expect("[kim] left from room [lobby].")
        await kim.send("/leave")
        await kim.expect("left room attic")
        await kim.finish()

        status, headers, body = await http(demo.page_url)  # no neffos.js: the page says why
        assert status == 503 and headers["content-type"].startswith("text/plain"), body
        assert b"python -m neffos demo client --room lobby --user kim" in body
    finally:
        await demo.aclose()
        if kim is not None:
            await kim.kill()
    assert lee is not None
    try:  # the server went away: the client says so and fails
        _, stderr = await lee.finish(expect_code=1, eof=False)
        assert stderr.startswith("error: "), stderr
    finally:
        await lee.kill()
    assert "[lee] left from room [lobby]." in said


async def test_the_page_and_its_scripts_on_the_endpoints_port(tmp_path: Path) -> None:
    script = tmp_path / "neffos-es5.js"
    script.write_text("var neffos = {}; // the test's stand-in\n")
    async with await start(port=0, neffos_js=script, say=lambda line: None) as demo:
        status, headers, body = await http(demo.page_url)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script src="neffos.js"></script>' in body and b'<script src="app.js">' in body
        assert await http(demo.page_url + "neffos.js") == (
            200, {**headers, "content-type": "text/javascript; charset=utf-8",
                  "content-length": str(script.stat().st_size)}, script.read_bytes()
        )
        status, _, body = await http(demo.page_url + "app.js")
        assert status == 200 and b'"/echo"' in body and b"X-Username" in body
        status, _, body = await http(demo.page_url, "HEAD")
        assert (status, body) == (200, b"")
        status, headers, _ = await http(demo.page_url + "index.html", "POST")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert (await http(demo.page_url + "elsewhere"))[0] == 404
        assert (await http(demo.page_url + "echo"))[0] == 400  # the endpoint wants a WebSocket
        assert (await http(demo.page_url + "echo", "HEAD"))[0] == 302  # neffos.js' probe


# -- without npm, and the cache --------------------------------------------------------


async def test_without_npm_the_demo_runs_and_says_how_to_get_the_page(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**ENV, "PATH": str(empty)}  # no npm (nor anything else) on PATH
    async with demo_server("--cache-dir", str(tmp_path / "cache"), env=env) as (server, url, _):
        assert server.lines[0] == NO_NPM
        assert sum("npm" in line for line in server.lines) == 1
        status, _, body = await http(url)
        assert status == 503 and b"neffos.js could not be installed" in body
        assert (await http(url + "neffos.js"))[0] == 404
    assert not (tmp_path / "cache").exists()


async def test_neffos_js_is_installed_once_and_failures_are_reported(
    tmp_path: Path, neffos_js_cache: Path
) -> None:
    said: list[str] = []
    cached = await prepare_neffos_js(neffos_js_cache, npm="no-such-npm", say=said.append)
    assert cached is not None and cached.name == "neffos-es5.js" and said == []
    assert b"X-Websocket-Header-" in cached.read_bytes()  # the browser build of neffos.js

    assert await prepare_neffos_js(tmp_path / "a", npm="no-such-npm", say=said.append) is None
    assert said == [NO_NPM]
    said.clear()
    assert await prepare_neffos_js(tmp_path / "b", npm="false", say=said.append) is None
    assert len(said) == 2 and said[1].startswith("npm ci failed (exit status 1"), said
    assert [p.name for p in (tmp_path / "b").iterdir()] == []  # no half install left behind


# -- small parts -------------------------------------------------------------------------


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["demo"], ["demo", "client"]):
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--help"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m neffos {' '.join(argv)}")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_chat_lines() -> None:
    assert chat_line(b'{"from":"kim","text":"hi"}') == ("kim", "hi")
    assert chat_line(b'{"text":"hi"}') == ("", "hi")
    assert chat_line(b'{"from":3,"text":"hi"}') == ("", "hi")
    for bad in (b"hi", b'{"from":"kim"}', b'{"text":1}', b'["text"]', b"\xff"):
        assert chat_line(bad) is None, bad


def test_the_package_ships_the_page_and_the_npm_files() -> None:
    import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["neffos.demo"]
    package = ROOT / "src" / "neffos" / "demo"
    data = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    ]
    assert sorted(data) == ["package-lock.json", "package.json", "page/app.js", "page/index.html"]
    assert all(any(fnmatch.fnmatch(name, p) for p in patterns) for name in data)
