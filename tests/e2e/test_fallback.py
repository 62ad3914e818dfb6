"""Fallback chains with real processes: a model whose workers never start, a healthy model, queue
wait limits, and a chain with a cycle."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inferq.localstack import LocalStack
from tests.conftest import ROOT
from tests.e2e.test_pipeline import _all_results

pytestmark = pytest.mark.e2e

BROKEN_AND_FINE = """
[models.gpu]
engine = "transformers"
fallback = ["backup"]
unavailable_after_s = 3
[models.gpu.options]
model = "{tmp}/no-such-weights"
local_files_only = true
[models.gpu.scaling]
backend = "local"
max_replicas = 1

[models.fine]
engine = "dummy"
fallback = ["backup"]
unavailable_after_s = 3
[models.fine.options]
latency_ms = 2
runs_log = "{tmp}/fine.runs"

[models.backup]
engine = "dummy"
[models.backup.options]
latency_ms = 2
runs_log = "{tmp}/backup.runs"
"""


def _runs(path: Path) -> list[str]:
    """Request ids of every run the dummy engine started (one line per run)."""
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def _submit(client: httpx.Client, model: str, n: int, **extra) -> tuple[str, float]:
    body = {"requests": [{"custom_id": f"{model}-{i}", "model": model, "prompt": f"p{i}"} for i in range(n)], **extra}
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], time.monotonic()


def _wait_end(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "cancelled", "expired"):
            return job
        assert time.monotonic() < deadline, f"{job_id} did not end: {job}"
        time.sleep(0.1)


def _model(client: httpx.Client, name: str) -> dict:
    return next(m for m in client.get("/v1/models").json()["data"] if m["id"] == name)


def test_a_model_whose_workers_never_start_falls_back_and_a_healthy_one_does_not(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(BROKEN_AND_FINE.format(tmp=tmp_path))
    with LocalStack(path, workdir=tmp_path / "stack") as stack, httpx.Client(base_url=stack.base_url, timeout=30) as c:
        broken, t0 = _submit(c, "gpu", 40)
        healthy, _ = _submit(c, "fine", 40)
        job = _wait_end(c, broken)
        took = time.monotonic() - t0
        # unavailable after 3 s without a read, judged each second, then one move and the backup's run
        assert took < 3 + 4, f"fell back only after {took:.1f} s"
        assert job["status"] == "completed" and job["request_counts"]["succeeded"] == 40
        lines = _all_results(c, broken)
        assert sorted(line["custom_id"] for line in lines) == sorted(f"gpu-{i}" for i in range(40))
        assert {(line["model"], line["served_by"], line["fallback_reason"]) for line in lines} == {
            ("gpu", "backup", "unavailable")
        }
        # each request ran exactly once, on the backup
        backup_runs = _runs(tmp_path / "backup.runs")
        assert len(backup_runs) == 40 and len(set(backup_runs)) == 40

        assert _wait_end(c, healthy)["request_counts"]["succeeded"] == 40
        fine_lines = _all_results(c, healthy)
        assert {(line["served_by"], line["fallback_reason"]) for line in fine_lines} == {("fine", None)}
        assert len(_runs(tmp_path / "fine.runs")) == 40

        assert _model(c, "gpu")["fallback"] == ["backup"]
        assert _model(c, "fine")["health"]["state"] == "serving"
        metrics = c.get("/metrics").text
        assert 'inferq_fallback_moves_total{from="gpu",reason="unavailable",to="backup"} 40.0' in metrics
        # it stays unavailable while no worker comes, so new work moves at once
        health = _model(c, "gpu")["health"]
        assert health["state"] == "unavailable" and "no worker has read" in health["reason"], health
        again, t1 = _submit(c, "gpu", 5)
        assert _wait_end(c, again)["request_counts"]["succeeded"] == 5
        assert time.monotonic() - t1 < 3.0
        assert 'inferq_model_health{model="gpu",state="unavailable"} 1.0' in c.get("/metrics").text


QUEUE_WAIT = """
[models.slow]
engine = "dummy"
max_inflight = 1
fallback = ["backup"]
interactive_max_queue_wait_s = 1.0
[models.slow.options]
latency_ms = 400

