"""Consumers that stall or die mid-job: their unacknowledged entries are reclaimed by a live peer,
and when a stalled one wakes up, its late work has no effect. Real processes, real redis-server."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from inferq.localstack import LocalStack
from tests.e2e.test_pipeline import _all_results, _wait_completed

pytestmark = pytest.mark.e2e

RECOVERY_MODELS = """
[models.alpha]
engine = "dummy"
max_inflight = 8
reclaim_idle_s = 1.0
[models.alpha.options]
latency_ms = 30

[models.beta]
engine = "dummy"
max_inflight = 64
reclaim_idle_s = 1.0
"""


def _submit(client: httpx.Client, n: int, tag: str) -> tuple[str, set[str]]:
    ids = {f"{tag}-{i}" for i in range(n)}
    body = {
        "requests": [
            {"custom_id": c, "model": "alpha" if i % 2 else "beta", "prompt": f"p {c}"}
            for i, c in enumerate(sorted(ids))
        ]
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], ids


def _assert_exact(client: httpx.Client, jobs: dict[str, set[str]]) -> None:
    for job_id, ids in jobs.items():
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed"
        c = job["request_counts"]
        assert (c["total"], c["succeeded"], c["failed"], c["queued"], c["running"]) == (len(ids), len(ids), 0, 0, 0)
        lines = _all_results(client, job_id)
        assert sorted(l["custom_id"] for l in lines) == sorted(ids)


def _logs(stack: LocalStack, prefix: str) -> str:
    return "".join(stack.log_path(n).read_text() for n in list(stack.procs) if n.startswith(prefix))


def test_stalled_dispatcher_is_covered_and_its_late_work_is_void(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(RECOVERY_MODELS)
    env = {"INFERQ_RECLAIM_IDLE_S": "1"}
    with LocalStack(models, workdir=tmp_path / "stack", dispatchers=2, env=env) as stack:
        frozen = stack.procs["dispatcher-0"]
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            frozen.send_signal(signal.SIGSTOP)  # blocked in XREADGROUP: Redis still hands it entries
            try:
                jobs = {}
                for k in range(3):
                    job_id, ids = _submit(client, 600, f"j{k}")
                    jobs[job_id] = ids
                    time.sleep(0.3)
                _wait_completed(client, list(jobs), stack, timeout=60)
                _assert_exact(client, jobs)
            finally:
                frozen.send_signal(signal.SIGCONT)
            time.sleep(2.0)  # the woken dispatcher finishes the batches it read before it stalled
            _assert_exact(client, jobs)
        live_log = stack.log_path("dispatcher-1").read_text()
        assert "reclaimed" in live_log, "the live dispatcher never had to take over: the test proved nothing"
        codes = stack.stop()
    assert set(codes.values()) == {0}, codes


def test_stalled_and_killed_workers_lose_nothing_and_count_once(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(RECOVERY_MODELS)
    with LocalStack(models, workdir=tmp_path / "stack", workers_per_model=3) as stack:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            job_id, ids = _submit(client, 1000, "w")
            deadline = time.monotonic() + 30
            while client.get(f"/v1/jobs/{job_id}").json()["request_counts"]["succeeded"] < 100:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stalled, killed = stack.procs["worker-alpha-0"], stack.procs["worker-alpha-1"]
            stalled.send_signal(signal.SIGSTOP)  # mid-generation, holding up to 8 requests
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait()
            stack.procs.pop("worker-alpha-1")
            try:
                _wait_completed(client, [job_id], stack, timeout=60)
                _assert_exact(client, {job_id: ids})
            finally:
                stalled.send_signal(signal.SIGCONT)
            time.sleep(1.5)  # the woken worker publishes results for requests another worker already finished
            _assert_exact(client, {job_id: ids})
        assert "reclaimed" in _logs(stack, "worker-alpha")
        codes = stack.stop()
    assert set(codes.values()) == {0}, codes
