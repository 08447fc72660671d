"""Exchange options: stacking several exchanges, cluster seeds, missing extras."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from helpers import UNIT, Recorder
from helpers.brokers import free_port, running

import neffos
from neffos.exchange.nats import NatsStackExchange
from neffos.exchange.redis import RedisStackExchange

pytestmark = pytest.mark.broker


async def _node(*exchanges: object) -> tuple[neffos.Server, str]:
    server = neffos.Server({"chat": {}}, ping_interval=None)
    for exchange in exchanges:
        server.use_stack_exchange(exchange)  # type: ignore[arg-type]
    await server.__aenter__()  # closed with server.__aexit__ (listeners too)
    listener = await server.listen()
    return server, listener.url


async def test_stacked_exchanges_publish_to_all() -> None:
    async with running("redis") as redis, running("nats") as nats:
        a, _ = await _node(
            RedisStackExchange(redis.address, channel_prefix="S"),
            NatsStackExchange(nats.url, subject_prefix="S"),
        )
        b, url_b = await _node(RedisStackExchange(redis.address, channel_prefix="S"))
        c, url_c = await _node(NatsStackExchange(nats.url, subject_prefix="S"))
        got = Recorder()
        clients = []
        for name, url in (("b", url_b), ("c", url_c)):
            client = await neffos.dial(
                url, {"chat": {"news": lambda ns, m, name=name: got.add((name, m.text))}}
            )
            await client.connect("chat")
            clients.append(client)
        try:
            # Subscriptions travel through the brokers: retry until both are in place.
            async with asyncio.timeout(10 * UNIT):
                while True:
                    a.broadcast(None, neffos.Message("chat", "news", "probe"))
                    try:
                        await got.wait_for(
                            lambda items: {n for n, _ in items} == {"b", "c"}, 0.2 * UNIT
                        )
                        break
                    except TimeoutError:
                        continue
            got.clear()
            a.broadcast(None, neffos.Message("chat", "news", "hello"))
            await got.wait_for(lambda items: sorted(items) == [("b", "hello"), ("c", "hello")])
        finally:
            for client in clients:
                await client.aclose()
            for server in (a, b, c):
                await server.__aexit__(None, None, None)


async def test_redis_cluster_seeds_fall_over_to_a_live_node() -> None:
    async with running("redis") as redis:
        dead = f"127.0.0.1:{free_port()}"
        exchange = RedisStackExchange(
            cluster_addresses=[dead, redis.address], channel_prefix="S", dial_timeout=1 * UNIT
        )
        server, _ = await _node(exchange)
        await server.__aexit__(None, None, None)
        with pytest.raises(ConnectionError, match="cannot reach Redis"):
            await _node(RedisStackExchange(dead, channel_prefix="S", dial_timeout=1 * UNIT))


async def test_an_unreachable_nats_fails_within_the_dial_timeout() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionError, match=r"cannot reach NATS .* within 0\.5s"):
        await _node(NatsStackExchange(url, subject_prefix="S", dial_timeout=0.5))
    assert asyncio.get_running_loop().time() - started < 5 * UNIT


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("neffos.exchange.redis", "redis", "neffos[redis]"),
        ("neffos.exchange.nats", "nats", "neffos[nats]"),
        ("neffos.transports.websockets", "websockets", "neffos[websockets]"),
        ("neffos.transports.aiohttp", "aiohttp", "neffos[aiohttp]"),
    ],
)
def test_a_missing_extra_names_the_pip_extra(module: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert extra in out.stdout
