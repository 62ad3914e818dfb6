"""Direct admission at job creation (shared/jobs/lua/create_job.lua): requests go straight to their lane
stream when flow control has room for them now, as the router's admit would send them; the rest
goes through the ingest stream to the router, which stages exactly the requests not already sent.
Every request is written once, and the requests of one (model, lane) keep their order."""

from __future__ import annotations

from services.dispatcher.router import Router
from shared.jobs.store import JobStore
from shared.redis.keys import PAYLOAD_FIELD, ROUTER_GROUP, FlowField
from shared.redis.streams import ensure_group
from shared.wire.messages import decode_routed
from tests.shared.jobs.test_staging_invariant import _admit_all, _create, assert_invariant
from tests.support.accepted import accepted


async def _router(r, keys, models) -> Router:
    router = Router(r, keys, models, direct=True)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    await router.prepare()
    return router


async def _post(api, n: int, model: str = "gamma", priority: str = "batch", first: int = 0) -> str:
    body = {
        "priority": priority,
        "requests": [{"model": model, "prompt": "p", "custom_id": str(first + i)} for i in range(n)],
    }
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


async def _lengths(r, keys, model: str) -> tuple[int, int]:
    interactive, batch = keys.model_streams(model)
    return await r.xlen(interactive), await r.xlen(batch)


async def _batch_ids(r, keys) -> list[str]:
    return [
        decode_routed(f[PAYLOAD_FIELD.encode()])[0].custom_id
        for _, f in await r.xrange(keys.model_stream("gamma", "batch"))
    ]


async def test_a_job_the_lanes_have_room_for_skips_the_router(api, r, keys, models):
    await _post(api, 10)
    await _post(api, 3, priority="interactive", first=10)

    assert await _lengths(r, keys, "gamma") == (3, 10)
    assert await r.xlen(keys.ingest_stream) == 0
    assert not any((await assert_invariant(r, keys, models)).values())
    assert [q.custom_id for q in await accepted(r, keys)] == [str(i) for i in range(13)]


async def test_past_the_high_watermark_the_router_stages_exactly_the_rest_in_order(api, r, keys, models):
    high = models.models["gamma"].high_watermark
    job_id = await _post(api, high + 600)  # two chunks: the first partly sent straight on, the second not

    assert await _lengths(r, keys, "gamma") == (0, high)
    assert await r.hget(keys.flow("gamma"), FlowField.PAUSED) == b"1"
    router = await _router(r, keys, models)
    await _admit_all(r, keys, router)
    assert router.admitted == 600
    staged = await assert_invariant(r, keys, models)
    assert staged[("gamma", "batch")] == 600
    assert await r.llen(keys.staging_queue("gamma", "batch", job_id)) == 600
    assert await _batch_ids(r, keys) == [str(i) for i in range(high)]
    # as the workers drain the lane, the feed moves the staged rest in order: each request once
    moved: list[str] = []
    for _ in range(600 // (high - models.models["gamma"].low_watermark) + 2):
        await r.delete(*keys.model_streams("gamma"))
        await router.prepare()
        await router.feed_all()
        moved += await _batch_ids(r, keys)
    assert moved == [str(i) for i in range(high, high + 600)]


async def test_a_waiting_staging_queue_keeps_its_turn(api, r, keys, models):
    store = JobStore(r, keys)
    high = models.models["gamma"].high_watermark
    await _create(store, "job_a", [("gamma", "batch")] * (high + 5))
    await _admit_all(r, keys, await _router(r, keys, models))  # high sent, 5 staged
    await r.delete(*keys.model_streams("gamma"))  # the workers took everything: the lane has room again
    await (await _router(r, keys, models)).prepare()

    await _post(api, 4)
    assert await _lengths(r, keys, "gamma") == (0, 0)  # behind job_a's staged requests, via the router
    assert await r.xlen(keys.ingest_stream) == 2
    await _post(api, 2, priority="interactive", first=4)  # its own lane has room and nothing waits
    assert await _lengths(r, keys, "gamma") == (2, 0)
