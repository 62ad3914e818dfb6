"""Each hop acknowledges in the same atomic step as its effect, so redelivered messages (a
consumer that crashed, a reclaim race) never take effect twice."""

from __future__ import annotations

import json

import msgspec

from services.dispatcher.collector import Collector
from services.dispatcher.router import Router
from services.inference.publisher import Outcome, ResultPublisher
from shared.jobs.store import JobStore
from shared.redis.keys import COLLECTOR_GROUP, EVENT_FIELD, PAYLOAD_FIELD, ROUTER_GROUP, WORKER_GROUP
from shared.redis.streams import ensure_group
from shared.wire.api import Output, ResultLine, Timings, Usage
from shared.wire.messages import InferenceRequest, IngestChunk, ResultEnvelope, SamplingParams

enc = msgspec.msgpack.Encoder()


def _request(job_id: str, i: int, model: str) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"req_{i}",
        job_id=job_id,
        custom_id=f"c{i}",
        model=model,
        accepted_ms=0,
        prompt=f"p{i}",
        params=SamplingParams(max_tokens=4),
    )


async def _create_job(store: JobStore, job_id: str, per_model: dict[str, int]) -> list[InferenceRequest]:
    reqs = [_request(job_id, i, m) for i, m in enumerate(m for m, n in per_model.items() for _ in range(n))]
    chunk = enc.encode(IngestChunk(job_id, [(q.model, "batch", enc.encode(q)) for q in reqs]))
    await store.create(job_id, 1_000, per_model, {"k": "v"}, [chunk])
    return reqs


def _result(req: InferenceRequest, status="succeeded", tokens=(3, 2)) -> bytes:
    line = ResultLine(
        custom_id=req.custom_id,
        request_id=req.request_id,
        model=req.model,
        status=status,
        output=Output(text="x", finish_reason="stop"),
        usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]),
        error=None,
        timings=Timings(queued_ms=1, inference_ms=1),
    )
    return enc.encode(ResultEnvelope(req.job_id, line))


async def test_router_routes_a_redelivered_chunk_once(r, keys, models):
    store = JobStore(r, keys)
    await _create_job(store, "job_a", {"alpha": 3, "beta": 2})
    router_a, router_b = Router(r, keys, models), Router(r, keys, models)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    entries = (await r.xreadgroup(ROUTER_GROUP, router_a.consumer, {keys.ingest_stream: ">"}))[0][1]
    # router A stalls; router B reclaims the same entry; both then route it
    await r.xclaim(keys.ingest_stream, ROUTER_GROUP, router_b.consumer, 0, [entries[0][0]])
    await router_b.handle(entries)
    await router_a.handle(entries)
    assert router_b.admitted == 5 and router_a.admitted == 0
    await router_a.feed_all()
    await router_b.feed_all()
    assert router_a.routed + router_b.routed == 5
    assert await r.xlen(keys.model_stream("alpha", "batch")) == 3
    assert await r.xlen(keys.model_stream("beta", "batch")) == 2
    assert (await r.xpending(keys.ingest_stream, ROUTER_GROUP))["pending"] == 0


async def test_router_fails_requests_for_a_model_no_longer_configured(r, keys, models):
    store = JobStore(r, keys)
    await _create_job(store, "job_b", {"alpha": 1, "retired": 1})
    router = Router(r, keys, models)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    entries = (await r.xreadgroup(ROUTER_GROUP, router.consumer, {keys.ingest_stream: ">"}))[0][1]
    await router.handle(entries)
    await router.feed_all()
    assert await r.xlen(keys.model_stream("alpha", "batch")) == 1
    assert await r.xlen(keys.model_stream("retired", "batch")) == 0
    failed = msgspec.msgpack.decode((await r.xrange(keys.results_stream))[0][1][b"d"], type=ResultEnvelope)
    assert failed.line.status == "failed" and failed.line.error.code == "model_not_found"


async def test_worker_publish_acks_and_appends_once(r, keys):
    req = _request("job_c", 0, "alpha")
    stream = keys.model_stream("alpha", "batch")
    await ensure_group(r, stream, WORKER_GROUP)
    entry_id = await r.xadd(stream, {PAYLOAD_FIELD: enc.encode(req)})
    await r.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    publisher = ResultPublisher(r, keys, "alpha")
    batch_lane = 1
    assert await publisher.publish([Outcome(batch_lane, entry_id, result=_result(req))]) == 1
    # a second worker that reclaimed the entry finishes it too: its result is dropped
    assert await publisher.publish([Outcome(batch_lane, entry_id, result=_result(req))]) == 0
    assert await r.xlen(keys.results_stream) == 1


