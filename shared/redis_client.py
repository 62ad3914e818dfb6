"""Redis connections, and the start-up check that the server will not silently drop our data."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

EVICTING_POLICIES = {
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
}


def connect(url: str, **kwargs) -> aioredis.Redis:
    """Bytes in, bytes out: payloads are msgpack, and decoding is the caller's business."""
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30, **kwargs)


def check_server_at_start(url: str) -> str | None:
    """Run by every service before it starts: an error message if Redis may evict data (the
    service must refuse to start), else None. An unreachable Redis is not an error here: the
    services wait for it and /readyz reports it."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        # the sync client's commands are typed as possibly awaitable; this one returns a dict
        config = cast(dict, client.config_get("maxmemory-policy"))
        policy = config.get("maxmemory-policy", "")
    except redis.ConnectionError:
        return None
    except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot check
        return None
    finally:
        client.close()
    if policy in EVICTING_POLICIES:
        return (
            f"Redis at {url} has maxmemory-policy {policy!r}, which can evict queued requests and job "
            "records; set it to 'noeviction' (redis-server --maxmemory-policy noeviction)"
        )
    return None
