"""A worker and bundled batch-lane entries (flow.batch_bundle), in process: never more requests in
flight than max_inflight; a bundle delivered again is split into single requests that keep the
deliveries they had, so a request that keeps killing workers is still dead-lettered in time."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from shared.catalog.models import DummyOptions, FlowConfig, parse_models
from shared.jobs.store import JobStore
from shared.redis.keys import DELIVERED_FIELD, PAYLOAD_FIELD, WORKER_GROUP, lane_entry_payloads
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.support.published import published_results

enc = msgspec.msgpack.Encoder()


def _requests(n: int, job_id: str = "job_b") -> list[InferenceRequest]:
    return [
        InferenceRequest(
            request_id=f"req_{i}",
            job_id=job_id,
            custom_id=f"c{i}",
            model="gamma",
            accepted_ms=0,
            prompt=f"word{i} more words",
            params=SamplingParams(max_tokens=8),
        )
        for i in range(n)
    ]


def _bundle_fields(reqs: list[InferenceRequest]) -> dict[str, bytes]:
    return {(PAYLOAD_FIELD if i == 0 else f"{PAYLOAD_FIELD}{i}"): enc.encode(q) for i, q in enumerate(reqs)}


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_an_entry_carries_its_requests_in_field_order():
    reqs = _requests(3)
    fields = {k.encode(): v for k, v in _bundle_fields(reqs).items()}
    assert lane_entry_payloads(fields) == [enc.encode(q) for q in reqs]
    assert lane_entry_payloads({PAYLOAD_FIELD.encode(): b"x", b"n": b"2"}) == [b"x"]
    assert lane_entry_payloads({}) == []


def test_a_bundle_larger_than_max_inflight_is_refused_naming_the_field():
    text = '[models.m]\nengine = "dummy"\nmax_inflight = 4\n[models.m.flow]\nbatch_bundle = 8\n'
    with pytest.raises(Exception, match="batch_bundle"):
        parse_models(text, "models.toml")


async def test_bundles_are_read_only_within_the_free_slots_and_each_request_is_published_once(r, keys, models):
    model = msgspec.structs.replace(models.get("gamma"), flow=FlowConfig(batch_bundle=4))  # max_inflight 16
    reqs = _requests(40)
    await JobStore(r, keys).create("job_b", 0, {"gamma": 40}, {}, [])
    stream = keys.model_stream("gamma", "batch")
    for k in range(0, 40, 4):
        await r.xadd(stream, _bundle_fields(reqs[k : k + 4]))
    worker = InferenceWorker(r, keys, model, DummyEngine(DummyOptions(latency_ms=200)), block_ms=200)
    peak = 0

    async def watch() -> bool:
        nonlocal peak
        peak = max(peak, len(worker.inflight))
        return len(await published_results(r, keys)) >= 40

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(watch, timeout=20)
    stop.set()
    await task
    assert peak == 16  # four bundles at a time: never more than max_inflight
    results = await published_results(r, keys)
    assert sorted(e.line.custom_id for e in results) == sorted(q.custom_id for q in reqs)
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0


async def test_a_bundle_delivered_again_is_split_and_each_request_keeps_its_deliveries(r, keys, models):
    model = msgspec.structs.replace(
        models.get("gamma"), flow=FlowConfig(batch_bundle=4), max_deliveries=3, reclaim_idle_s=0.2
    )
    reqs = _requests(4)
    await JobStore(r, keys).create("job_b", 0, {"gamma": 4}, {}, [])
    stream = keys.model_stream("gamma", "batch")
    await r.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    entry_id = await r.xadd(stream, _bundle_fields(reqs))
    # a worker read it and another took it over, and both stopped before finishing: 2 deliveries
    await r.xreadgroup(WORKER_GROUP, "gone-1", {stream: ">"})
    await r.xclaim(stream, WORKER_GROUP, "gone-2", 0, [entry_id])
    await asyncio.sleep(0.3)  # idle past reclaim_idle_s: this worker reclaims it (the third delivery)

    worker = InferenceWorker(r, keys, model, DummyEngine(DummyOptions()), block_ms=200)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def published() -> bool:
        return len(await published_results(r, keys)) >= 4

    await _until(published)
    stop.set()
    await task
    singles = [fields for i, fields in await r.xrange(stream) if i != entry_id]  # acknowledged, still listed
    # split into one entry per request, each carrying the bundle's 3 deliveries
    assert [lane_entry_payloads(f) for f in singles] == [[enc.encode(q)] for q in reqs]
    assert {f[DELIVERED_FIELD.encode()] for f in singles} == {b"3"}
    results = await published_results(r, keys)
    # read once more as a single, each was delivered 4 times: past max_deliveries (3)
    assert sorted(e.line.custom_id for e in results) == [q.custom_id for q in reqs]
    for e in results:
        assert e.line.status == "failed" and e.line.error is not None
        assert e.line.error.code == "max_attempts_exceeded"
        assert "delivered 4 times" in e.line.error.message
    assert await r.xlen(keys.dead_letter_stream) == 4
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0
