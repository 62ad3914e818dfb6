"""The whole stack, real processes, while Redis refuses writes for real: out of memory (filled to
maxmemory under noeviction) or read-only (made a replica). No HTTP 500, no process exits, each
process logs the outage once, and once Redis accepts writes again every accepted job completes
with exact counts and exactly one result line per request."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from inferq.localstack import LocalStack, free_port
from tests.e2e.test_pipeline import _all_results
from tests.shared.redis.test_redis_faults import fill_memory, free_memory

pytestmark = pytest.mark.e2e

MODELS = """
[models.m]
engine = "dummy"
max_inflight = 16
[models.m.options]
latency_ms = 10
"""


def _job_body(tag: str, n: int) -> dict:
    return {"requests": [{"custom_id": f"{tag}-{i}", "model": "m", "prompt": f"p {tag} {i}"} for i in range(n)]}


def _wait_completed(client: httpx.Client, stack: LocalStack, jobs: dict[str, int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        pending = [j for j in jobs if client.get(f"/v1/jobs/{j}").json()["status"] != "completed"]
        if not pending:
            return
        assert time.monotonic() < deadline, f"not completed: {pending}"
        time.sleep(0.2)


def _assert_exact(client: httpx.Client, job_id: str, tag: str, n: int) -> None:
    counts = client.get(f"/v1/jobs/{job_id}").json()["request_counts"]
    assert (counts["total"], counts["succeeded"], counts["failed"], counts["queued"], counts["running"]) == (
        n,
        n,
        0,
        0,
        0,
    ), counts
    lines = _all_results(client, job_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"{tag}-{i}" for i in range(n))


@contextlib.contextmanager
def _out_of_memory(admin: redis.Redis) -> Iterator[None]:
    filler = fill_memory(admin)
    try:
        yield
    finally:
        free_memory(admin, filler)


@contextlib.contextmanager
def _read_only(admin: redis.Redis) -> Iterator[None]:
    """A replica of a closed port: writes fail READONLY, and there is no primary to sync from
    (syncing would replace the dataset)."""
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    with pytest.raises(redis.exceptions.ReadOnlyError):
        admin.set("probe", "1")
    try:
        yield
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")


def assert_outages_logged(stack: LocalStack, outages: dict[str, int], timeout: float = 20) -> None:
    """Each process logged `outages[name]` outages, each once: a warning when it began and, once no
    loop has failed for a second, one line when it ended (waited for: it comes after recovery)."""
    deadline = time.monotonic() + timeout
    for name, expected in outages.items():
        while True:
            log = stack.log_path(name).read_text()
            ended = log.count('"msg":"Redis available again after')
            if ended >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert log.count('"msg":"Redis unavailable (') == expected, (name, log[-3000:])
        assert ended == expected, (name, log[-3000:])


@pytest.mark.parametrize("state", ["out_of_memory", "read_only"])
def test_redis_refusing_writes_mid_job_loses_nothing(tmp_path: Path, state: str):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    # the dispatcher restarts its consumers when arq stops; the batches they held are taken over
    env = {"INFERQ_RECLAIM_IDLE_S": "2", "INFERQ_RETRY_AFTER_S": "3"}
    enter = _out_of_memory if state == "out_of_memory" else _read_only
    with LocalStack(models, workdir=tmp_path / "stack", env=env) as stack:
        admin = redis.Redis.from_url(stack.redis_url or "")
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            jobs: dict[str, tuple[str, int]] = {}
            for k in range(3):
                resp = client.post("/v1/jobs", json=_job_body(f"before{k}", 400))
                assert resp.status_code == 202, resp.text
                jobs[resp.json()["id"]] = (f"before{k}", 400)
            first = next(iter(jobs))
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{first}").json()["request_counts"]["succeeded"] < 50:
                assert time.monotonic() < deadline
                time.sleep(0.05)

            with enter(admin):
                refused = [client.post("/v1/jobs", json=_job_body(f"during{k}", 5)) for k in range(60)]
                for resp in refused:
                    assert resp.status_code == 503, resp.text
                    assert resp.headers["retry-after"] == "3"
                    assert resp.json()["error"]["type"] == "unavailable"
                assert client.get("/readyz").status_code == 503
                assert client.get(f"/v1/jobs/{first}").status_code == 200  # reads still answer
                time.sleep(3)  # the loops meet the refusals and retry
                stack.check_alive()

            resp = client.post("/v1/jobs", json=_job_body("after", 50))
            assert resp.status_code == 202, resp.text
            jobs[resp.json()["id"]] = ("after", 50)
            _wait_completed(client, stack, {j: n for j, (_, n) in jobs.items()})
            for job_id, (tag, n) in jobs.items():
                _assert_exact(client, job_id, tag, n)
            assert client.get("/readyz").status_code == 200
        # Out of memory, a script whose first write may grow memory is refused (job creation, arq's
        # enqueue); one that first acknowledges (XACK) runs whole, so the workers' publishing goes on.
        assert_outages_logged(
            stack, {"ingest": 1, "dispatcher-0": 1, "worker-m-0": 0 if state == "out_of_memory" else 1}
        )
        codes = stack.stop()
    assert set(codes.values()) == {0}, codes
