"""Deadlines at the API: what a job may set, the quote that writes nothing, OpenAI batches."""

from __future__ import annotations

import json
import time

import pytest
import redis.asyncio as aioredis

from shared.planning import plan as plans
from shared.planning.plan import ModelPlan, Speed
from shared.planning.schedule import QueuedWork


def _body(n: int = 3, model: str = "beta", **extra) -> dict:
    return {"requests": [{"model": model, "prompt": f"p {i}", "max_tokens": 10} for i in range(n)], **extra}


async def _writes(r: aioredis.Redis) -> tuple[int, int]:
    return await r.dbsize(), int((await r.info())["rdb_changes_since_last_save"])


async def _publish(r, keys, model: str = "beta", **plan) -> None:
    speed = Speed(busy_base_s=0.01, calibrated_from=1000, mean_completion_tokens=10.0, completion_ratio=0.5)
    fields = dict(model=model, at_ms=int(time.time() * 1000), replicas=1, desired=1, max_replicas=1, boot_s=0.0)
    await plans.publish(r, keys, [ModelPlan(**{**fields, "speed": speed, **plan})])


async def test_a_deadline_must_be_ahead_and_within_the_completion_window(api):
    now = int(time.time())
    for body, field, words in [
        (_body(deadline=now - 10), "deadline", "has already passed"),
        (_body(deadline=now + 7200, completion_window="1h"), "deadline", "after the end of the completion window"),
        (_body(deadline="2030-01-01T09:00:00"), "deadline", "timezone"),
        (_body(on_deadline_risk="spill"), "on_deadline_risk", "needs a `deadline`"),
        (_body(deadline=now + 60, on_deadline_risk="sometimes"), "on_deadline_risk", "invalid enum value"),
    ]:
        resp = await api.post("/v1/jobs", json=body)
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["field"] == field and words.lower() in error["message"].lower(), error


async def test_an_accepted_deadline_is_shown_in_both_forms(api):
    at = int(time.time()) + 3600
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at))
    for deadline in (at, iso):
        resp = await api.post("/v1/jobs", json=_body(deadline=deadline, on_deadline_risk="spill"))
        assert resp.status_code == 202, resp.text
        job = (await api.get(f"/v1/jobs/{resp.json()['id']}")).json()
        assert (job["deadline"], job["on_deadline_risk"]) == (at, "spill")
        assert job["estimated_completion_at"] is None  # no planner runs here
    plain = (await api.post("/v1/jobs", json=_body())).json()
    assert plain["deadline"] is None and plain["on_deadline_risk"] is None


async def test_a_quote_writes_nothing_and_counts_the_queue_ahead(api, r, keys):
    ahead = [QueuedWork("job_other", "batch", 0, 500)]
    await _publish(r, keys, work=ahead)
    before = await _writes(r)
    resp = await api.post("/v1/jobs/quote", json=_body(100))
    assert await _writes(r) == before
    assert resp.status_code == 200, resp.text
    q = resp.json()
    (part,) = q["models"]
    assert (part["requests"], part["completion_tokens"], part["completion_tokens_from"]) == (100, 500, "learned")
    assert part["busy_seconds"] == 1.0 and part["ahead_requests"] == 100  # an equal share with the other job
    assert q["current"]["finish_at"] - q["quoted_at"] == pytest.approx(2.0, abs=0.05)
    assert q["feasible"] is None and q["deadline"] is None


async def test_refuse_is_a_409_with_the_quote_and_best_effort_is_accepted(api, r, keys):
    await _publish(r, keys)
    body = _body(1000, deadline=int(time.time()) + 3)  # 1000 x 10 ms on one replica: 10 s
    before = await _writes(r)
    resp = await api.post("/v1/jobs", json={**body, "on_deadline_risk": "refuse"})
    assert resp.status_code == 409 and await _writes(r) == before
    error = resp.json()["error"]
    assert error["type"] == "deadline_infeasible" and error["quote"]["feasible"] is False
    assert error["quote"]["models"][0]["replicas_needed"] >= 4
    assert any("max_replicas" in s for s in error["quote"]["suggestions"])
    resp = await api.post("/v1/jobs", json=body)
    assert resp.status_code == 202
    job = await r.hgetall(keys.job(resp.json()["id"]))
    assert int(job[b"q_end_ms"]) > int(job[b"deadline_ms"])  # its quote is kept, for the quote errors


async def test_a_quote_of_an_uploaded_batch_file_and_a_batch_with_a_deadline(api, r, keys):
    await _publish(r, keys)
    lines = [
        json.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "beta", "prompt": "hi", "max_tokens": 4},
            }
        )
        for i in range(7)
    ]
    upload = await api.post(
        "/v1/files", files={"file": ("in.jsonl", "\n".join(lines).encode())}, data={"purpose": "batch"}
    )
    file_id = upload.json()["id"]
    q = (await api.post("/v1/jobs/quote", json={"input_file_id": file_id})).json()
    assert q["requests"] == 7 and q["models"][0]["model"] == "beta"
    both = await api.post("/v1/jobs/quote", json={"input_file_id": file_id, **_body()})
    assert both.status_code == 422 and both.json()["error"]["field"] == "input_file_id"
    missing = await api.post("/v1/jobs/quote", json={"input_file_id": "file-nope"})
    assert missing.status_code == 404
    at = int(time.time()) + 3600
    batch = await api.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/completions",
            "completion_window": "24h",
            "metadata": {"deadline": str(at)},
        },
    )
    assert batch.status_code == 200, batch.text
    job = (await api.get(f"/v1/jobs/{batch.json()['id'].replace('batch_', 'job_')}")).json()
    assert job["deadline"] == at and job["on_deadline_risk"] == "best_effort"
