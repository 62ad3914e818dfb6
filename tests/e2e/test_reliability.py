"""Nothing accepted is lost, nothing is counted twice: crashes, Redis restarts, poison requests,
cancel, expiry and shutdown, with real processes and a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from inferq.localstack import LocalStack, RedisServer
from shared.redis.keys import Keys
from tests.conftest import ROOT
from tests.e2e.test_pipeline import _all_results

pytestmark = pytest.mark.e2e
keys = Keys("inferq")

MODELS = """
[models.m]
engine = "dummy"
max_inflight = 32
reclaim_idle_s = 1.0
[models.m.options]
latency_ms = {latency}
poison_text = "POISON"
[models.m.retry]
max_attempts = 3
backoff_s = 0.05
"""


def _stack(tmp_path: Path, latency: float = 5, inflight: int = 32, **kw) -> LocalStack:
    path = tmp_path / "models.toml"
    path.write_text(MODELS.format(latency=latency).replace("max_inflight = 32", f"max_inflight = {inflight}"))
    env = {"INFERQ_RECLAIM_IDLE_S": "1", **kw.pop("env", {})}
    return LocalStack(path, workdir=tmp_path / "stack", env=env, **kw)


def _submit(client: httpx.Client, n: int, tag: str, **extra) -> tuple[str, list[str]]:
    ids = [f"{tag}-{i}" for i in range(n)]
    resp = client.post(
        "/v1/jobs", json={"requests": [{"custom_id": c, "model": "m", "prompt": f"p {c}"} for c in ids], **extra}
    )
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], ids


def _job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()


def _done(job: dict) -> int:
    c = job["request_counts"]
    return c["succeeded"] + c["failed"] + c["cancelled"] + c["expired"]


def _wait(client, job_id, stack, statuses=("completed",), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _job(client, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} stuck: {job['status']} {job['request_counts']}"
        time.sleep(0.1)


def _wait_done(client, job_id, at_least: int, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while _done(_job(client, job_id)) < at_least:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _assert_exact(client, job_id, ids, succeeded=None) -> dict:
    job = _job(client, job_id)
    c = job["request_counts"]
    assert c["total"] == len(ids) and c["queued"] == 0 and c["running"] == 0
    assert c["succeeded"] + c["failed"] + c["cancelled"] + c["expired"] == c["total"]
    if succeeded is not None:
        assert c["succeeded"] == succeeded
    lines = _all_results(client, job_id)
    assert sorted(l["custom_id"] for l in lines) == sorted(ids), "not exactly one result line per request"
    for status in ("succeeded", "failed", "cancelled", "expired"):
        assert c[status] == sum(l["status"] == status for l in lines)
    return job


def _kill9(stack: LocalStack, name: str) -> None:
    proc = stack.procs.pop(name)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _pending_of(rdb: redis.Redis, consumer_part: str) -> int:
    """Requests a worker (found by the pid in its consumer name) has read and not acknowledged."""
    try:
        return sum(
            c["pending"]
            for s in keys.model_streams("m")
            if rdb.exists(s)
            for c in rdb.xinfo_consumers(s, "workers")
            if consumer_part in c["name"].decode()
        )
    except redis.ResponseError:  # the group is not created yet
        return 0


def _consumer_pending(rdb: redis.Redis, stream: str, group: str, consumer_part: str) -> int | None:
    """Entries the consumer whose name holds `consumer_part` has read and not acknowledged
    (None while it has not joined the group)."""
    try:
        found = [c["pending"] for c in rdb.xinfo_consumers(stream, group) if consumer_part in c["name"].decode()]
    except redis.ResponseError:
        return None
    return sum(found) if found else None


def _kill_holding(stack: LocalStack, rdb: redis.Redis, name: str, stream: str, group: str) -> int:
    """kill -9 `name` as soon as it holds unacknowledged entries of `stream` (or after 5 s of
    trying); returns how many it held when it died."""
    part = f"-{stack.procs[name].pid}-"
    deadline = time.monotonic() + 30
    while _consumer_pending(rdb, stream, group, part) is None:
        assert time.monotonic() < deadline, f"{name} never joined {group}"
    deadline = time.monotonic() + 5
    while not _consumer_pending(rdb, stream, group, part) and time.monotonic() < deadline:
        pass
    _kill9(stack, name)
    return _consumer_pending(rdb, stream, group, part) or 0


def test_dispatcher_killed_while_routing_and_while_collecting(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        rdb = redis.Redis.from_url(stack.redis_url)
        jobs = [_submit(client, 8000, f"j{k}") for k in range(3)]
        # while it admits and routes the 24,000 requests
        held_routing = _kill_holding(stack, rdb, "dispatcher-0", keys.ingest_stream, "router")
        stack.spawn("dispatcher-1", "services.dispatcher")
        _wait_done(client, jobs[0][0], 2000)
        # while it collects results
        held_collecting = _kill_holding(stack, rdb, "dispatcher-1", keys.results_stream, "collector")
        stack.spawn("dispatcher-2", "services.dispatcher")
        for job_id, ids in jobs:
            _wait(client, job_id, stack)
            _assert_exact(client, job_id, ids, succeeded=len(ids))
        assert held_routing + held_collecting > 0, "neither kill left an entry unacknowledged: they proved nothing"
        logs = stack.log_tail("dispatcher-1", 400) + stack.log_tail("dispatcher-2", 400)
        assert "reclaimed" in logs, "the unacknowledged entries were not taken over"
        assert set(stack.stop().values()) == {0}


def test_worker_killed_mid_job(tmp_path):
    with (
        _stack(tmp_path, latency=20, workers_per_model=2) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        rdb = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 3000, "w")
        victim = f"-{stack.procs['worker-m-0'].pid}-"
        deadline = time.monotonic() + 30
        while (held := _pending_of(rdb, victim)) < 16:  # it is mid-generation on a share of the job
            assert time.monotonic() < deadline, "worker-m-0 never took work"
            time.sleep(0.01)
        _kill9(stack, "worker-m-0")
        _wait(client, job_id, stack)
        _assert_exact(client, job_id, ids, succeeded=len(ids))
        assert "reclaimed" in stack.log_tail("worker-m-1", 400), f"the {held} requests it held were never taken over"
        assert set(stack.stop().values()) == {0}


def test_redis_restart_mid_job(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        jobs = [_submit(client, 5000, f"r{k}") for k in range(2)]
        _wait_done(client, jobs[0][0], 1500)
        stack.redis.stop()  # SIGTERM: Redis writes its AOF and exits
        resp = client.post("/v1/jobs", json={"requests": [{"model": "m", "prompt": "while down"}]})
        assert resp.status_code == 503 and "Redis" in resp.json()["error"]["message"] and resp.headers["retry-after"]
        time.sleep(1.0)
        stack.redis.start()  # same port, same data directory: it reloads the AOF
        for job_id, ids in jobs:
            _wait(client, job_id, stack)
            _assert_exact(client, job_id, ids, succeeded=len(ids))
        assert set(stack.stop().values()) == {0}


def test_poison_request_is_dead_lettered_and_its_job_completes(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        ids = [f"q-{i}" for i in range(200)]
        body = {
            "requests": [
                {"custom_id": c, "model": "m", "prompt": "a POISON pill" if c == "q-77" else f"fine {c}"} for c in ids
            ]
        }
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        job = _wait(client, job_id, stack)
        _assert_exact(client, job_id, ids, succeeded=199)
        assert job["request_counts"]["failed"] == 1
        (bad,) = [l for l in _all_results(client, job_id) if l["status"] == "failed"]
        assert bad["custom_id"] == "q-77" and bad["error"]["code"] == "max_attempts_exceeded"
        dead = client.get("/v1/dead-letters").json()["data"]
        assert len(dead) == 1 and dead[0]["custom_id"] == "q-77" and dead[0]["attempts"] == 3 and dead[0]["requeueable"]

        # an operator requeues it: the job reopens, the request runs again (and fails again here)
        resp = client.post(f"/v1/dead-letters/{dead[0]['id']}/requeue")
        assert resp.status_code == 200 and resp.json()["status"] == "in_progress"
        assert client.post(f"/v1/dead-letters/{dead[0]['id']}/requeue").status_code == 404
        _wait(client, job_id, stack)
        _assert_exact(client, job_id, ids, succeeded=199)
        assert len(client.get("/v1/dead-letters").json()["data"]) == 1
        assert set(stack.stop().values()) == {0}


def test_cancel_mid_job_stops_routing_and_starting(tmp_path):
    with _stack(tmp_path, latency=20, inflight=8) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        rdb = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 4000, "c")
        _wait_done(client, job_id, 200)
        resp = client.post(f"/v1/jobs/{job_id}/cancel")
        assert resp.status_code == 200 and resp.json()["status"] == "cancelling"
        snapshot = _job(client, job_id)["request_counts"]
        routed_at_cancel = rdb.xinfo_stream(keys.model_stream("m", "batch"))["entries-added"]
        job = _wait(client, job_id, stack, statuses=("cancelled",))
        c = job["request_counts"]
        # nothing started after the cancel was acknowledged, beyond what was in flight then
        assert c["succeeded"] + c["failed"] <= snapshot["succeeded"] + snapshot["failed"] + snapshot["running"]
        assert c["cancelled"] >= 4000 - 200 - 2 * 8 - 256  # at most what was in flight and routed-unread
        assert rdb.xinfo_stream(keys.model_stream("m", "batch"))["entries-added"] == routed_at_cancel
        assert job["cancelled_at"] is not None
        _assert_exact(client, job_id, ids)
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200  # idempotent
        done_id, _ = _submit(client, 5, "d")
        _wait(client, done_id, stack)
        resp = client.post(f"/v1/jobs/{done_id}/cancel")
        assert resp.status_code == 409 and "already completed" in resp.json()["error"]["message"]
        assert client.post("/v1/jobs/job_0000000000000000000000000a/cancel").status_code == 404
        assert set(stack.stop().values()) == {0}


def test_expiry_ends_unfinished_requests_and_keeps_results(tmp_path):
    with _stack(tmp_path, latency=20, inflight=8) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        rdb = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 4000, "e", completion_window="3s")
        job = _wait(client, job_id, stack, statuses=("expired",), timeout=30)
        routed_at_expiry = rdb.xinfo_stream(keys.model_stream("m", "batch"))["entries-added"]
        time.sleep(0.5)
        assert rdb.xinfo_stream(keys.model_stream("m", "batch"))["entries-added"] == routed_at_expiry
        assert _job(client, job_id)["request_counts"] == job["request_counts"]  # nothing started after it
        c = job["request_counts"]
        assert c["expired"] > 0 and c["succeeded"] > 0 and job["expired_at"] is not None
        assert job["expires_at"] - job["created_at"] == 3
        _assert_exact(client, job_id, ids)
        assert set(stack.stop().values()) == {0}


@pytest.mark.parametrize(
    "latency, grace", [(200, 30.0), (3000, 0.3)], ids=["finishes-in-flight", "hands-back-after-grace"]
)
def test_sigterm_to_a_busy_worker(tmp_path, latency, grace):
    stack = _stack(tmp_path, latency=latency, inflight=16, env={"INFERQ_SHUTDOWN_GRACE_S": str(grace)})
    with stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        rdb = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 100, "t")
        deadline = time.monotonic() + 20
        while _job(client, job_id)["request_counts"]["running"] < 16:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        code = stack.stop_processes(["worker-m-0"], timeout=grace + 10)["worker-m-0"]
        assert code == 0 and time.monotonic() - t0 < grace + 2
        pending = sum(rdb.xpending(s, "workers")["pending"] for s in keys.model_streams("m"))
        assert pending == 0, "requests held by the stopped worker are still pending"
        stack.spawn("worker-m-1", "services.inference", "--model", "m")
        _wait(client, job_id, stack)
        _assert_exact(client, job_id, ids, succeeded=100)
        assert set(stack.stop().values()) == {0}


def test_services_refuse_a_redis_that_can_evict(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        redis.Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        models = tmp_path / "models.toml"
        models.write_text(MODELS.format(latency=0))
        env = {**os.environ, "INFERQ_REDIS_URL": server.url, "INFERQ_MODELS": str(models)}
        for args in (["services.ingest"], ["services.dispatcher"], ["services.inference", "--model", "m"]):
            proc = subprocess.run(
                [sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 2, (args, proc.stderr)
            assert "maxmemory-policy 'allkeys-lru'" in proc.stderr and "noeviction" in proc.stderr
    finally:
        server.stop()
