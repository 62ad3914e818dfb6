"""Bundled batch-lane entries (flow.batch_bundle): several requests of one job per model-stream
entry, acknowledged once for all. A worker killed with half of an entry done loses nothing and
doubles nothing; an entry delivered again is split into single requests. Real processes, real
redis-server, the default heartbeat TTL (10 s)."""

from __future__ import annotations

import collections
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from shared.redis.keys import WORKER_GROUP, Keys, lane_entry_payloads
from shared.wire.messages import request_decoder
from tests.e2e.test_pipeline import _all_results
from tests.e2e.test_takeover import _wait_until

pytestmark = pytest.mark.e2e
keys = Keys("inferq")
STREAM = keys.model_stream("slow", "batch")

MODELS = """
[models.slow]
engine = "dummy"
max_inflight = 8
[models.slow.flow]
batch_bundle = 4
[models.slow.options]
ms_per_token = 250
runs_log = "{runs}"
"""
SLOW_WORDS = 40  # 10 s a run: still running when the worker is killed
FAST_WORDS = 1  # 0.25 s


def _stack(tmp_path: Path, flow: str = "", **kw) -> LocalStack:
    path = tmp_path / "models.toml"
    path.write_text(
        MODELS.format(runs=tmp_path / "runs.log").replace("batch_bundle = 4\n", "batch_bundle = 4\n" + flow)
    )
    return LocalStack(path, workdir=tmp_path / "stack", **kw)


def _runs(tmp_path: Path) -> list[tuple[int, str]]:
    """(pid, request id) of every run the dummy engine started, in every worker process."""
    path = tmp_path / "runs.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(pid), rid) for pid, rid in (line.split() for line in lines)]


def _submit(client: httpx.Client, words: list[int]) -> tuple[str, list[str]]:
    ids = [f"r{i}" for i in range(len(words))]
    body = {
        "requests": [
            {"custom_id": c, "model": "slow", "prompt": " ".join(["w"] * n), "max_tokens": n}
            for c, n in zip(ids, words)
        ]
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], ids


def _bundles(rc: redis.Redis) -> list[list[str]]:
    """The custom ids each entry of the batch lane carries, in stream order."""
    return [
        [request_decoder.decode(p).custom_id for p in lane_entry_payloads(fields)] for _, fields in rc.xrange(STREAM)
    ]


def test_a_jobs_batch_requests_travel_four_to_an_entry_and_each_is_answered_once(tmp_path):
    with _stack(tmp_path, workers_per_model=0) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, [FAST_WORDS] * 10)
        assert _bundles(rc) == [ids[0:4], ids[4:8], ids[8:10]]  # in order, one job's, 4 at most
        stack.spawn("worker-slow-0", "services.inference", "--model", "slow")
        _wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "completed", 60, "never completed")
        lines = _all_results(client, job_id)
        assert sorted(line["custom_id"] for line in lines) == sorted(ids)  # each exactly once
        assert {line["status"] for line in lines} == {"succeeded"}
        assert rc.xinfo_groups(STREAM)[0]["pending"] == 0  # every entry acknowledged


def test_what_waits_for_room_is_fed_four_to_an_entry_too(tmp_path):
    flow = "high_watermark = 2\nlow_watermark = 1\n"  # entries: two fit at creation, the rest wait
    with (
        _stack(tmp_path, flow=flow, workers_per_model=0) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        rc = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, [FAST_WORDS] * 20)
        assert _bundles(rc) == [ids[0:4], ids[4:8]]
        stack.spawn("worker-slow-0", "services.inference", "--model", "slow")
        _wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "completed", 60, "never completed")
        assert sorted(line["custom_id"] for line in _all_results(client, job_id)) == sorted(ids)
        assert rc.xinfo_stream(STREAM)["entries-added"] == 5  # the router's feed bundled the other 12 too


def test_a_worker_killed_with_half_of_each_entry_done_loses_and_doubles_nothing(tmp_path):
    with _stack(tmp_path, workers_per_model=1) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        words = [FAST_WORDS, SLOW_WORDS] * 4  # two entries, each two fast and two slow requests
        job_id, ids = _submit(client, words)
        fast = {c for c, n in zip(ids, words) if n == FAST_WORDS}
        victim = stack.procs["worker-slow-0"]

        def fast_done() -> bool:  # each fast request has run (and finished) in the victim
            ran = {rid for pid, rid in _runs(tmp_path) if pid == victim.pid}
            return len(ran) == 8

        _wait_until(fast_done, 30, "the worker never started all eight requests")
        time.sleep(1.0)  # the fast ones (0.25 s) finish; the slow ones (10 s) still run
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["request_counts"]["succeeded"] == 0  # finished, but held with their entries
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        stack.procs.pop("worker-slow-0")
        held = rc.xpending(STREAM, WORKER_GROUP)["pending"]
        assert held == 2, "both entries should be pending for the killed worker"

        stack.spawn("worker-slow-1", "services.inference", "--model", "slow")
        _wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "completed", 90, "never completed")
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["request_counts"]["succeeded"] == 8 and job["request_counts"]["failed"] == 0
        lines = _all_results(client, job_id)
        assert sorted(line["custom_id"] for line in lines) == sorted(ids)  # none lost, none twice
        runs = collections.Counter(rid for _, rid in _runs(tmp_path))
        # every request ran in the killed worker and again after it, the fast ones included
        assert len(runs) == 8 and set(runs.values()) == {2}
        survivor_log = stack.log_path("worker-slow-1").read_text()
        assert "split 2 bundles delivered again into single requests" in survivor_log
        assert rc.xinfo_groups(STREAM)[0]["pending"] == 0
        assert fast  # the job mixed fast and slow requests in each entry
