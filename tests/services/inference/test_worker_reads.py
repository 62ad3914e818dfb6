"""How a waiting worker takes a burst (services/inference/worker.py `_wait_for_work`): what arrives
is started in few reads and mark-started calls, never past max_inflight, interactive work keeps
at least its share of the free slots, and every request is published exactly once."""

from __future__ import annotations

import asyncio

import msgspec

from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from shared.catalog.models import DummyOptions
from shared.jobs.store import JobStore
from shared.redis.keys import LANES, PAYLOAD_FIELD, WORKER_GROUP
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.support.published import published_results

enc = msgspec.msgpack.Encoder()


def _requests(model: str, lane: str, n: int) -> list[InferenceRequest]:
    return [
        InferenceRequest(
            request_id=f"req_{lane}_{i}",
            job_id="job_burst",
            custom_id=f"{lane}{i}",
            model=model,
            accepted_ms=0,
            prompt=f"word{i} more words",
            params=SamplingParams(max_tokens=8),
        )
        for i in range(n)
    ]


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_burst_that_arrives_while_waiting_is_started_at_once_within_the_slots(r, keys, models):
    model = models.get("gamma")  # max_inflight 16
    by_lane = {lane: _requests("gamma", lane, 12) for lane in LANES}
    await JobStore(r, keys).create("job_burst", 0, {"gamma": 24}, {}, [])
    engine = DummyEngine(DummyOptions(latency_ms=400))
    worker = InferenceWorker(r, keys, model, engine, block_ms=1000)
    calls: list[int] = []
    mark_started = worker.jobs.mark_started

    async def counted(items):
        calls.append(len(items))
        return await mark_started(items)

    worker.jobs.mark_started = counted
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)  # idle: blocked on both lanes
    assert not worker.inflight

    pipe = r.pipeline(transaction=True)  # both lanes at the same instant, batch first
    for lane in ("batch", "interactive"):
        for q in by_lane[lane]:
            pipe.xadd(keys.model_stream("gamma", lane), {PAYLOAD_FIELD: enc.encode(q)})
    await pipe.execute()

    await _until(lambda: _holding(worker, 16))
    held = list(worker.inflight)
    assert len(held) == 16  # never more than max_inflight
    interactive = sum(1 for lane, *_ in held if LANES[lane] == "interactive")
    assert interactive >= 8  # at least its share of the free slots, whatever arrived first
    assert len(calls) <= 3  # the burst, not one request, per read and mark-started call

    await _until(lambda: _published(r, keys, 24))
    stop.set()
    await task
    results = await published_results(r, keys)
    assert sorted(e.line.custom_id for e in results) == sorted(q.custom_id for qs in by_lane.values() for q in qs)
    for lane in LANES:
        assert (await r.xpending(keys.model_stream("gamma", lane), WORKER_GROUP))["pending"] == 0
    assert sum(calls) == 24  # each request marked running once


async def _holding(worker: InferenceWorker, n: int) -> bool:
    return len(worker.inflight) >= n


async def _published(r, keys, n: int) -> bool:
    return len(await published_results(r, keys)) >= n
