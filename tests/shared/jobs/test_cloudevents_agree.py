"""The collector's script (shared/jobs/lua/record_results.lua) writes the CloudEvents documents by
concatenation; shared/wire/events.py builds them in Python. Both must give the same bytes: each event
type is produced through the real collector on a real Redis, read back from the events stream,
and compared with shared/wire/events.py's document for the same input. (No code path ends a job
`failed`, so job.failed cannot be produced.)"""

from __future__ import annotations

import msgspec
import pytest

from services.dispatcher.collector import Collector
from services.dispatcher.router import Router
from shared.core.states import JobStatus, RequestStatus
from shared.jobs.store import JobStore
from shared.redis.keys import COLLECTOR_GROUP, EVENT_FIELD, PAYLOAD_FIELD, ROUTER_GROUP
from shared.redis.streams import ensure_group
from shared.wire.api import Output, ResultLine, Timings, Usage
from shared.wire.events import JobSummary, job_event_json, request_event_json, rfc3339_ms
from shared.wire.messages import ResultEnvelope
from tests.support.created_jobs import create_job

enc = msgspec.msgpack.Encoder()
NOW_MS = 1_795_413_662_345
CREATED_MS = 1_795_413_600_999


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    monkeypatch.setattr("shared.jobs.store.time.time", lambda: NOW_MS / 1000)


async def _collect(r, keys, store: JobStore) -> None:
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    collector = Collector(r, keys, store)
    while reply := await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}, count=100):
        await collector.handle(reply[0][1])


async def _events(r, keys) -> list[tuple[str, str, bytes]]:
    return [
        (f[b"type"].decode(), f[b"job"].decode(), f[EVENT_FIELD.encode()])
        for _, f in await r.xrange(keys.events_stream)
    ]


async def _python_job_event(store: JobStore, job_id: str) -> bytes:
    job = await store.get(job_id)
    summary = JobSummary(
        id=job.id,
        status=job.status,
        request_counts=job.request_counts,
        usage=job.usage,
        created_at=job.created_at,
        ended_at=NOW_MS // 1000,
        results_url=f"/v1/jobs/{job.id}/results",
    )
    return job_event_json(summary, rfc3339_ms(NOW_MS), NOW_MS)


async def test_request_and_job_completed_documents_match_shared_events(r, keys):
    store = JobStore(r, keys)
    reqs = await create_job(store, "job_ok", 2, CREATED_MS)
    for i, req in enumerate(reqs):
        line = ResultLine(
            custom_id=req.custom_id,
            request_id=req.request_id,
            model=req.model,
            status=RequestStatus.SUCCEEDED,
            output=Output(text=f'out "{i}" é', finish_reason="stop"),
            usage=Usage(prompt_tokens=3, completion_tokens=i + 1),
            error=None,
            timings=Timings(queued_ms=1.5, inference_ms=2),
        )
        await r.xadd(keys.results_stream, {PAYLOAD_FIELD: enc.encode(ResultEnvelope(req.job_id, line))})
    await _collect(r, keys, store)

    events = await _events(r, keys)
    assert [t for t, _, _ in events] == ["request.completed", "request.completed", "job.completed"]
    lines = await store.read_results("job_ok", None, 10)
    for (_, _, doc), (cursor, line) in zip(events, lines):
        request_id = msgspec.json.decode(line, type=ResultLine).request_id
        assert doc == request_event_json("job_ok", request_id, cursor.decode(), line, rfc3339_ms(NOW_MS))
    assert (await store.get("job_ok")).status == JobStatus.COMPLETED
    assert events[-1][2] == await _python_job_event(store, "job_ok")


@pytest.mark.parametrize("reason", [RequestStatus.CANCELLED, RequestStatus.EXPIRED])
async def test_stopped_job_documents_match_shared_events(r, keys, models, reason):
    store = JobStore(r, keys)
    await create_job(store, "job_stop", 3, CREATED_MS)
    router = Router(r, keys, models)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    await router.admit((await r.xreadgroup(ROUTER_GROUP, router.consumer, {keys.ingest_stream: ">"}))[0][1])
    await store.stop("job_stop", reason)
    await _collect(r, keys, store)

    events = await _events(r, keys)
    assert [t for t, _, _ in events] == ["request.completed"] * 3 + [f"job.{reason}"]
    lines = await store.read_results("job_stop", None, 10)
    for (_, _, doc), (cursor, line) in zip(events, lines):
        request_id = msgspec.json.decode(line, type=ResultLine).request_id
        assert doc == request_event_json("job_stop", request_id, cursor.decode(), line, rfc3339_ms(NOW_MS))
    assert events[-1][2] == await _python_job_event(store, "job_stop")


# Costs and busy times in every form msgspec writes: none, below 1e-5 (an exponent), small
# decimals, whole amounts (`.0`), many digits.
AMOUNTS = [(0, 0), (7, 3), (42, 99), (1_000_000, 2_000_000), (1_234_567, 10), (123_456_789_012, 987_654_321)]


@pytest.mark.parametrize(("cost", "busy"), AMOUNTS)
async def test_job_document_with_costs_per_serving_model_matches_shared_events(r, keys, cost, busy):
    """Requests of `alpha` served by two models (one moved along a fallback chain): the job event's
    usage has the totals and `by_model` in byte order of the names, the same bytes as shared/wire/events.py's."""
    store = JobStore(r, keys)
    reqs = await create_job(store, "job_cost", 3, CREATED_MS)
    for i, (req, served) in enumerate(zip(reqs, ["Zeta/b", "alpha", "Zeta/b"])):
        line = ResultLine(
            custom_id=req.custom_id,
            request_id=req.request_id,
            model=req.model,
            status=RequestStatus.SUCCEEDED,
            output=Output(text="x", finish_reason="stop"),
            usage=Usage(prompt_tokens=1, completion_tokens=1),
            error=None,
            timings=Timings(queued_ms=0, inference_ms=1),
            served_by=served,
            fallback_reason="max_queue_wait" if served != "alpha" else None,
        )
        env = ResultEnvelope(req.job_id, line, busy + i, cost + i)
        await r.xadd(keys.results_stream, {PAYLOAD_FIELD: enc.encode(env)})
    await _collect(r, keys, store)

    events = await _events(r, keys)
    assert events[-1][0] == "job.completed"
    assert events[-1][2] == await _python_job_event(store, "job_cost")
    usage = msgspec.json.decode(events[-1][2])["data"]["usage"]
    assert list(usage["by_model"]) == ["Zeta/b", "alpha"]
    assert usage["by_model"]["Zeta/b"]["requests"] == 2
    assert round(usage["cost"] * 1_000_000) == 3 * cost + 3
    assert round(usage["gpu_seconds"] * 1_000_000) == 3 * busy + 3
