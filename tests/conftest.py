"""Test harness: async tests without plugins, and the transport fixtures.

* ``async def test_...`` functions run in a fresh event loop, bounded by
  ``TEST_TIMEOUT`` (and on uvloop with ``NEFFOS_TEST_LOOP=uvloop``).
* The ``transport`` fixture runs a test once per transport: the in-memory pair
  and every real WebSocket library (servers on 127.0.0.1, port 0);
  ``net_transport`` only the real ones.

Helpers that tests import live in the ``helpers`` package next to this file.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from helpers import (
    ALL_TRANSPORTS,
    NETWORK_TRANSPORTS,
    SERVER_TRANSPORTS,
    TEST_TIMEOUT,
    loop_factory,
    report,
)


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

        async def run() -> None:
            async with asyncio.timeout(TEST_TIMEOUT):
                await pyfuncitem.obj(**args)

        factory = loop_factory()
        if factory is None:
            asyncio.run(run())
        else:
            with asyncio.Runner(loop_factory=factory) as runner:  # type: ignore[arg-type]
                runner.run(run())
        return True
    return None


@pytest.fixture(params=ALL_TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=NETWORK_TRANSPORTS)
def net_transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SERVER_TRANSPORTS)
def server_transport(request: pytest.FixtureRequest) -> str:
    """Real servers only (asgi included), reached by network clients."""
    return str(request.param)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the tables tests filled (attacks on memory, Autobahn results...)."""
    for section, rows in report.sections().items():
        terminalreporter.write_sep("=", section)
        for line in report.render(rows):
            terminalreporter.write_line(line)
