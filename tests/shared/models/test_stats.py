"""GET /v1/model-stats: what the collector counts per batch and the dispatcher samples per bucket
comes back per model as throughput, latency and a bounded history."""

from __future__ import annotations

import time

from services.dispatcher.stats_sampler import sample_once
from shared.models.stats import BUCKET_S, WINDOW_S, ResultTally, read_stats, record_samples
from shared.wire.api import ErrorInfo, Output, ResultLine, Timings, Usage
from shared.wire.messages import result_record

NOW = 1_800_000_000.0  # a bucket boundary (a multiple of BUCKET_S)


def _line(model: str, status: str = "succeeded", queued_ms: float = 10.0, inference_ms: float = 30.0) -> ResultLine:
    return ResultLine(
        custom_id="c",
        request_id="req_x",
        model=model,
        status=status,
        output=Output(text="hi", finish_reason="stop") if status == "succeeded" else None,
        usage=Usage(prompt_tokens=1, completion_tokens=1),
        error=ErrorInfo(code="x", message="y") if status != "succeeded" else None,
        timings=Timings(queued_ms=queued_ms, inference_ms=inference_ms),
    )


async def _tally(r, keys, lines, at: float) -> None:
    tally = ResultTally()
    for line in lines:
        tally.add(result_record("job", line))
    await tally.flush(r, keys, now_s=at)


async def test_throughput_and_latency_over_the_last_minute(r, keys):
    # 30 results a minute ago and 30 in the current bucket: 60 over the last 60 s (+ 2 s of this bucket)
    await _tally(r, keys, [_line("alpha")] * 30, NOW - 55)
    await _tally(r, keys, [_line("alpha", queued_ms=20, inference_ms=60)] * 29 + [_line("alpha", "failed")], NOW + 1)
    await _tally(r, keys, [_line("alpha")] * 100, NOW - 120)  # outside the last minute, inside the window
    (stats,) = await read_stats(r, keys, ["alpha"], now_s=NOW + 2)
    assert stats.throughput_per_s == round(60 / 62, 3)
    # 59 that ran: 30 at 40 ms, 29 at 80 ms, 1 failed at 40 ms
    assert stats.latency_ms == round((30 * 40 + 29 * 80 + 40) / 60, 3)
    assert stats.inference_ms == round((30 * 30 + 29 * 60 + 30) / 60, 3)
    assert len(stats.samples) == WINDOW_S // BUCKET_S and stats.samples[-1].at == NOW
    last = stats.samples[-1]
    assert (last.completed, last.failed, last.backlog) == (30, 1, None)
    assert [s.completed for s in stats.samples if s.completed] == [100, 30, 30]


async def test_a_request_that_never_ran_counts_as_a_result_without_latency(r, keys):
    await _tally(r, keys, [_line("alpha", "cancelled", 0, 0)] * 3, NOW)
    (stats,) = await read_stats(r, keys, ["alpha"], now_s=NOW + 1)
    assert stats.samples[-1].completed == 3 and stats.latency_ms is None and stats.samples[-1].latency_ms is None


async def test_samples_fill_their_bucket_and_old_buckets_are_deleted(r, keys):
    await record_samples(r, keys, {"alpha": (7, 2)}, now_s=NOW - WINDOW_S - 60)
    await _tally(r, keys, [_line("alpha")], NOW - WINDOW_S - 60)
    await record_samples(r, keys, {"alpha": (12, 3)}, now_s=NOW)
    fields = await r.hkeys(keys.model_stats("alpha"))
    assert sorted(fields) == sorted([f"{int(NOW)}:backlog".encode(), f"{int(NOW)}:replicas".encode()])
    assert 0 < await r.ttl(keys.model_stats("alpha")) <= 2 * WINDOW_S
    (stats,) = await read_stats(r, keys, ["alpha"], now_s=NOW + 3)
    assert (stats.samples[-1].backlog, stats.samples[-1].replicas) == (12, 3)
    assert all(s.backlog is None for s in stats.samples[:-1])


async def test_the_sampler_records_each_models_backlog_and_workers(r, keys, models):
    await r.hset(keys.flow("alpha"), "unfinished", 42)
    await sample_once(r, keys, models, now_s=NOW)
    by_model = {s.id: s for s in await read_stats(r, keys, models.names(), now_s=NOW)}
    assert by_model["alpha"].samples[-1].backlog == 42
    assert by_model["alpha"].samples[-1].replicas == 0  # static: the workers reading its stream; none here
    assert by_model["beta"].samples[-1].backlog == 0


async def test_the_route_answers_every_configured_model_in_order(api, models, r, keys):
    await _tally(r, keys, [_line("beta")] * 5, time.time())
    resp = await api.get("/v1/model-stats")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == models.names()
    beta = next(m for m in body["data"] if m["id"] == "beta")
    assert beta["object"] == "model.stats" and beta["bucket_s"] == BUCKET_S and beta["window_s"] == WINDOW_S
    assert beta["throughput_per_s"] > 0 and beta["samples"][-1]["completed"] == 5
    doc = (await api.get("/openapi.json")).json()
    schema = doc["paths"]["/v1/model-stats"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ModelStatsList"}
    assert "throughput_per_s" in doc["components"]["schemas"]["ModelStats"]["properties"]