[models.backup]
engine = "dummy"
[models.backup.options]
latency_ms = 5
"""


def test_max_queue_wait_moves_interactive_requests_while_the_batch_backlog_stays(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(QUEUE_WAIT)
    with LocalStack(path, workdir=tmp_path / "stack") as stack, httpx.Client(base_url=stack.base_url, timeout=30) as c:
        batch, _ = _submit(c, "slow", 20)  # 8 s of work for one request at a time
        time.sleep(1.0)
        interactive, t0 = _submit(c, "slow", 8, priority="interactive")
        job = _wait_end(c, interactive)
        took = time.monotonic() - t0
        assert job["request_counts"]["succeeded"] == 8
        lines = _all_results(c, interactive)
        moved = [line for line in lines if line["served_by"] == "backup"]
        assert moved and all(line["fallback_reason"] == "max_queue_wait" for line in moved)
        stayed = [line for line in lines if line["served_by"] == "slow"]
        assert all(line["fallback_reason"] is None for line in stayed)
        # 8 x 400 ms on the slow model would take 3.2 s; the wait limit is 1 s (judged each second)
        assert took < 3.0, f"interactive job took {took:.1f} s"
        # the batch requests have no wait limit: they all stay, served by the slow model
        done = _wait_end(c, batch, timeout=60)
        assert done["request_counts"]["succeeded"] == 20
        assert {(line["served_by"], line["fallback_reason"]) for line in _all_results(c, batch)} == {("slow", None)}


def test_a_job_wait_limit_moves_its_batch_requests_too(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(QUEUE_WAIT)
    with LocalStack(path, workdir=tmp_path / "stack") as stack, httpx.Client(base_url=stack.base_url, timeout=30) as c:
        job_id, t0 = _submit(c, "slow", 30, max_queue_wait=1.5)
        job = _wait_end(c, job_id)
        assert job["request_counts"]["succeeded"] == 30
        assert time.monotonic() - t0 < 6.0  # 12 s on the slow model alone
        reasons = {(line["served_by"], line["fallback_reason"]) for line in _all_results(c, job_id)}
        assert ("backup", "max_queue_wait") in reasons and ("slow", None) in reasons


def test_a_fallback_cycle_is_refused_at_start(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.a]\nengine = "dummy"\nfallback = ["b"]\n'
        '[models.b]\nengine = "dummy"\nfallback = ["c"]\n'
        '[models.c]\nengine = "dummy"\nfallback = ["a"]\n'
    )
    for module in ("services.ingest", "services.dispatcher"):
        proc = subprocess.run(
            [sys.executable, "-m", module],
            env={"INFERQ_MODELS": str(path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (module, proc.stderr)
        assert "fallback chains form a cycle: a -> b -> c -> a" in proc.stderr


FLAKY = """
[models.flaky]
engine = "dummy"
fallback = ["backup"]
[models.flaky.retry]
max_attempts = 2
backoff_s = 0.05
[models.flaky.options]
flaky_attempts = 100
runs_log = "{tmp}/flaky.runs"

[models.backup]
engine = "dummy"
[models.backup.options]
runs_log = "{tmp}/backup.runs"

[models.alone]
engine = "dummy"
[models.alone.retry]
max_attempts = 2
backoff_s = 0.05
[models.alone.options]
flaky_attempts = 100
"""


def test_a_request_whose_every_attempt_failed_moves_on_and_without_a_chain_is_dead_lettered(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(FLAKY.format(tmp=tmp_path))
    with LocalStack(path, workdir=tmp_path / "stack") as stack, httpx.Client(base_url=stack.base_url, timeout=30) as c:
        job_id, _ = _submit(c, "flaky", 30)
        job = _wait_end(c, job_id)
        assert job["request_counts"]["succeeded"] == 30
        lines = _all_results(c, job_id)
        assert {(line["served_by"], line["fallback_reason"]) for line in lines} == {("backup", "retries_exhausted")}
        flaky_runs = _runs(tmp_path / "flaky.runs")
        assert len(flaky_runs) == 60 and all(flaky_runs.count(r) == 2 for r in set(flaky_runs))  # 2 attempts each
        backup_runs = _runs(tmp_path / "backup.runs")
        assert sorted(backup_runs) == sorted(set(flaky_runs))  # then exactly one run each on the backup
        assert c.get("/v1/dead-letters").json()["data"] == []

        alone, _ = _submit(c, "alone", 3)
        ended = _wait_end(c, alone)
        assert ended["request_counts"]["failed"] == 3
        assert {line["error"]["code"] for line in _all_results(c, alone)} == {"max_attempts_exceeded"}
        assert len(c.get("/v1/dead-letters").json()["data"]) == 3
