"""Scale-out: share one application across server processes over Redis or NATS.

    from neffos.exchange.redis import RedisStackExchange
    server.use_stack_exchange(RedisStackExchange("127.0.0.1:6379", channel_prefix="MyChatApp"))

    from neffos.exchange.nats import NatsStackExchange
    server.use_stack_exchange(NatsStackExchange("nats://127.0.0.1:4222"))

The broker clients are optional dependencies (``neffos[redis]``, ``neffos[nats]``)
and are imported only with their module.
"""

from __future__ import annotations

from typing import Any

from .base import ExchangeStats, StackExchange

__all__ = ["ExchangeStats", "NatsStackExchange", "RedisStackExchange", "StackExchange"]


def __getattr__(name: str) -> Any:
    if name == "RedisStackExchange":
        from .redis import RedisStackExchange

        return RedisStackExchange
    if name == "NatsStackExchange":
        from .nats import NatsStackExchange

        return NatsStackExchange
    raise AttributeError(f"module 'neffos.exchange' has no attribute {name!r}")
