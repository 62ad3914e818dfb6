"""A network partition between every service and Redis, mid-job: a proxy stops forwarding without
closing anything. Callers time out (INFERQ_REDIS_SOCKET_TIMEOUT_S) instead of hanging, no process
exits, readiness reports the outage, and once packets flow again everything accepted completes
exactly once. Real processes, real redis-server."""

from __future__ import annotations

import time

import httpx
import pytest

from inferq.localstack import LocalStack, RedisServer, free_port
from tests.e2e.test_redis_faults import MODELS, _assert_exact, _job_body, _wait_completed, assert_outages_logged
from tests.support.tcp_proxy import PartitionProxy

pytestmark = pytest.mark.e2e


def _until_status(url: str, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == status:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered {status}"
        time.sleep(0.2)


def test_partition_mid_job_times_out_recovers_and_loses_nothing(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {"INFERQ_REDIS_SOCKET_TIMEOUT_S": "6", "INFERQ_RECLAIM_IDLE_S": "2", "INFERQ_RETRY_AFTER_S": "3"}
    try:
        with PartitionProxy(redis_server.port) as proxy:
            (tmp_path / "stack").mkdir()
            stack = LocalStack(models, redis_url=proxy.url, workdir=tmp_path / "stack", env=env)
            with stack:
                ops_port = free_port()  # one more worker, with the operations endpoint
                stack.extra_env["INFERQ_METRICS_PORT"] = str(ops_port)
                stack.spawn("worker-m-ops", "services.inference", "--model", "m")
                del stack.extra_env["INFERQ_METRICS_PORT"]
                worker_ready = f"http://127.0.0.1:{ops_port}/readyz"
                _until_status(worker_ready, 200)
                with httpx.Client(base_url=stack.base_url, timeout=60) as client:
                    jobs = {}
                    for k in range(2):
                        resp = client.post("/v1/jobs", json=_job_body(f"before{k}", 600))
                        assert resp.status_code == 202, resp.text
                        jobs[resp.json()["id"]] = (f"before{k}", 600)
                    first = next(iter(jobs))
                    deadline = time.monotonic() + 60
                    while client.get(f"/v1/jobs/{first}").json()["request_counts"]["succeeded"] < 50:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)

                    proxy.stop_forwarding()
                    during = {"Idempotency-Key": "sent-during-the-partition"}
                    resp = client.post("/v1/jobs", json=_job_body("during", 20), headers=during)
                    assert resp.status_code == 503, resp.text  # after the socket timeout, not never
                    assert resp.headers["retry-after"] == "3"
                    assert "may or may not" in resp.json()["error"]["message"]
                    ready = client.get("/readyz")
                    assert ready.status_code == 503 and "redis unavailable" in ready.json()["detail"]
                    _until_status(worker_ready, 503)
                    stack.check_alive()
                    proxy.forward()

                    # the answer was lost, so the job may exist: the same key settles it either way
                    resp = client.post("/v1/jobs", json=_job_body("during", 20), headers=during)
                    assert resp.status_code == 202, resp.text
                    jobs[resp.json()["id"]] = ("during", 20)
                    _wait_completed(client, stack, {j: n for j, (_, n) in jobs.items()})
                    for job_id, (tag, n) in jobs.items():
                        _assert_exact(client, job_id, tag, n)
                    _until_status(worker_ready, 200)
                    assert client.get("/readyz").status_code == 200
                assert_outages_logged(stack, {"ingest": 1, "dispatcher-0": 1, "worker-m-0": 1, "worker-m-ops": 1})
                codes = stack.stop()
            assert set(codes.values()) == {0}, codes
    finally:
        redis_server.stop()
