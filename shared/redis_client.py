"""Redis connections, and the start-up check that the server will not silently drop our data."""

from __future__ import annotations

import redis.asyncio as aioredis

EVICTING_POLICIES = {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"}


class UnsafeRedisError(RuntimeError):
    """The Redis server is configured in a way that can lose accepted work."""


def connect(url: str, **kwargs) -> aioredis.Redis:
    """Bytes in, bytes out: payloads are msgpack, and decoding is the caller's business."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30, **kwargs)


async def check_server(r: aioredis.Redis) -> None:
    """Refuse to run against a Redis that may evict keys: an evicted stream entry is a lost request."""
    try:
        policy = (await r.config_get("maxmemory-policy")).get(b"maxmemory-policy", b"").decode()
    except Exception:  # managed Redis often disables CONFIG; nothing to check then
        return
    if policy in EVICTING_POLICIES:
        raise UnsafeRedisError(
            f"Redis maxmemory-policy is {policy!r}, which can evict queued requests; set it to 'noeviction'"
        )
