"""The files of the demo page, and neffos.js installed from npm into a cache.

The page (``page/index.html``, ``page/app.js``) ships with the package. The
neffos.js client does not: the demo runs ``npm ci`` with the ``package.json``
and ``package-lock.json`` shipped beside this module, once, into a cache
directory, and serves ``dist/neffos-es5.js`` of the installed package. Each
lockfile gets a directory of its own (named by a digest of both files), filled
in a temporary directory and renamed into place, so two demos starting at once
never see half an install and a new lockfile never reuses an old install.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

__all__ = [
    "NO_NPM",
    "PageFiles",
    "default_cache_dir",
    "neffos_js_version",
    "page_files",
    "prepare_neffos_js",
]

#: the browser build of neffos.js inside the installed npm package (global ``neffos``)
NEFFOS_JS_IN_PACKAGE = Path("node_modules", "neffos.js", "dist", "neffos-es5.js")
#: the npm files shipped with this module
NPM_FILES = ("package.json", "package-lock.json")
#: how long ``npm ci`` may take (seconds) before the demo goes on without the page
NPM_TIMEOUT = 300.0
#: the one line printed (and answered at ``/``) when neffos.js cannot be installed
NO_NPM = (
    "The browser page needs neffos.js from npm and npm was not found: install Node.js "
    "with npm (https://nodejs.org/) and run the demo again; meanwhile chat from a "
    "terminal with `python -m neffos demo client --room lobby --user kim`."
)


def _shipped(name: str) -> bytes:
    return resources.files("neffos.demo").joinpath(name).read_bytes()


class PageFiles:
    """The page's files in memory: served from ``pages()`` without any I/O."""

    def __init__(self, index_html: bytes, app_js: bytes, neffos_js: bytes | None) -> None:
        #: ``page/index.html``
        self.index_html = index_html
        #: ``page/app.js``
        self.app_js = app_js
        #: neffos.js from npm, or ``None`` when it could not be installed
        self.neffos_js = neffos_js


def page_files(neffos_js: Path | None) -> PageFiles:
    """The shipped page files, with neffos.js read from ``neffos_js`` (if given)."""
    return PageFiles(
        _shipped("page/index.html"),
        _shipped("page/app.js"),
        neffos_js.read_bytes() if neffos_js is not None else None,
    )


def neffos_js_version() -> str:
    """The neffos.js version that ``package.json`` pins."""
    manifest = json.loads(_shipped("package.json"))
    return str(manifest["dependencies"]["neffos.js"])


def default_cache_dir() -> Path:
    """``$NEFFOS_DEMO_CACHE``, or ``neffos/demo`` in ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    explicit = os.environ.get("NEFFOS_DEMO_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neffos" / "demo"


def _install_dir(cache_dir: Path) -> Path:
    digest = hashlib.sha256()
    for name in NPM_FILES:
        digest.update(_shipped(name))
    return cache_dir / f"neffos.js-{neffos_js_version()}-{digest.hexdigest()[:12]}"


async def prepare_neffos_js(
    cache_dir: Path,
    *,
    npm: str = "npm",
    say: Callable[[str], object] = print,
) -> Path | None:
    """The path of neffos.js for browsers, installing it with ``npm ci`` if needed.

    Returns ``None`` (after one line through ``say``) when npm is missing or
    fails: the demo then runs without its page.
    """
    target = _install_dir(cache_dir)
    script = target / NEFFOS_JS_IN_PACKAGE
    if script.is_file():
        return script
    npm_path = shutil.which(npm)
    if npm_path is None:
        say(NO_NPM)
        return None
    say(f"Installing neffos.js {neffos_js_version()} with npm into {target} (first run only)")
    work = await asyncio.to_thread(_work_dir, cache_dir)
    try:
        problem = await _npm_ci(npm_path, work)
        if problem is not None:
            say(f"npm ci failed ({problem}); the browser page is off, the terminal client works")
            return None
        await asyncio.to_thread(_move, work, target)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
    return script if script.is_file() else None


def _work_dir(cache_dir: Path) -> Path:
    """A new directory in ``cache_dir`` with the npm files in it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".install-", dir=cache_dir))
    for name in NPM_FILES:
        (work / name).write_bytes(_shipped(name))
    return work


def _move(work: Path, target: Path) -> None:
    with contextlib.suppress(OSError):  # another demo may have renamed its copy first
        work.rename(target)


async def _npm_ci(npm: str, directory: Path) -> str | None:
    """Run ``npm ci`` in ``directory``; what went wrong, or ``None``."""
    process = await asyncio.create_subprocess_exec(
        npm, "ci", "--no-audit", "--no-fund", "--loglevel=error",
        cwd=directory,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(NPM_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        await _stop(process)
        return f"no result within {NPM_TIMEOUT:.0f} s"
    except BaseException:  # Ctrl-C while npm runs: never leave it behind
        await _stop(process)
        raise
    if process.returncode != 0:
        lines = output.decode(errors="replace").strip().splitlines()
        return f"exit status {process.returncode}: {lines[-1] if lines else 'no output'}"
    return None


async def _stop(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
