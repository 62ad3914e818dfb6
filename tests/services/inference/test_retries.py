"""Retries, timeouts, delivery limits and dead letters in the worker, in-process on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from services.dispatcher.collector import Collector
from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from shared.catalog.models import DummyOptions, ModelConfig, RetryConfig
from shared.core.errors import RequeueRefused
from shared.jobs.store import JobStore
from shared.lanes.dead_letters import list_dead_letters
from shared.redis.keys import BUNDLE_FIELD, COLLECTOR_GROUP, PAYLOAD_FIELD, WORKER_GROUP
from shared.redis.streams import ensure_group
from shared.wire.messages import InferenceRequest, SamplingParams, bundle_decoder
from tests.support.published import published_results

enc = msgspec.msgpack.Encoder()


def _model(**kw) -> ModelConfig:
    return ModelConfig(
        name="m",
        engine="dummy",
        max_inflight=8,
        retry=RetryConfig(max_attempts=3, backoff_s=0.01, backoff_max_s=0.05),
        **kw,
    )


async def _enqueue(r, keys, prompts: list[str], job_id="job_r") -> None:
    await JobStore(r, keys).create(job_id, 0, {"m": len(prompts)}, {}, [])
    for i, p in enumerate(prompts):
        req = InferenceRequest(
            request_id=f"req_{i}",
            job_id=job_id,
            custom_id=f"c{i}",
            model="m",
            accepted_ms=0,
            prompt=p,
            params=SamplingParams(max_tokens=4),
        )
        await r.xadd(keys.model_stream("m", "batch"), {PAYLOAD_FIELD: enc.encode(req)})


async def _run_until(r, keys, worker, n_results: int, timeout=10.0):
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while len(await published_results(r, keys)) < n_results:
        assert asyncio.get_running_loop().time() < deadline, "results did not arrive"
        await asyncio.sleep(0.02)
    stop.set()
    await task
    return {e.line.custom_id: e.line for e in await published_results(r, keys)}


async def test_retryable_errors_are_retried_until_success(r, keys):
    await _enqueue(r, keys, ["a b", "c d"])
    worker = InferenceWorker(r, keys, _model(), DummyEngine(DummyOptions(flaky_attempts=2)), block_ms=50)
    lines = await _run_until(r, keys, worker, 2)
    assert all(line.status == "succeeded" for line in lines.values())
    assert await r.xlen(keys.dead_letter_stream) == 0


async def test_exhausted_retries_dead_letter_and_fail_the_request(r, keys):
    await _enqueue(r, keys, ["fine", "this is POISON", "also fine"])
    worker = InferenceWorker(r, keys, _model(), DummyEngine(DummyOptions(poison_text="POISON")), block_ms=50)
    lines = await _run_until(r, keys, worker, 3)
    assert lines["c0"].status == lines["c2"].status == "succeeded"
    bad = lines["c1"]
    assert bad.status == "failed" and bad.error.code == "max_attempts_exceeded"
    assert "after 3 attempts" in bad.error.message and "simulated_overload" in bad.error.message
    (dead,) = (await list_dead_letters(r, keys, None, 10)).data
    assert (dead.reason, dead.attempts, dead.request_id, dead.custom_id, dead.lane, dead.requeueable) == (
        "max_attempts_exceeded",
        3,
        "req_1",
        "c1",
        "batch",
        True,
    )
    assert (await r.xpending(keys.model_stream("m", "batch"), WORKER_GROUP))["pending"] == 0


async def test_permanent_errors_fail_at_once_without_dead_letter(r, keys):
    await _enqueue(r, keys, [f"p {i}" for i in range(40)])
    worker = InferenceWorker(r, keys, _model(), DummyEngine(DummyOptions(failure_rate=0.5)), block_ms=50)
    lines = await _run_until(r, keys, worker, 40)
    failed = [l for l in lines.values() if l.status == "failed"]
    assert failed and all(l.error.code == "simulated_failure" for l in failed)
    assert await r.xlen(keys.dead_letter_stream) == 0


async def test_a_request_over_its_timeout_fails(r, keys):
    await _enqueue(r, keys, ["slow one"])
    worker = InferenceWorker(
        r, keys, _model(request_timeout_s=0.05), DummyEngine(DummyOptions(latency_ms=1000)), block_ms=50
    )
    lines = await _run_until(r, keys, worker, 1)
    assert lines["c0"].status == "failed" and lines["c0"].error.code == "request_timeout"


async def test_a_request_delivered_too_often_is_dead_lettered_without_running(r, keys):
    stream = keys.model_stream("m", "batch")
    await ensure_group(r, stream, WORKER_GROUP)
    await _enqueue(r, keys, ["kills every worker"])
    entry_id = (await r.xreadgroup(WORKER_GROUP, "w0", {stream: ">"}))[0][1][0][0]
    for k in range(1, 5):  # four more workers took it and died: five deliveries
        await r.xclaim(stream, WORKER_GROUP, f"w{k}", 0, [entry_id])
    worker = InferenceWorker(
        r,
        keys,
        _model(max_deliveries=5, reclaim_idle_s=0.05),
        DummyEngine(DummyOptions(crash_text="kills")),
        block_ms=50,
    )
    await asyncio.sleep(0.06)
    lines = await _run_until(r, keys, worker, 1)  # the sixth delivery: not run (it would kill this worker)
    assert lines["c0"].error.code == "max_attempts_exceeded" and "delivered 6 times" in lines["c0"].error.message
    (dead,) = (await list_dead_letters(r, keys, None, 10)).data
    assert dead.attempts == 6


async def test_requeue_undoes_the_failure_and_reopens_the_job(r, keys):
    await _enqueue(r, keys, ["ok", "POISON pill"])
    store = JobStore(r, keys)
    poisoned = DummyEngine(DummyOptions(poison_text="POISON"))
    await _run_until(r, keys, InferenceWorker(r, keys, _model(), poisoned, block_ms=50), 2)
    collector = Collector(r, keys, store)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    await collector.handle((await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}))[0][1])
    job = await store.get("job_r")
    assert job.status == "completed" and job.request_counts.failed == 1
    (dead,) = (await list_dead_letters(r, keys, None, 10)).data
    payload = (await r.xrange(keys.dead_letter_stream))[0][1][b"d"]

    # the job was completed: it reopens, with a new completion window as long as its first one
    first_window_ms = job.expires_at * 1000 - job.created_at * 1000
    before_ms = time.time() * 1000
    assert await store.requeue(dead.id, "job_r", "req_1", "m", "batch", payload) == "completed"
    job = await store.get("job_r")
    assert job.status == "in_progress" and job.request_counts.failed == 0 and job.request_counts.queued == 1
    deadline_ms = await r.zscore(keys.deadlines, "job_r")
    assert deadline_ms is not None and deadline_ms >= before_ms + first_window_ms - 1000
    assert job.expires_at * 1000 == pytest.approx(deadline_ms, abs=1000)
    assert len(await store.read_results("job_r", None, 10)) == 1  # the failed line is gone
    assert await r.xlen(keys.dead_letter_stream) == 0
    assert await r.llen(keys.staging_queue("m", "batch", "job_r")) == 1
    # a second requeue of the same dead letter has nothing to undo
    with pytest.raises(RequeueRefused) as refused:
        await store.requeue(dead.id, "job_r", "req_1", "m", "batch", payload)
    assert refused.value.reason == "not_failed"


async def test_a_reopened_job_counts_and_announces_only_its_requeued_request(r, keys):
    """Late copies of requests that finished before the job was reopened (a redelivered entry, a
    duplicate result) neither run nor count: the requeued request's result is the one more
    request event, and its job completes once more, under a new event id."""
    await _enqueue(r, keys, ["ok", "POISON pill"])
    store = JobStore(r, keys)
    poisoned = DummyEngine(DummyOptions(poison_text="POISON"))
    await _run_until(r, keys, InferenceWorker(r, keys, _model(), poisoned, block_ms=50), 2)
    collector = Collector(r, keys, store)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    first_results = (await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}))[0][1]
    await collector.handle(first_results)
    (dead,) = (await list_dead_letters(r, keys, None, 10)).data
    payload = (await r.xrange(keys.dead_letter_stream))[0][1][b"d"]
    assert await store.requeue(dead.id, "job_r", "req_1", "m", "batch", payload) == "completed"

    # a late copy of req_0, which had finished: it does not start, and its result does not count
    assert await store.mark_started([("job_r", "req_0", "m"), ("job_r", "req_1", "m")]) == ["gone", "run"]
    late = [rec for _, f in first_results for rec in bundle_decoder.decode(f[b"b"]) if rec.request_id == "req_0"]
    await r.xadd(keys.results_stream, {BUNDLE_FIELD: msgspec.msgpack.encode(late)})
    await collector.handle((await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}))[0][1])
    job = await store.get("job_r")
    assert job.status == "in_progress" and job.request_counts.succeeded == 1 and job.request_counts.running == 1

    # the requeued request is routed, runs (and fails again): the job completes again
    staged = await r.lpop(keys.staging_queue("m", "batch", "job_r"))
    await r.xadd(keys.model_stream("m", "batch"), {PAYLOAD_FIELD: staged})
    await _run_until(r, keys, InferenceWorker(r, keys, _model(), poisoned, block_ms=50), 4)
    await collector.handle((await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}))[0][1])
    job = await store.get("job_r")
    assert job.status == "completed" and (job.request_counts.succeeded, job.request_counts.failed) == (1, 1)
    events = [json.loads(f[b"event"]) for _, f in await r.xrange(keys.events_stream)]
    kinds = [(e["type"].removeprefix("com.inferq."), e["data"].get("request_id")) for e in events]
    assert kinds == [
        ("request.completed", "req_0"),
        ("request.completed", "req_1"),
        ("job.completed", None),
        ("request.completed", "req_1"),  # the requeued request: one more
        ("job.completed", None),  # the job's second completion: one more
    ]
    first_end, second_end = events[2]["id"], events[4]["id"]
    assert first_end != second_end and second_end == f"job_r.completed.{await store.ended_ms('job_r')}"
    assert len({e["id"] for e in events}) == 5


async def _published_one_per_entry(r, keys) -> dict[str, bytes]:
    """Each result of the results stream moved to an entry of its own (as a batch that keeps
    failing is split): custom id -> entry id."""
    records = [rec for _, f in await r.xrange(keys.results_stream) for rec in bundle_decoder.decode(f[b"b"])]
    await r.delete(keys.results_stream)
    out = {}
    for rec in records:
        custom_id = json.loads(rec.line)["custom_id"]
        out[custom_id] = await r.xadd(keys.results_stream, {BUNDLE_FIELD: msgspec.msgpack.encode([rec])})
    return out


async def _collect_until_completed(r, keys, store: JobStore) -> None:
    """Run a collector that takes over entries at once and gives up after 5 deliveries, until
    job_r completes (or 4 s pass: the assertions that follow then say what is missing)."""
    collector = Collector(r, keys, store, claim_idle_ms=1, max_deliveries=5)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    for _ in range(200):
        if (await store.get("job_r")).status == "completed":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task


async def test_a_batch_of_results_that_keeps_failing_is_split_and_each_result_applied_once(r, keys):
    await _enqueue(r, keys, [f"prompt {i}" for i in range(6)])
    store = JobStore(r, keys)
    worker = InferenceWorker(r, keys, _model(), DummyEngine(DummyOptions()), block_ms=50)
    await _run_until(r, keys, worker, 6)
    records = [rec for _, f in await r.xrange(keys.results_stream) for rec in bundle_decoder.decode(f[b"b"])]
    await r.delete(keys.results_stream)
    batch_id = await r.xadd(keys.results_stream, {BUNDLE_FIELD: msgspec.msgpack.encode(records)})
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    await r.xreadgroup(COLLECTOR_GROUP, "c0", {keys.results_stream: ">"})
    for k in range(1, 5):  # four more collectors took the batch and died: five deliveries
        await r.xclaim(keys.results_stream, COLLECTOR_GROUP, f"c{k}", 0, [batch_id])

    await _collect_until_completed(r, keys, store)
    job = await store.get("job_r")
    assert job.status == "completed" and job.request_counts.succeeded == 6 and job.request_counts.failed == 0
    assert len(await store.read_results("job_r", None, 100)) == 6
    assert (await list_dead_letters(r, keys, None, 10)).data == []
    assert (await r.xpending(keys.results_stream, COLLECTOR_GROUP))["pending"] == 0


async def test_a_result_that_keeps_killing_the_collector_is_dead_lettered_and_counted_failed(r, keys):
    await _enqueue(r, keys, ["ok", "fatal to collectors"])
    store = JobStore(r, keys)
    await _run_until(r, keys, InferenceWorker(r, keys, _model(), DummyEngine(DummyOptions()), block_ms=50), 2)
    by_custom = await _published_one_per_entry(r, keys)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    entries = (await r.xreadgroup(COLLECTOR_GROUP, "c0", {keys.results_stream: ">"}))[0][1]
    await Collector(r, keys, store).handle([e for e in entries if e[0] == by_custom["c0"]])
    for k in range(1, 5):  # four more collectors took c1 and died: five deliveries
        await r.xclaim(keys.results_stream, COLLECTOR_GROUP, f"c{k}", 0, [by_custom["c1"]])

    await _collect_until_completed(r, keys, store)
    job = await store.get("job_r")
    assert job.status == "completed" and job.request_counts.succeeded == 1 and job.request_counts.failed == 1
    lines = {json.loads(l)["custom_id"]: json.loads(l) for _, l in await store.read_results("job_r", None, 10)}
    assert lines["c1"]["error"]["code"] == "max_attempts_exceeded"
    (dead,) = (await list_dead_letters(r, keys, None, 10)).data
    assert dead.custom_id == "c1" and dead.attempts == 6 and dead.source == keys.results_stream
    assert (await r.xpending(keys.results_stream, COLLECTOR_GROUP))["pending"] == 0
