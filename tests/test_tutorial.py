"""The tutorial's chat (docs/tutorial.md, code in examples/tutorial/), run as the tutorial runs it.

The tutorial page includes these very files, so what it shows is what runs here:

* the server and two terminal clients, as real processes: joins, lines, ``/who``,
  leaves, the page served next to the endpoint, a quiet Ctrl-C;
* the browser page in headless Chromium (Debian's ``chromium`` driven by
  playwright) chatting with a terminal client. The page loads neffos.js from a
  CDN; here that request is answered with the npm copy in ``tests/js``, so no
  network is needed. Skipped, with the reason, where there is no Chromium;
  required with ``NEFFOS_REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.programs import WAIT, Program, Programs, programs

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "examples" / "tutorial" / "index.html"
NEFFOS_JS = ROOT / "tests" / "js" / "node_modules" / "neffos.js" / "dist" / "neffos-es5.js"
OUTPUT = ROOT / "tests" / "output"


@asynccontextmanager
async def tutorial_server() -> AsyncIterator[tuple[Programs, Program, str, str]]:
    """The tutorial's server on a free port: the programs, the server, page URL, endpoint URL.

    It must stop quietly on Ctrl-C at the end.
    """
    async with programs() as run:
        server = await run.start("tutorial/server", "--port", "0")
        line = await server.expect("chat on ")
        found = re.fullmatch(r"chat on (http://[\d.:]+/) \(endpoint (ws://\S+/chat)\)", line)
        assert found, line
        yield run, server, found[1], found[2]
        await server.interrupt()


async def chatter(run: Programs, url: str, name: str) -> Program:
    """A terminal client that has connected (it prints who is here first)."""
    client = await run.start("tutorial/client", "--url", url, "--name", name)
    await client.expect("here: ")
    return client


async def http_get(url: str) -> tuple[int, bytes]:
    """A plain HTTP/1.1 GET: the status and the body."""
    found = re.fullmatch(r"http://([\d.]+):(\d+)(/.*)", url)
    assert found, url
    reader, writer = await asyncio.open_connection(found[1], int(found[2]))
    try:
        writer.write(f"GET {found[3]} HTTP/1.1\r\nHost: {found[1]}\r\n\r\n".encode())
        async with asyncio.timeout(WAIT):
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length[1])) if length else b""
    finally:
        writer.close()
    return int(head.split()[1]), body


async def test_terminal_clients_chat() -> None:
    async with tutorial_server() as (run, _, page_url, ws_url):
        status, body = await http_get(page_url)
        assert status == 200
        assert body == PAGE.read_bytes()
        assert (await http_get(page_url + "nothing-here"))[0] == 404

        kim = await chatter(run, ws_url, "kim")
        assert kim.lines == ["here: kim"]
        lee = await chatter(run, ws_url, "lee")
        assert lee.lines == ["here: kim, lee"]
        await kim.expect("* lee joined")

        await lee.send("hello, kim")
        assert await kim.expect("lee:") == "lee: hello, kim"
        assert await lee.expect("lee:") == "lee: hello, kim"  # everyone, the sender too

        await kim.send("", "  ", "/who")  # empty lines are not sent
        assert await kim.expect("here:") == "here: kim, lee"
        await kim.send("bye; see you")  # any text: ';' is the frame separator of the wire
        assert await lee.expect("kim:") == "kim: bye; see you"

        out, err = await lee.finish()  # Ctrl-D
        assert err == ""
        assert out[-1] == "kim: bye; see you"
        assert await kim.expect("* ") == "* lee left"
        await kim.send("/who")
        assert await kim.expect("here:") == "here: kim"
        await kim.interrupt()  # Ctrl-C: a quiet exit


async def test_client_reports_a_missing_server_in_one_line() -> None:
    async with tutorial_server() as (run, _, _, ws_url):
        url = ws_url.replace("/chat", "/nowhere")  # 404: the dial fails
        client = await run.start("tutorial/client", "--url", url, "--name", "kim")
        _, err = await client.finish(expect_code=1)
        assert err.startswith("error: "), err
        assert "Traceback" not in err


# -- the browser page ---------------------------------------------------------------


def chromium() -> str:
    """Debian's Chromium (or ``$NEFFOS_CHROMIUM``) with playwright, or skip (fail in CI)."""
    path = os.environ.get("NEFFOS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    problem = ""
    if not Path(path).is_file():
        problem = f"no Chromium at {path} (scripts/test.sh installs Debian's chromium as root)"
    elif not NEFFOS_JS.is_file():
        problem = f"no {NEFFOS_JS} (scripts/test.sh runs npm ci in tests/js)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install -e '.[test]')"
    if problem:
        if os.environ.get("NEFFOS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NEFFOS_REQUIRE_BROWSER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    return path


async def test_browser_page_chats_with_a_terminal_client() -> None:
    executable = chromium()  # skips (or fails in CI) before playwright is imported
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    cdn = re.search(r'<script src="(https://[^"]+/neffos-es5\.js)"', PAGE.read_text())
    assert cdn, "the page loads neffos.js from a CDN"
    errors: list[str] = []

    async with tutorial_server() as (run, _, page_url, ws_url), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable)
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            async def local_copy(route: Any) -> None:  # the CDN, answered from npm's copy
                await route.fulfill(path=NEFFOS_JS, content_type="text/javascript")

            await page.route(cdn[1], local_copy)

            async def sees(line: str) -> None:
                try:
                    await page.wait_for_function(
                        "line => Array.from(document.querySelectorAll('#log li'))"
                        ".some(item => item.textContent === line)",
                        arg=line,
                        timeout=WAIT * 1000,
                    )
                except PlaywrightTimeout:
                    shown = await page.eval_on_selector_all(
                        "#log li", "items => items.map(item => item.textContent)"
                    )
                    raise AssertionError(f"the page never showed {line!r}: {shown} {errors}")

            kim = await chatter(run, ws_url, "kim")
            await page.goto(page_url + "?name=ann")
            await page.wait_for_selector("#text:enabled", timeout=WAIT * 1000)
            await kim.expect("* ann joined")

            await page.fill("#text", "hi from the <b>browser</b>")
            await page.press("#text", "Enter")
            await sees("ann: hi from the <b>browser</b>")  # shown as text, not HTML
            assert await kim.expect("ann:") == "ann: hi from the <b>browser</b>"

            await kim.send("hello, ann")
            await sees("kim: hello, ann")
            await page.click("#who")
            await sees("here: ann, kim")

            OUTPUT.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=OUTPUT / "tutorial-chat.png")

            await page.close()
            assert await kim.expect("* ") == "* ann left"
            await kim.finish()
        finally:
            await browser.close()
    assert errors == []
