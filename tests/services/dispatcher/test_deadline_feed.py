"""The feed serves the earliest deadline of a lane three turns in four, and every job, with a
deadline or not, keeps its turns (services/dispatcher/lua/feed.lua, lib/staging.lua)."""

from __future__ import annotations

from services.dispatcher.staging import Feed
from shared.redis.keys import LANES, WORKER_GROUP, staged_field
from shared.redis.streams import ensure_group

MODEL = "m"


async def _stage(r, keys, job: str, n: int, deadline_ms: int = 0) -> None:
    """A job's staging queue as the router's admit leaves it (lib/staging.lua's invariant)."""
    queue = keys.staging_queue(MODEL, "batch", job)
    await r.rpush(queue, *[f"{job}-{i}".encode() for i in range(n)])
    await r.rpush(keys.staging_ring(MODEL, "batch"), queue)
    await r.hincrby(keys.flow(MODEL), staged_field("batch"), n)
    if deadline_ms:
        await r.zadd(keys.urgent_queues(MODEL, "batch"), {queue: deadline_ms})


async def _fed(r, keys) -> list[str]:
    entries = await r.xrange(keys.model_stream(MODEL, "batch"))
    return [f[b"d"].decode().split("-")[0] for _, f in entries]


async def _feed(r, keys, feed: Feed, most: int, quantum: int = 2):
    return await feed(model=MODEL, high_watermark=10_000, low_watermark=5_000, max_move=most, quantum=quantum)


async def _groups(r, keys) -> None:
    for lane in LANES:
        await ensure_group(r, keys.model_stream(MODEL, lane), WORKER_GROUP)


async def test_three_turns_in_four_go_to_the_earliest_deadline_and_plain_jobs_share_the_fourth(r, keys):
    await _groups(r, keys)
    await _stage(r, keys, "a", 40)
    await _stage(r, keys, "b", 40)
    await _stage(r, keys, "late", 40, deadline_ms=9_000)
    await _stage(r, keys, "soon", 12, deadline_ms=5_000)
    feed = Feed(r, keys)
    await _feed(r, keys, feed, most=32)  # 16 turns of 2
    fed = await _fed(r, keys)
    # the fourth turn goes round-robin over the jobs without a deadline
    assert fed[:8] == ["soon"] * 6 + ["a"] * 2
    assert fed[8:16] == ["soon"] * 6 + ["b"] * 2  # the earliest deadline, until it is empty
    assert fed[16:24] == ["late"] * 6 + ["a"] * 2 and fed[24:32] == ["late"] * 6 + ["b"] * 2
    assert await r.zrange(keys.urgent_queues(MODEL, "batch"), 0, -1) == [
        keys.staging_queue(MODEL, "batch", "late").encode()
    ]


async def test_the_share_holds_across_calls_of_one_entry_each_so_nothing_starves(r, keys):
    await _groups(r, keys)
    await _stage(r, keys, "plain", 100)
    await _stage(r, keys, "urgent", 100, deadline_ms=1_000)
    feed = Feed(r, keys)
    for _ in range(40):
        await _feed(r, keys, feed, most=1, quantum=1)
    fed = await _fed(r, keys)
    assert fed.count("urgent") == 30 and fed.count("plain") == 10


async def test_a_deadline_queue_emptied_elsewhere_is_dropped_from_the_set_and_the_staged_count_holds(r, keys):
    await _groups(r, keys)
    await _stage(r, keys, "plain", 5)
    await _stage(r, keys, "gone", 5, deadline_ms=1_000)
    # a cancel drains the queue (lib/staging.lua unstage_all): its deadline entry stays behind
    queue = keys.staging_queue(MODEL, "batch", "gone")
    await r.delete(queue)
    await r.lrem(keys.staging_ring(MODEL, "batch"), 0, queue)
    await r.hincrby(keys.flow(MODEL), staged_field("batch"), -5)
    feed = Feed(r, keys)
    moved = await _feed(r, keys, feed, most=100)
    assert moved[1] == 5 and await _fed(r, keys) == ["plain"] * 5
    assert int(await r.hget(keys.flow(MODEL), staged_field("batch"))) == 0
    assert not await r.exists(keys.urgent_queues(MODEL, "batch"), keys.staging_ring(MODEL, "batch"))
