"""The router's direct admit (services/dispatcher/lua/admit.lua with `direct`): requests go straight to their
lane stream only when the feed would have moved them at once, and the staging queues' invariant
holds throughout."""

from __future__ import annotations

from services.dispatcher.router import Router
from shared.jobs.store import JobStore
from shared.redis.keys import ROUTER_GROUP, WORKER_GROUP, FlowField
from shared.redis.streams import ensure_group
from tests.shared.jobs.test_staging_invariant import _admit_all, _create, assert_invariant


async def _router(r, keys, models) -> Router:
    router = Router(r, keys, models, direct=True)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    await router.prepare()
    return router


async def _lengths(r, keys, model: str) -> tuple[int, int]:
    interactive, batch = keys.model_streams(model)
    return await r.xlen(interactive), await r.xlen(batch)


async def test_requests_for_idle_lanes_skip_the_staging_queues(r, keys, models):
    store = JobStore(r, keys)
    router = await _router(r, keys, models)
    await _create(store, "job_a", [("alpha", "batch")] * 10 + [("alpha", "interactive")] * 3)

    await _admit_all(r, keys, router)

    assert await _lengths(r, keys, "alpha") == (3, 10)
    staged = await assert_invariant(r, keys, models)
    assert not any(staged.values())
    assert router.admitted == 13 and not router._waiting


async def test_past_the_high_watermark_the_rest_is_staged_and_the_batch_lane_pauses(r, keys, models):
    store = JobStore(r, keys)
    router = await _router(r, keys, models)
    high = models.models["gamma"].high_watermark
    await _create(store, "job_a", [("gamma", "batch")] * (high + 36))

    await _admit_all(r, keys, router)

    assert await _lengths(r, keys, "gamma") == (0, high)
    staged = await assert_invariant(r, keys, models)
    assert staged[("gamma", "batch")] == 36
    assert await r.hget(keys.flow("gamma"), FlowField.PAUSED) == b"1"
    await router.feed_all()  # paused: the feed moves nothing either
    assert await _lengths(r, keys, "gamma") == (0, high)


async def test_a_waiting_queue_keeps_its_turn_and_interactive_work_is_not_held_behind_batch_work(r, keys, models):
    store = JobStore(r, keys)
    router = await _router(r, keys, models)
    high = models.models["gamma"].high_watermark
    await _create(store, "job_a", [("gamma", "batch")] * (high + 5))
    await _admit_all(r, keys, router)
    # the workers take and finish everything in the stream: room again, but job_a still waits
    _, batch = keys.model_streams("gamma")
    taken = await r.xreadgroup(WORKER_GROUP, "w", {batch: ">"}, count=high)
    await r.xack(batch, WORKER_GROUP, *[entry_id for entry_id, _ in taken[0][1]])

    await _create(store, "job_b", [("gamma", "batch")] * 2 + [("gamma", "interactive")] * 2)
    await _admit_all(r, keys, router)

    staged = await assert_invariant(r, keys, models)
    assert staged[("gamma", "batch")] == 5 + 2  # behind job_a's queue, which goes first
    assert (await _lengths(r, keys, "gamma"))[0] == 2  # the interactive lane had no queue waiting
    await router.feed_all()
    staged = await assert_invariant(r, keys, models)
    assert not any(staged.values())


async def test_a_chunk_delivered_twice_is_sent_once(r, keys, models):
    store = JobStore(r, keys)
    router = await _router(r, keys, models)
    await _create(store, "job_a", [("beta", "batch")] * 4)
    reply = await r.xreadgroup(ROUTER_GROUP, router.consumer, {keys.ingest_stream: ">"})
    await router.admit(reply[0][1])
    await router.admit(reply[0][1])  # a reclaimed copy of the same entry

    assert await _lengths(r, keys, "beta") == (0, 4)
    assert router.admitted == 4
