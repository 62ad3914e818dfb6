"""The staging queues' invariant (shared/redis/lua/lib/staging.lua), checked on a real Redis after each
script that changes them: admit, feed, stop (cancel and expiry) and requeue."""

from __future__ import annotations

import msgspec

from services.dispatcher.router import Router
from shared.core.states import RequestStatus
from shared.jobs.store import JobStore, ResultRecord
from shared.redis.keys import LANES, PAYLOAD_FIELD, ROUTER_GROUP, staged_field
from shared.redis.streams import ensure_group
from shared.wire.api import ErrorInfo, ResultLine, Timings, Usage
from shared.wire.messages import InferenceRequest, IngestChunk, SamplingParams

enc = msgspec.msgpack.Encoder()


async def _create(store: JobStore, job_id: str, items: list[tuple[str, str]]) -> list[InferenceRequest]:
    """A job of one request per (model, lane) in `items`."""
    reqs = [
        InferenceRequest(
            request_id=f"{job_id}_{i}",
            job_id=job_id,
            custom_id=f"c{i}",
            model=model,
            accepted_ms=0,
            prompt="p",
            params=SamplingParams(max_tokens=4),
        )
        for i, (model, _) in enumerate(items)
    ]
    chunk = enc.encode(IngestChunk(job_id, [(q.model, lane, enc.encode(q)) for q, (_, lane) in zip(reqs, items)]))
    totals: dict[str, int] = {}
    for model, _ in items:
        totals[model] = totals.get(model, 0) + 1
    await store.create(job_id, 1_000, totals, {}, [chunk])
    return reqs


async def _admit_all(r, keys, router: Router) -> None:
    reply = await r.xreadgroup(ROUTER_GROUP, router.consumer, {keys.ingest_stream: ">"})
    if reply:
        await router.admit(reply[0][1])


async def assert_invariant(r, keys, models) -> dict[tuple[str, str], int]:
    """For each (model, lane): the ring holds exactly the non-empty staging queues, once each, and
    `staged:<lane>` equals their total length. Returns the staged counts."""
    staged = {}
    for model in models.names():
        for lane in LANES:
            queues = [q.decode() async for q in r.scan_iter(match=keys.staging_queue(model, lane, "*"))]
            lengths = {q: await r.llen(q) for q in queues}
            ring = [q.decode() for q in await r.lrange(keys.staging_ring(model, lane), 0, -1)]
            assert sorted(ring) == sorted(q for q, n in lengths.items() if n > 0), (model, lane)
            assert len(set(ring)) == len(ring), (model, lane)
            count = int(await r.hget(keys.flow(model), staged_field(lane)) or 0)
            assert count == sum(lengths.values()), (model, lane)
            staged[(model, lane)] = count
    return staged


async def test_staging_invariant_holds_after_every_staging_script(r, keys, models):
    store = JobStore(r, keys)
    router = Router(r, keys, models, max_move=2)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    await router.prepare()
    await _create(store, "job_a", [("alpha", "batch")] * 5 + [("beta", "interactive")] * 3)
    await _create(store, "job_b", [("alpha", "batch")] * 4 + [("alpha", "interactive")] * 2)
    await _create(store, "job_c", [("beta", "batch")] * 3)
    poisoned = await _create(store, "job_d", [("gamma", "batch")])

    await _admit_all(r, keys, router)  # admit
    staged = await assert_invariant(r, keys, models)
    assert staged[("alpha", "batch")] == 9 and staged[("beta", "interactive")] == 3

    await router.feed_all()  # feed: at most 2 per lane, jobs taking turns
    staged = await assert_invariant(r, keys, models)
    assert staged[("alpha", "batch")] == 7 and staged[("alpha", "interactive")] == 0

    await store.stop("job_b", RequestStatus.CANCELLED)  # cancel
    staged = await assert_invariant(r, keys, models)
    assert await r.llen(keys.staging_queue("alpha", "batch", "job_b")) == 0
    await store.stop("job_c", RequestStatus.EXPIRED)  # expiry
    await assert_invariant(r, keys, models)

    # job_d's request runs out of attempts, and an operator requeues it
    while any((await assert_invariant(r, keys, models)).values()):
        await router.feed_all()
        await assert_invariant(r, keys, models)
    req = poisoned[0]
    line = ResultLine(
        custom_id=req.custom_id,
        request_id=req.request_id,
        model=req.model,
        status=RequestStatus.FAILED,
        output=None,
        usage=Usage(),
        timings=Timings(queued_ms=0, inference_ms=0),
        error=ErrorInfo(code="max_attempts_exceeded", message="x"),
    )
    await store.record_results(
        "collector",
        [],
        [
            ResultRecord(
                "job_d",
                req.request_id,
                req.model,
                RequestStatus.FAILED,
                0,
                0,
                msgspec.json.encode(line),
                "max_attempts_exceeded",
            )
        ],
    )
    dead_id = (await r.xadd(keys.dead_letter_stream, {PAYLOAD_FIELD: enc.encode(req)})).decode()
    await store.requeue(dead_id, "job_d", req.request_id, "gamma", "batch", enc.encode(req))
    staged = await assert_invariant(r, keys, models)
    assert staged[("gamma", "batch")] == 1
    await router.feed_all()
    assert not any((await assert_invariant(r, keys, models)).values())
