"""The demo chat: ``python -m neffos demo`` (server and browser page) and its terminal client.

It is the Go neffos "basic" example, speaking the same events, so its page and
clients work against either server. :mod:`neffos.demo.server` serves the chat
and the page on one port, :mod:`neffos.demo.client` is the terminal client,
:mod:`neffos.demo.assets` holds the page and installs neffos.js from npm, and
:mod:`neffos.demo.cli` wires them into ``python -m neffos``.
"""

from __future__ import annotations

from .assets import NO_NPM, default_cache_dir, prepare_neffos_js
from .client import DEFAULT_URL, run_client
from .server import ENDPOINT, NAMESPACE, Demo, run, start

__all__ = [
    "DEFAULT_URL",
    "ENDPOINT",
    "NAMESPACE",
    "NO_NPM",
    "Demo",
    "default_cache_dir",
    "prepare_neffos_js",
    "run",
    "run_client",
    "start",
]
