"""The inference worker loop in-process against a real Redis."""

from __future__ import annotations

import asyncio
import json

import msgspec

from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from shared.catalog.models import DummyOptions
from shared.jobs.store import JobStore
from shared.redis.keys import PAYLOAD_FIELD, WORKER_GROUP
from shared.wire.messages import InferenceRequest, ResultEnvelope, SamplingParams
from tests.support.published import published_results

enc = msgspec.msgpack.Encoder()


async def _enqueue(r, keys, model: str, n: int, job_id="job_w") -> list[InferenceRequest]:
    reqs = [
        InferenceRequest(
            request_id=f"req_{i}",
            job_id=job_id,
            custom_id=f"c{i}",
            model=model,
            accepted_ms=0,
            prompt=f"word{i} more words",
            params=SamplingParams(max_tokens=8),
        )
        for i in range(n)
    ]
    await JobStore(r, keys).create(job_id, 0, {model: n}, {}, [])
    for q in reqs:
        await r.xadd(keys.model_stream(model, "batch"), {PAYLOAD_FIELD: enc.encode(q)})
    return reqs


async def _results(r, keys) -> list[ResultEnvelope]:
    return await published_results(r, keys)


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_worker_processes_everything_with_bounded_concurrency(r, keys, models):
    model = models.get("beta")  # max_inflight 32
    await _enqueue(r, keys, "beta", 200)
    engine = DummyEngine(DummyOptions(latency_ms=5))
    peak = 0
    original = engine.generate

    async def observed(req, lane="batch"):
        nonlocal peak
        peak = max(peak, len(worker.inflight))
        return await original(req, lane)

    engine.generate = observed
    worker = InferenceWorker(r, keys, model, engine, block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(lambda: _count(r, keys, 200))
    stop.set()
    await task
    results = await _results(r, keys)
    assert sorted(e.line.custom_id for e in results) == sorted(f"c{i}" for i in range(200))
    assert all(e.line.status == "succeeded" and e.line.output.text.startswith("word") for e in results)
    assert 1 < peak <= 32
    assert (await r.xpending(keys.model_stream("beta", "batch"), WORKER_GROUP))["pending"] == 0
    job = await JobStore(r, keys).get("job_w")
    assert job.request_counts.running == 200  # marked running; the collector (not running here) settles them


async def _count(r, keys, n):
    return len(await published_results(r, keys)) >= n


async def test_engine_failures_become_failed_results(r, keys, models):
    await _enqueue(r, keys, "alpha", 100)
    worker = InferenceWorker(r, keys, models.get("alpha"), DummyEngine(DummyOptions(failure_rate=0.3)), block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(lambda: _count(r, keys, 100))
    stop.set()
    await task
    results = await _results(r, keys)
    failed = [e.line for e in results if e.line.status == "failed"]
    assert 10 < len(failed) < 60
    assert all(l.error.code == "simulated_failure" and l.output is None for l in failed)


async def test_stop_drains_in_flight_requests_before_exit(r, keys, models):
    await _enqueue(r, keys, "gamma", 16)
    worker = InferenceWorker(r, keys, models.get("gamma"), DummyEngine(DummyOptions(latency_ms=300)), block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(lambda: _has_inflight(worker, 16))
    stop.set()  # requests are mid-generation
    await task
    assert len(await published_results(r, keys)) == 16
    assert (await r.xpending(keys.model_stream("gamma", "batch"), WORKER_GROUP))["pending"] == 0


async def test_unfinished_work_is_handed_back_after_the_grace_period(r, keys, models):
    await _enqueue(r, keys, "gamma", 4)
    worker = InferenceWorker(
        r, keys, models.get("gamma"), DummyEngine(DummyOptions(latency_ms=5000)), grace_s=0.2, block_ms=100
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(lambda: _has_inflight(worker, 4))
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(await published_results(r, keys)) == 0
    stream = keys.model_stream("gamma", "batch")
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0  # nothing left held by a stopped worker
    assert (await r.xinfo_groups(stream))[0]["lag"] == 4  # back as unread entries

    # another worker takes them at once (no reclaim wait: its reclaim idle time is the default 300 s)
    other = InferenceWorker(r, keys, models.get("gamma"), DummyEngine(DummyOptions()), block_ms=100)
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(other.run(stop2))
    await _until(lambda: _count(r, keys, 4))
    stop2.set()
    await task2
    assert sorted(e.line.custom_id for e in await _results(r, keys)) == ["c0", "c1", "c2", "c3"]


async def _has_inflight(worker, n):
    return len(worker.inflight) >= n


def test_result_lines_are_the_documented_shape():
    from shared.wire.api import ErrorInfo, ResultLine, Timings, Usage

    line = ResultLine(
        custom_id="a",
        request_id="r",
        model="m",
        status="failed",
        output=None,
        usage=Usage(),
        error=ErrorInfo(code="x", message="y"),
        timings=Timings(queued_ms=1.5, inference_ms=2.0),
    )
    assert set(json.loads(msgspec.json.encode(line))) == {
        "custom_id",
        "request_id",
        "model",
        "status",
        "output",
        "usage",
        "error",
        "timings",
        "served_by",
        "fallback_reason",
    }
    assert set(json.loads(msgspec.json.encode(line))["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "gpu_seconds",
        "cost",
    }


async def test_unreadable_request_fails_visibly_or_is_dead_lettered(r, keys, models):
    stream = keys.model_stream("alpha", "batch")
    await JobStore(r, keys).create("job_x", 0, {"alpha": 1}, {}, [])
    # readable enough to attribute (job and request ids) but not a valid request
    await r.xadd(stream, {PAYLOAD_FIELD: enc.encode({"job_id": "job_x", "request_id": "req_1", "params": "nope"})})
    await r.xadd(stream, {PAYLOAD_FIELD: b"\xc1 not msgpack"})
    worker = InferenceWorker(r, keys, models.get("alpha"), DummyEngine(DummyOptions()), block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await _until(lambda: _count(r, keys, 1))
    await _until(lambda: _dead(r, keys))
    stop.set()
    await task
    (env,) = await _results(r, keys)
    assert env.job_id == "job_x" and env.line.status == "failed" and env.line.error.code == "invalid_request"
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0


async def _dead(r, keys):
    return await r.xlen(keys.dead_letter_stream) == 1


async def test_reclaim_never_takes_more_than_free_slots(r, keys):
    from shared.redis.streams import claim_idle, ensure_group

    stream = keys.model_stream("alpha", "batch")
    await ensure_group(r, stream, WORKER_GROUP)
    for _ in range(10):
        await r.xadd(stream, {PAYLOAD_FIELD: b"x"})
    await r.xreadgroup(WORKER_GROUP, "dead-worker", {stream: ">"})
    claimed = await claim_idle(r, stream, WORKER_GROUP, "live-worker", 0, 4)
    assert len(claimed) == 4
