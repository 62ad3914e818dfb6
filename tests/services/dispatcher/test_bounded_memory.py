"""Every growing key family has a bound: dead letters by age and count, the webhook fan-out's
stream by length (never losing an unread event without a log and a counter), webhook deliveries by
TTL and per-endpoint count, and the batch index by the records it points at."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.dispatcher.collector import RESULTS_PER_CALL, Collector
from services.dispatcher.maintenance import trim_streams
from services.dispatcher.webhooks.fanout import WebhookFanout
from shared.core.states import RequestStatus
from shared.jobs.store import JobStore
from shared.lanes.dead_letters import list_dead_letters, meta
from shared.redis.keys import BUNDLE_FIELD, COLLECTOR_GROUP, META_FIELD, PAYLOAD_FIELD, WEBHOOK_GROUP
from shared.redis.streams import ensure_group, read_new, trim_acknowledged
from shared.webhooks.records import DeliveryRecord
from shared.webhooks.store import WebhookStore
from shared.wire.api import DeadLetter, Output, ResultLine, Timings, Usage
from shared.wire.messages import InferenceRequest, ResultEnvelope, result_record
from tests.services.ingest.test_api import api  # noqa: F401  (the in-process API fixture)
from tests.support.created_jobs import create_job

enc = msgspec.msgpack.Encoder()
DAY_MS = 24 * 3600 * 1000


def _metrics(text: str) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def _ctx(r, keys, models, settings, webhooks=None) -> dict:
    return {
        "keys": keys,
        "models": models,
        "stream_redis": r,
        "settings": settings,
        "webhooks": webhooks or WebhookStore(r, keys),
    }


async def _add_dead_letter(r, keys, at_ms: int, n: int) -> None:
    info = DeadLetter(source="test", reason="max_attempts_exceeded", error=f"dead {n}")
    await r.xadd(keys.dead_letter_stream, {PAYLOAD_FIELD: b"x", META_FIELD: meta(info)}, id=f"{at_ms}-{n}")


# Dead letters.


async def test_dead_letters_older_than_the_age_limit_are_dropped_and_counted(r, keys, models, settings, api):  # noqa: F811
    now = int(time.time() * 1000)
    for n in range(3):  # eight days old
        await _add_dead_letter(r, keys, now - 8 * DAY_MS, n)
    for n in range(2):  # one day old
        await _add_dead_letter(r, keys, now - DAY_MS, n)
    settings = msgspec.structs.replace(settings, dead_letter_max_age_s=7 * 24 * 3600, dead_letter_maxlen=100)

    await trim_streams(_ctx(r, keys, models, settings))

    kept = await list_dead_letters(r, keys, None, 100)
    assert [d.error for d in kept.data] == ["dead 0", "dead 1"]
    assert all(int(d.id.split("-")[0]) == now - DAY_MS for d in kept.data)
    figures = _metrics((await api.get("/metrics")).text)
    assert figures["inferq_dead_letters"] == 2
    assert figures["inferq_dead_letters_dropped_total"] == 3


async def test_dead_letters_beyond_the_count_limit_lose_the_oldest(r, keys, models, settings, api):  # noqa: F811
    now = int(time.time() * 1000)
    for n in range(130):
        await _add_dead_letter(r, keys, now - 1000, n)
    settings = msgspec.structs.replace(settings, dead_letter_maxlen=100)

    await trim_streams(_ctx(r, keys, models, settings))
    await trim_streams(_ctx(r, keys, models, settings))  # a second pass finds nothing more to drop

    kept = await list_dead_letters(r, keys, None, 200)
    assert [d.error for d in kept.data] == [f"dead {n}" for n in range(30, 130)]
    figures = _metrics((await api.get("/metrics")).text)
    assert figures["inferq_dead_letters"] == 100
    assert figures["inferq_dead_letters_dropped_total"] == 30


# The webhook fan-out's stream.


def _line(q: InferenceRequest) -> ResultLine:
    """A succeeded result line for `q`."""
    return ResultLine(
        custom_id=q.custom_id,
        request_id=q.request_id,
        model=q.model,
        status=RequestStatus.SUCCEEDED,
        output=Output(text="ok", finish_reason="stop"),
        usage=Usage(prompt_tokens=1, completion_tokens=1),
        error=None,
        timings=Timings(queued_ms=1, inference_ms=1),
    )


async def _finish_job(r, keys, store: JobStore, job_id: str, n: int) -> None:
    """A job of `n` requests created and all its results recorded by the real collector."""
    for req in await create_job(store, job_id, n):
        await r.xadd(keys.results_stream, {PAYLOAD_FIELD: enc.encode(ResultEnvelope(job_id, _line(req)))})
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    collector = Collector(r, keys, store)
    while reply := await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}, count=100):
        await collector.handle(reply[0][1])


async def test_webhook_events_stop_at_their_bound_with_a_counter_a_lag_metric_and_one_log(
    r,
    keys,
    api,  # noqa: F811
    caplog,
):
    await ensure_group(r, keys.webhook_events, WEBHOOK_GROUP)
    await r.sadd(keys.webhook_request_subscribers, "wh_someone")  # request events go to the fan-out
    store = JobStore(r, keys, webhook_events_maxlen=20)
    fanout = WebhookFanout(r, keys, WebhookStore(r, keys), events_bound=20, watch_every_s=0)
    caplog.set_level(logging.INFO, logger="inferq.webhooks")
    await fanout.tick()  # the fan-out's first look: nothing behind, nothing refused

    await _finish_job(r, keys, store, "job_a", 25)

    # request events stop at 90% of the bound (18); the job's own event still fits under the bound
    entries = await r.xrange(keys.webhook_events)
    assert [f[b"type"] for _, f in entries] == [b"request.completed"] * 18 + [b"job.completed"]
    figures = _metrics((await api.get("/metrics")).text)
    assert figures["inferq_webhook_events_dropped_total"] == 7
    assert figures["inferq_webhook_events_lag"] == 19

    await fanout.tick()
    await fanout.tick()
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(warnings) == 1 and "19 events unacknowledged" in warnings[0].getMessage()
    assert len(errors) == 1 and "7 so far" in errors[0].getMessage()

    # the fan-out catches up: the episode ends with one more line, and the lag is 0
    await fanout.handle(await read_new(r, keys.webhook_events, WEBHOOK_GROUP, fanout.consumer, 100, None))
    await trim_acknowledged(r, keys.webhook_events)
    await fanout.tick()
    caught_up = [rec.getMessage() for rec in caplog.records if "caught up" in rec.getMessage()]
    assert caught_up == ["webhook fan-out caught up: 0 events unacknowledged; 7 events were refused meanwhile"]
    assert _metrics((await api.get("/metrics")).text)["inferq_webhook_events_lag"] == 0


async def test_the_warning_comes_before_any_event_is_refused(r, keys, caplog):
    await ensure_group(r, keys.webhook_events, WEBHOOK_GROUP)
    await r.sadd(keys.webhook_request_subscribers, "wh_someone")
    fanout = WebhookFanout(r, keys, WebhookStore(r, keys), events_bound=20, watch_every_s=0)
    caplog.set_level(logging.INFO, logger="inferq.webhooks")
    await fanout.tick()

    await _finish_job(r, keys, JobStore(r, keys, webhook_events_maxlen=20), "job_c", 15)  # 16 events: 80%
    await fanout.tick()

    assert await r.xlen(keys.webhook_events) == 16 and await r.get(keys.webhook_events_dropped) is None
    lines = [(rec.levelno, rec.getMessage()) for rec in caplog.records]
    assert len(lines) == 1 and lines[0][0] == logging.WARNING and "16 events unacknowledged, 80%" in lines[0][1]


async def test_webhook_events_under_the_bound_are_all_kept(r, keys):
    await ensure_group(r, keys.webhook_events, WEBHOOK_GROUP)
    await r.sadd(keys.webhook_request_subscribers, "wh_someone")
    await _finish_job(r, keys, JobStore(r, keys, webhook_events_maxlen=1000), "job_b", 30)
    assert await r.xlen(keys.webhook_events) == 31
    assert await r.get(keys.webhook_events_dropped) is None


# Webhook deliveries.


def _delivery(n: int, endpoint: str = "wh_e", created_ms: int | None = None) -> DeliveryRecord:
    now = created_ms or int(time.time() * 1000)
    return DeliveryRecord(
        id=f"whd_{n:04d}",
        endpoint_id=endpoint,
        event_type="job.completed",
        event_id=f"ev{n}",
        payload="{}",
        created_at=now,
        next_attempt_at=now,
    )


async def _fan_out(r, keys, hooks: WebhookStore, records: list[DeliveryRecord]) -> None:
    await ensure_group(r, keys.webhook_events, WEBHOOK_GROUP)
    await hooks.fan_out(keys.webhook_events, WEBHOOK_GROUP, [], records)


async def test_a_delivery_expires_its_ttl_after_it_ends_or_falls_due(r, keys):
    hooks = WebhookStore(r, keys, delivery_ttl_s=3600)
    await _fan_out(r, keys, hooks, [_delivery(1), _delivery(2)])
    assert 3590 <= await r.ttl(keys.webhook_delivery("whd_0001")) <= 3600  # pending, due now

    retry = await hooks.get_delivery("whd_0001")
    assert retry is not None
    retry.next_attempt_at = int(time.time() * 1000) + 1800 * 1000  # next attempt in half an hour
    await hooks.save_delivery(retry)
    assert 5390 <= await r.ttl(keys.webhook_delivery("whd_0001")) <= 5400

    done = await hooks.get_delivery("whd_0002")
    assert done is not None
    done.status, done.next_attempt_at = "succeeded", None
    await hooks.save_delivery(done)
    assert 3590 <= await r.ttl(keys.webhook_delivery("whd_0002")) <= 3600


async def test_an_endpoints_delivery_list_keeps_the_newest_within_the_ttl(r, keys):
    hooks = WebhookStore(r, keys, delivery_ttl_s=3600, deliveries_per_endpoint=5)
    old = int(time.time() * 1000) - 2 * 3600 * 1000
    await r.zadd(keys.webhook_deliveries("wh_e"), {"whd_old": old})  # older than the TTL
    await _fan_out(r, keys, hooks, [_delivery(n) for n in range(8)])

    index = [m.decode() for m in await r.zrange(keys.webhook_deliveries("wh_e"), 0, -1)]
    assert index == [f"whd_{n:04d}" for n in range(3, 8)]
    assert 2 * 3600 - 10 <= await r.ttl(keys.webhook_deliveries("wh_e")) <= 2 * 3600


async def test_expired_deliveries_leave_the_list_and_the_due_set(r, keys, models, settings, caplog):
    hooks = WebhookStore(r, keys, delivery_ttl_s=1)
    await _fan_out(r, keys, hooks, [_delivery(1), _delivery(2)])
    await asyncio.sleep(2.1)  # both records expire (pending, due now, TTL 1 s)

    assert await hooks.read_deliveries("wh_e", None, 10) == []
    assert await r.zcard(keys.webhook_deliveries("wh_e")) == 0
    assert await r.zcard(keys.webhook_due) == 2
    caplog.set_level(logging.WARNING, logger="inferq.dispatcher")
    await trim_streams(_ctx(r, keys, models, settings, hooks))
    assert await r.zcard(keys.webhook_due) == 0
    assert [rec.getMessage() for rec in caplog.records] == [
        "2 webhook deliveries expired before their attempt was made: nothing attempted them for "
        "INFERQ_WEBHOOK_DELIVERY_TTL_S (1s) after they fell due"
    ]


# Batches.


async def test_batch_index_entries_whose_record_expired_are_dropped(r, keys, api):  # noqa: F811
    old = int(time.time()) - 8 * 24 * 3600
    await r.zadd(keys.batches_index("default"), {"batch_expired_by_age": old, "batch_expired_record": time.time()})
    upload = await api.post(
        "/v1/files",
        files={
            "file": (
                "in.jsonl",
                b'{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"alpha","prompt":"hi"}}\n',
            )
        },
        data={"purpose": "batch"},
    )
    assert upload.status_code == 200, upload.text
    created = await api.post(
        "/v1/batches",
        json={"input_file_id": upload.json()["id"], "endpoint": "/v1/completions", "completion_window": "24h"},
    )
    assert created.status_code == 200, created.text
    # creating a batch drops the entry as old as the TTL; listing drops the one whose record is gone
    assert await r.zscore(keys.batches_index("default"), "batch_expired_by_age") is None
    listed = await api.get("/v1/batches")
    assert [b["id"] for b in listed.json()["data"]] == [created.json()["id"]]
    assert [m.decode() for m in await r.zrange(keys.batches_index("default"), 0, -1)] == [created.json()["id"]]
    assert 0 < await r.ttl(keys.batches_index("default")) <= 7 * 24 * 3600


@pytest.mark.parametrize("family", ["files", "batches"])
async def test_tenant_indexes_expire_with_their_newest_record(r, keys, api, family):  # noqa: F811
    upload = await api.post(
        "/v1/files",
        files={
            "file": (
                "in.jsonl",
                b'{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"model":"alpha","prompt":"hi"}}\n',
            )
        },
        data={"purpose": "batch"},
    )
    assert upload.status_code == 200
    if family == "batches":
        await api.post(
            "/v1/batches",
            json={"input_file_id": upload.json()["id"], "endpoint": "/v1/completions", "completion_window": "24h"},
        )
    index = keys.files_index("default") if family == "files" else keys.batches_index("default")
    record_ttl = 7 * 24 * 3600
    assert record_ttl - 5 <= await r.ttl(index) <= record_ttl


# Webhook endpoints.


async def test_a_tenant_past_its_endpoint_quota_gets_a_429_naming_it(r, settings, models):
    from services.ingest.app import create_app

    app = create_app(msgspec.structs.replace(settings, tenant_webhooks=2), models)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            first = await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/a"})
            assert (await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/b"})).status_code == 201
            third = await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/c"})
            assert third.status_code == 429
            error = third.json()["error"]
            assert (error["quota"], error["limit"], error["used"]) == ("INFERQ_TENANT_WEBHOOKS", 2, 2)
            assert len((await api.get("/v1/webhooks")).json()["data"]) == 2

            assert (await api.delete(f"/v1/webhooks/{first.json()['id']}")).status_code == 200
            assert (await api.post("/v1/webhooks", json={"url": "https://93.184.216.34/c"})).status_code == 201
            # a job's own endpoint does not count
            job = await api.post(
                "/v1/jobs",
                json={"requests": [{"model": "alpha", "prompt": "hi"}], "webhook": {"url": "https://93.184.216.34/j"}},
            )
            assert job.status_code == 202, job.text


# The collector's script calls.


async def test_a_backlog_of_results_is_applied_in_bounded_script_calls_of_whole_entries(r, keys):
    """After an outage a read can return many workers' batches: one script call for all of them
    would hold Redis for seconds. Each call applies at most RESULTS_PER_CALL results, whole
    entries only, and every result counts once."""
    store = JobStore(r, keys)
    job_id, n, per_batch = "job_backlog", 12_000, 1000
    reqs = await create_job(store, job_id, n)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    for k in range(0, n, per_batch):  # what twelve publish calls of 1,000 results append
        records = [msgspec.Raw(enc.encode(result_record(job_id, _line(q)))) for q in reqs[k : k + per_batch]]
        await r.xadd(keys.results_stream, {BUNDLE_FIELD: enc.encode(records)})
    sizes: list[int] = []
    record_results = store.record_results

    async def counted(group, ack_ids, records):
        sizes.append(len(records))
        return await record_results(group, ack_ids, records)

    store.record_results = counted  # type: ignore[method-assign]
    reply = await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}, count=1000)
    assert len(reply[0][1]) == 12  # one read took the whole backlog
    await Collector(r, keys, store).handle(reply[0][1])
    assert sizes == [RESULTS_PER_CALL, RESULTS_PER_CALL, n - 2 * RESULTS_PER_CALL]
    job = await r.hgetall(keys.job(job_id))
    assert job[b"status"] == b"completed" and int(job[b"done"]) == n
    assert (await r.xpending(keys.results_stream, COLLECTOR_GROUP))["pending"] == 0
