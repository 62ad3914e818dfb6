"""GET /v1/jobs/{id}/results as real processes: every line in one streamed body, with the API's
memory flat whatever the job's size; `wait=true` follows a running job to its end; paging with
`limit` keeps its cursor header; a reader that goes away leaves nothing running."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from services.ingest.result_stream import BLOCK_MS
from shared.core.states import FINAL_JOB_STATES

pytestmark = pytest.mark.e2e
MODELS = """
[models.alpha]
engine = "dummy"
max_inflight = 256
default_max_tokens = 400
[models.alpha.options]
latency_ms = 0
"""
BIG_JOB = 25_000
MIB = 1024 * 1024


@pytest.fixture
def models_path(tmp_path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return path


def _rss(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _read_all(client: httpx.Client, job_id: str, params: dict, headers: dict) -> list[str]:
    """The request ids of every line of one streamed read, and its response headers."""
    ids = []
    with client.stream("GET", f"/v1/jobs/{job_id}/results", params=params, timeout=httpx.Timeout(30, read=120)) as r:
        assert r.status_code == 200, r.read()
        headers.update(r.headers)
        for raw in r.iter_lines():
            ids.append(json.loads(raw)["request_id"])
    return ids


def _wait_status(client: httpx.Client, job_id: str, stack: LocalStack, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINAL_JOB_STATES:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout}s")


def test_a_25000_request_job_streams_every_line_and_wait_follows_it_to_the_end(tmp_path, models_path):
    # 200 six-character words per prompt: each line carries ~1.4 KB of echoed text, ~37 MB in all,
    # so an API that held the whole body in memory would grow far past the bound checked below
    words = " ".join(f"w{i:05d}" for i in range(200))
    body = {"requests": [{"custom_id": f"c{i}", "model": "alpha", "prompt": words} for i in range(BIG_JOB)]}
    with LocalStack(models_path, workdir=tmp_path / "stack") as stack:
        with httpx.Client(base_url=stack.base_url, timeout=120) as client:
            accepted = client.post("/v1/jobs", json=body)
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]

            followed: list[str] = []
            follow_headers: dict = {}
            follower = threading.Thread(
                target=lambda: followed.extend(_read_all(client, job_id, {"wait": "true"}, follow_headers))
            )
            follower.start()
            job = _wait_status(client, job_id, stack)
            follower.join(120)
            assert not follower.is_alive(), "the waiting read did not end after the job did"
            assert follow_headers["inferq-job-status"] not in FINAL_JOB_STATES  # it began before the end
            assert job["status"] == "completed" and job["request_counts"]["succeeded"] == BIG_JOB
            assert len(followed) == BIG_JOB and len(set(followed)) == BIG_JOB  # every line exactly once

        # a fresh API process, so what it holds is what the read costs
        stack.stop_processes(["ingest"])
        stack.spawn("ingest", "services.ingest")
        stack.wait_ready()
        pid = stack.procs["ingest"].pid
        with httpx.Client(base_url=stack.base_url, timeout=120) as client:
            assert client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1}).status_code == 200  # warm
            before = _rss(pid)
            samples: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    samples.append(_rss(pid))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            headers: dict = {}
            try:
                lines = _read_all(client, job_id, {}, headers)
            finally:
                done.set()
                sampler.join()
            samples.append(_rss(pid))
        growth = max(samples) - before
        print(f"\ningest RSS {before / MIB:.1f} MiB before, peak {max(samples) / MIB:.1f} MiB during the read")
        assert lines == followed  # the same lines, in the same (finish) order
        assert "inferq-next-cursor" not in headers and headers["transfer-encoding"] == "chunked"
        assert growth < 50 * MIB, f"ingest grew by {growth / MIB:.1f} MiB while streaming {BIG_JOB} lines"


def test_full_reads_paging_and_waiting_on_a_finished_job(tmp_path, models_path):
    with LocalStack(models_path, workdir=tmp_path / "stack") as stack:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            body = {"requests": [{"custom_id": f"c{i}", "model": "alpha", "prompt": f"p {i}"} for i in range(50)]}
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            _wait_status(client, job_id, stack, timeout=120)
            everything = _read_all(client, job_id, {}, {})
            assert len(everything) == 50 and len(set(everything)) == 50

            page = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 20})
            assert page.status_code == 200 and page.headers["inferq-result-count"] == "20"
            assert [json.loads(line)["request_id"] for line in page.text.splitlines()] == everything[:20]
            rest = _read_all(client, job_id, {"after": page.headers["inferq-next-cursor"]}, {})
            assert rest == everything[20:]

            headers: dict = {}
            assert _read_all(client, job_id, {"wait": "true"}, headers) == everything  # ended: all, then closes
            assert headers["inferq-job-status"] == "completed"

            page = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 5, "wait": "true"})
            assert [json.loads(line)["request_id"] for line in page.text.splitlines()] == everything[:5]
            end = client.get(
                f"/v1/jobs/{job_id}/results", params={"limit": 5, "wait": "true", "after": cursor_of(client, job_id)}
            )
            assert end.status_code == 200 and end.text == "" and end.headers["inferq-job-status"] == "completed"
            missing = client.get("/v1/jobs/job_0000000000000000000000000a/results", params={"wait": "true"})
            assert missing.status_code == 404


def cursor_of(client: httpx.Client, job_id: str) -> str:
    """The cursor of the job's last line."""
    return client.get(f"/v1/jobs/{job_id}/results", params={"limit": 10_000}).headers["inferq-next-cursor"]


def _blocked_results_readers(r: redis.Redis) -> int:
    """Clients of Redis blocked in XREAD: only a waiting results read does that here (the
    dispatcher and workers block in XREADGROUP)."""
    return sum(1 for c in r.client_list() if c["cmd"] == "xread" and "b" in c["flags"])


def test_a_waiting_reader_that_disconnects_leaves_nothing_running(tmp_path, models_path):
    # no worker: the job stays queued, so only the reader's going away can end its read
    with LocalStack(models_path, workdir=tmp_path / "stack", models=[]) as stack:
        r = redis.Redis.from_url(stack.redis_url)
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            job_id = client.post("/v1/jobs", json={"requests": [{"model": "alpha", "prompt": "x"}]}).json()["id"]
            with client.stream("GET", f"/v1/jobs/{job_id}/results", params={"wait": "true"}) as resp:
                assert resp.status_code == 200 and resp.headers["inferq-job-status"] == "queued"
                deadline = time.monotonic() + 10
                while _blocked_results_readers(r) == 0:
                    assert time.monotonic() < deadline, "the waiting read never blocked on the results stream"
                    time.sleep(0.05)
        deadline = time.monotonic() + 10
        while _blocked_results_readers(r):
            assert time.monotonic() < deadline, "the read went on after its client disconnected"
            time.sleep(0.05)
        time.sleep(BLOCK_MS / 1000 + 1)  # a read still running would have blocked again by now
        assert _blocked_results_readers(r) == 0

        # a page with `wait` is a long poll: it answers once a line exists, here when a cancel ends the job
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            polled: list[httpx.Response] = []
            poll = threading.Thread(
                target=lambda: polled.append(
                    client.get(f"/v1/jobs/{job_id}/results", params={"limit": 10, "wait": "true"})
                )
            )
            poll.start()
            deadline = time.monotonic() + 10
            while _blocked_results_readers(r) == 0:
                assert time.monotonic() < deadline, "the long poll never waited"
                time.sleep(0.05)
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
            poll.join(30)
        assert [json.loads(line)["status"] for line in polled[0].text.splitlines()] == ["cancelled"]
        r.close()
