"""The local stack's Redis persists like the deployed one (docker-compose.yml: tests/test_compose.py)."""

from __future__ import annotations

import redis.asyncio as aioredis

from inferq.localstack import RedisServer


async def test_redis_keeps_writes_in_its_aof_and_does_not_rewrite_it_every_64_mb(tmp_path):
    server = RedisServer(tmp_path).start()
    r = aioredis.Redis.from_url(server.url)
    try:
        config = await r.config_get("*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        # ~96 MB of stream entries, past Redis's default threshold (64 MB): no rewrite starts
        payload = b"x" * 1000
        for _ in range(12):
            pipe = r.pipeline(transaction=False)
            for _ in range(8000):
                pipe.xadd("s", {"p": payload})
            await pipe.execute()
        persistence = await r.info("persistence")
        assert persistence["aof_current_size"] > 90 * 2**20
        assert persistence["aof_rewrites"] == 0 and persistence["aof_rewrite_in_progress"] == 0
    finally:
        await r.aclose()
        server.stop()
