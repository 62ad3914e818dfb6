"""Spend limits with real processes: a tenant's daily limit reached in the middle of a job."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from shared.redis.keys import Keys
from tests.e2e.test_fallback import _wait_end
from tests.e2e.test_pipeline import _all_results

pytestmark = pytest.mark.e2e
keys = Keys("inferq")
KEY_A = "team-a-key-0123456789abcdef"
KEY_B = "team-b-key-0123456789abcdef"

MODELS = """
[models.solo]
engine = "dummy"
max_inflight = 1
price_per_hour = 3600.0  # one dollar per busy second
[models.solo.options]
latency_ms = 100
[models.solo.scaling]
backend = "local"
max_replicas = 2
target_per_replica = 20
idle_cooldown_s = 30

[models.paid]
engine = "dummy"
price_per_hour = 3600.0
fallback = ["cheap"]
[models.paid.options]
latency_ms = 20

[models.cheap]
engine = "dummy"
[models.cheap.options]
latency_ms = 2

[tenants.team-a.budget]
daily_usd = 1.0
models = ["solo", "paid"]
"""


def _post(client: httpx.Client, model: str, n: int) -> httpx.Response:
    return client.post(
        "/v1/jobs", json={"requests": [{"custom_id": f"{model}-{i}", "model": model, "prompt": "p"} for i in range(n)]}
    )


def test_a_tenants_daily_limit_reached_mid_job_ends_or_moves_the_rest(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    env = {"INFERQ_AUTH": "on", "INFERQ_API_KEYS": f"team-a:{KEY_A},team-b:{KEY_B}"}
    with (
        LocalStack(path, workdir=tmp_path / "stack", env=env) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {KEY_A}"}) as a,
        httpx.Client(base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {KEY_B}"}) as b,
    ):
        rdb = redis.Redis.from_url(stack.redis_url)
        resp = _post(a, "solo", 60)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        job = _wait_end(a, job_id, timeout=90)
        reached_at = time.time()
        lines = _all_results(a, job_id)
        assert len(lines) == 60 and len({line["custom_id"] for line in lines}) == 60
        ran = [line for line in lines if line["status"] == "succeeded"]
        refused = [line for line in lines if line["status"] == "failed"]
        assert len(ran) + len(refused) == 60
        assert all(line["error"]["code"] == "budget_exceeded" for line in refused)
        assert all(line["served_by"] is None and line["usage"]["cost"] == 0 for line in refused)
        # $0.10 a request: the limit is reached after 10; what was running then (and in the second
        # before the next judgement) finishes, and nothing more starts
        assert 10 <= len(ran) <= 30, len(ran)
        assert len(refused) >= 30
        total = sum(line["usage"]["cost"] for line in lines)
        assert job["usage"]["cost"] == pytest.approx(total, abs=1e-6)
        assert round(job["usage"]["cost"], 2) == round(total, 2)
        assert job["usage"]["by_model"]["solo"]["cost"] == job["usage"]["cost"] >= 1.0

        # a new job for the model is refused, naming the limit and when it resets
        refusal = _post(a, "solo", 3)
        assert refusal.status_code == 429, refusal.text
        err = refusal.json()["error"]
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
        assert err["type"] == "budget_exceeded" and err["budget"] == "tenant team-a on solo,paid daily"
        assert err["limit_usd"] == 1.0 and err["spent_usd"] >= 1.0 and err["resets_at"] == int(midnight.timestamp())
        assert int(refusal.headers["Retry-After"]) > 0

        # a model with a fallback chain moves the tenant's work to the next model instead
        moved = _post(a, "paid", 20)
        assert moved.status_code == 202, moved.text
        assert _wait_end(a, moved.json()["id"])["request_counts"]["succeeded"] == 20
        served = {(line["served_by"], line["fallback_reason"]) for line in _all_results(a, moved.json()["id"])}
        assert served == {("cheap", "budget_exceeded")}

        # another tenant is not limited
        other = _post(b, "solo", 5)
        assert other.status_code == 202, other.text
        assert _wait_end(b, other.json()["id"])["request_counts"]["succeeded"] == 5

        # the autoscaler started nothing for the refused work: every scale-up came before the limit
        ups = [
            e
            for e in (json.loads(f[b"event"]) for _, f in rdb.xrange(keys.scaling_events))
            if e["model"] == "solo" and e["to"] > e["from"]
        ]
        first_job_ups = [e for e in ups if e["at"] < reached_at]
        assert first_job_ups, "the first job never scaled solo up"
        assert all(e["at"] < reached_at for e in ups if e["backlog"] > 5), ups

        limits = next(m for m in a.get("/v1/models").json()["data"] if m["id"] == "solo")["spend"]["limits"]
        assert [(x["name"], x["reached"]) for x in limits] == [("tenant team-a on solo,paid daily", True)]
        assert next(m for m in b.get("/v1/models").json()["data"] if m["id"] == "solo")["spend"]["limits"] == []