async def test_collector_counts_each_request_once_and_completes_the_job_once(r, keys):
    store = JobStore(r, keys)
    reqs = await _create_job(store, "job_d", {"alpha": 2, "beta": 1})
    await store.mark_started([(q.job_id, q.request_id, q.model) for q in reqs[:2]])
    await store.mark_started([(reqs[0].job_id, reqs[0].request_id, reqs[0].model)])  # redelivery
    job = await store.get("job_d")
    assert job.status == "in_progress" and job.request_counts.running == 2 and job.request_counts.queued == 1

    collector = Collector(r, keys, store)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    for payload in [_result(reqs[0]), _result(reqs[0]), _result(reqs[1], "failed"), _result(reqs[2]), _result(reqs[2])]:
        await r.xadd(keys.results_stream, {PAYLOAD_FIELD: payload})
    entries = (await r.xreadgroup(COLLECTOR_GROUP, collector.consumer, {keys.results_stream: ">"}))[0][1]
    await collector.handle(entries[:2])
    await collector.handle(entries[2:])
    await collector.handle(entries)  # the whole batch delivered again

    job = await store.get("job_d")
    assert job.status == "completed" and job.completed_at is not None
    c = job.request_counts
    assert (c.total, c.queued, c.running, c.succeeded, c.failed) == (3, 0, 0, 2, 1)
    assert job.models["alpha"].succeeded == 1 and job.models["alpha"].failed == 1 and job.models["beta"].succeeded == 1
    assert (job.usage.prompt_tokens, job.usage.completion_tokens) == (9, 6)
    lines = await store.read_results("job_d", None, 100)
    assert sorted(json.loads(l)["request_id"] for _, l in lines) == ["req_0", "req_1", "req_2"]
    events = [json.loads(f[EVENT_FIELD.encode()]) for _, f in await r.xrange(keys.events_stream)]
    # one event per request despite the redelivery, then the job's, once
    assert [e["type"] for e in events] == ["com.inferq.request.completed"] * 3 + ["com.inferq.job.completed"]
    assert sorted(e["data"]["request_id"] for e in events[:3]) == ["req_0", "req_1", "req_2"]
    assert all(e["id"].startswith(e["data"]["request_id"] + ".") and e["subject"] == "job_d" for e in events[:3])
    event = events[3]
    assert event["specversion"] == "1.0" and event["type"] == "com.inferq.job.completed" and event["subject"] == "job_d"
    assert event["data"]["request_counts"]["succeeded"] == 2 and event["data"]["request_counts"]["failed"] == 1
    assert (await r.xpending(keys.results_stream, COLLECTOR_GROUP))["pending"] == 0
    assert int(await r.hget(keys.tenant_backlog, "default")) == 0  # the tenant's queued count is back to zero
    assert not await r.exists(keys.job_requests("job_d"))  # per-request state freed once the job is done
    assert 0 < await r.ttl(keys.job("job_d")) <= store.job_ttl_s


async def test_results_cursor_continues_where_the_reader_stopped(r, keys):
    store = JobStore(r, keys)
    reqs = await _create_job(store, "job_e", {"alpha": 5})
    collector = Collector(r, keys, store)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    for q in reqs:
        await r.xadd(keys.results_stream, {PAYLOAD_FIELD: _result(q)})
    entries = (await r.xreadgroup(COLLECTOR_GROUP, collector.consumer, {keys.results_stream: ">"}))[0][1]
    await collector.handle(entries)
    seen, cursor = [], None
    while True:
        page = await store.read_results("job_e", cursor, 2)
        if not page:
            break
        seen += [json.loads(line)["custom_id"] for _, line in page]
        cursor = page[-1][0].decode()
    assert seen == [q.custom_id for q in reqs]


async def test_a_batch_publishes_only_the_results_of_entries_still_pending_here(r, keys):
    """One publish call for three entries, the middle one meanwhile reclaimed and finished by
    another worker: the batch's results-stream entry holds exactly the other two results, in
    order, and the middle result is there once, from the worker that finished it first."""
    from shared.wire.messages import bundle_decoder, result_record

    stream = keys.model_stream("alpha", "batch")
    await ensure_group(r, stream, WORKER_GROUP)
    reqs = [_request("job_d", i, "alpha") for i in range(3)]
    ids = [await r.xadd(stream, {PAYLOAD_FIELD: enc.encode(q)}) for q in reqs]
    await r.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    await r.xclaim(stream, WORKER_GROUP, "w2", 0, [ids[1]])

    def record(q: InferenceRequest) -> bytes:
        line = ResultLine(
            custom_id=q.custom_id,
            request_id=q.request_id,
            model=q.model,
            status="succeeded",
            output=Output(text=f"out {q.request_id}", finish_reason="stop"),
            usage=Usage(prompt_tokens=1, completion_tokens=1),
            error=None,
            timings=Timings(queued_ms=1, inference_ms=1),
        )
        return enc.encode(result_record(q.job_id, line))

    w1, w2 = ResultPublisher(r, keys, "alpha"), ResultPublisher(r, keys, "alpha")
    batch = [Outcome(1, i, result=record(q)) for i, q in zip(ids, reqs)]
    # a drop notice (no result) between them keeps the lengths of the results apart
    assert await w2.publish([batch[1]]) == 1
    # a drop notice (no result) among them: the results' lengths still line up
    assert await w1.publish([batch[0], Outcome(1, b"0-1", dropped=b"x", reason="cancelled"), *batch[1:]]) == 2
    entries = await r.xrange(keys.results_stream)
    assert len(entries) == 2
    published = [[rec.request_id for rec in bundle_decoder.decode(fields[b"b"])] for _, fields in entries]
    assert published == [["req_1"], ["req_0", "req_2"]]
    lines = [json.loads(rec.line) for _, f in entries for rec in bundle_decoder.decode(f[b"b"])]
    assert [line["output"]["text"] for line in lines] == ["out req_1", "out req_0", "out req_2"]
    assert (await r.xpending(stream, WORKER_GROUP))["pending"] == 0
