"""Requeueing a dead letter of a completed job, through the real services: the events stream, the
webhooks and the job's Server-Sent Events see exactly one more request event for the requeued
request and one job.completed per completion, each under an id of its own."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from shared.redis.keys import Keys
from tests.e2e.test_events import sse_events
from tests.support.webhook_receiver import Receiver

MODELS = """
[models.m]
engine = "dummy"
max_inflight = 8
[models.m.options]
latency_ms = 2
poison_text = "POISON"
[models.m.retry]
max_attempts = 2
backoff_s = 0.01
"""
ENV = {"INFERQ_WEBHOOK_ALLOW_PRIVATE": "1", "INFERQ_WEBHOOK_ALLOW_HTTP": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    path = tmp_path_factory.mktemp("requeue") / "models.toml"
    path.write_text(MODELS)
    with LocalStack(path, workdir=path.parent / "stack", env=ENV) as running:
        yield running


def _until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _events(rdb: redis.Redis, job_id: str) -> list[dict]:
    """The job's documents on the public events stream, oldest first."""
    entries = rdb.xrange(Keys("inferq").events_stream)
    return [json.loads(f[b"event"]) for _, f in entries if f[b"job"].decode() == job_id]


def test_requeue_of_a_completed_jobs_dead_letter_adds_one_request_event_and_one_job_completion(stack):
    rdb = redis.Redis.from_url(stack.redis_url)
    with Receiver() as receiver, httpx.Client(base_url=stack.base_url, timeout=30) as api:
        resp = api.post(
            "/v1/webhooks", json={"url": receiver.url("/in"), "events": ["job.completed", "request.completed"]}
        )
        assert resp.status_code == 201
        body = {"requests": [{"custom_id": c, "model": "m", "prompt": c} for c in ("ok-0", "ok-1", "POISON-2")]}
        job_id = api.post("/v1/jobs", json=body).json()["id"]
        _until(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "completed")
        [dead] = _until(lambda: api.get("/v1/dead-letters").json()["data"])
        requeued = dead["request_id"]

        resp = api.post(f"/v1/dead-letters/{dead['id']}/requeue")
        assert resp.status_code == 200 and resp.json()["status"] == "in_progress"
        again = api.post(f"/v1/dead-letters/{dead['id']}/requeue")  # while its requeue is pending
        assert again.status_code == 404
        # the request fails again (it is poison) and is dead-lettered again; the job completes again
        _until(
            lambda: (
                len(api.get("/v1/dead-letters").json()["data"]) == 1
                and api.get("/v1/dead-letters").json()["data"][0]["id"] != dead["id"]
            )
        )
        job = _until(lambda: (j := api.get(f"/v1/jobs/{job_id}").json())["status"] == "completed" and j)
        assert job["request_counts"] == {
            "total": 3,
            "queued": 0,
            "running": 0,
            "succeeded": 2,
            "failed": 1,
            "cancelled": 0,
            "expired": 0,
        }
        time.sleep(1.0)  # anything extra would have been published and delivered by now

        events = _events(rdb, job_id)
        requests = Counter(e["data"]["request_id"] for e in events if e["type"] == "com.inferq.request.completed")
        assert requests == Counter({requeued: 2, **{r: 1 for r in requests if r != requeued}}) and len(requests) == 3
        completions = [e for e in events if e["type"] == "com.inferq.job.completed"]
        assert len(completions) == 2 and len(events) == 6
        assert len({e["id"] for e in events}) == 6  # every event has an id of its own
        first, second = (int(e["id"].rsplit(".", 1)[1]) for e in completions)
        assert second > first and [e["id"] for e in completions] == [
            f"{job_id}.completed.{first}",
            f"{job_id}.completed.{second}",
        ]
        # after the requeue, exactly one more event for the request, then the job's completion
        after = events[events.index(completions[0]) + 1 :]
        assert [(e["type"], e["data"].get("request_id")) for e in after] == [
            ("com.inferq.request.completed", requeued),
            ("com.inferq.job.completed", None),
        ]

        # webhooks: one delivery per event, each with a webhook-id of its own
        calls = _until(lambda: len(receiver.calls_to("/in")) >= 6 and receiver.calls_to("/in"))
        time.sleep(0.5)
        calls = receiver.calls_to("/in")
        assert len(calls) == 6 and len({c.headers["webhook-id"] for c in calls}) == 6
        by_type = Counter(
            (c.json["type"], c.json["data"].get("request_id") if c.json["type"] == "request.completed" else None)
            for c in calls
        )
        assert by_type[("job.completed", None)] == 2 and by_type[("request.completed", requeued)] == 2

        # the job's Server-Sent Events end with the same document as the stream's last job event
        *lines, (end_id, end_type, end_doc) = sse_events(api, f"/v1/jobs/{job_id}/events")
        assert (end_id, end_type) == ("end", "job.completed") and end_doc["id"] == completions[-1]["id"]
        assert end_doc == {**completions[-1], "time": end_doc["time"]}
        assert len(lines) == 3  # the results as they stand: the requeued request's failed line was replaced
