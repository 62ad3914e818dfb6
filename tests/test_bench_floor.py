"""The Redis floor measurement (bench/redis_floor.py) runs each layout to the end on a real Redis
and leaves nothing behind (its figures are judged in `make bench`, not here)."""

from __future__ import annotations

from bench import redis_floor


async def test_each_layout_is_measured_and_cleaned_up(r, redis_server):
    await r.flushall()
    floor = await redis_floor.measure(redis_server.url, requests=5_000)
    assert set(floor) == set(redis_floor.LAYOUTS)
    assert all(us > 0 for us in floor.values())
    assert await r.dbsize() == 0
    assert list((await r.config_get("auto-aof-rewrite-percentage")).values()) == ["100"]
