"""Autoscaling with the local backend: real processes, real redis-server, dummy engine with latency."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from inferq.localstack import LocalStack
from shared.redis.keys import Keys
from tests.e2e.test_reliability import _assert_exact, _submit, _wait

pytestmark = pytest.mark.e2e
keys = Keys("inferq")

MODELS = """
[models.m]
engine = "dummy"
max_inflight = 32
[models.m.options]
latency_ms = {latency}
[models.m.scaling]
backend = "local"
min_replicas = 0
max_replicas = 4
target_per_replica = {target}
scale_down_window_s = {window}
idle_cooldown_s = 3
"""


def _stack(tmp_path, latency=20, target=1000, window=2) -> LocalStack:
    path = tmp_path / "models.toml"
    path.write_text(MODELS.format(latency=latency, target=target, window=window))
    return LocalStack(path, workdir=tmp_path / "stack")


def _scaling(client) -> dict:
    return client.get("/v1/models").json()["data"][0]["scaling"]


def _events(rdb) -> list[dict]:
    return [json.loads(f[b"event"]) for _, f in rdb.xrange(keys.scaling_events)]


def _worker_consumers(rdb) -> int:
    try:
        return max(
            (
                g["consumers"]
                for s in keys.model_streams("m")
                if rdb.exists(s)
                for g in rdb.xinfo_groups(s)
                if g["name"] == b"workers"
            ),
            default=0,
        )
    except redis.ResponseError:
        return 0


def test_zero_to_many_and_back_to_zero(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=60) as client:
        rdb = redis.Redis.from_url(stack.redis_url)
        assert stack.procs.keys() == {"ingest", "dispatcher-0"}  # no worker until there is work
        time.sleep(1.0)
        scaling = _scaling(client)
        assert scaling["backend"] == "local" and scaling["current"] == 0 and scaling["max_replicas"] == 4

        t0 = time.monotonic()
        job_id, ids = _submit(client, 5000, "s")
        while _scaling(client)["current"] < 2:
            assert time.monotonic() - t0 < 2.0, f"not at 2 replicas 2 s after submission: {_scaling(client)}"
            time.sleep(0.05)
        reached = time.monotonic() - t0
        scaling = _scaling(client)
        assert scaling["current"] >= 2 and "up from 0" in scaling["last_change"]["reason"]

        _wait(client, job_id, stack, timeout=120)
        _assert_exact(client, job_id, ids, succeeded=5000)
        assert _worker_consumers(rdb) >= 2  # the workers it started really consumed

        deadline = time.monotonic() + 30
        while _scaling(client)["current"] != 0:
            assert time.monotonic() < deadline, _scaling(client)
            time.sleep(0.2)
        assert "down to zero" in _scaling(client)["last_change"]["reason"]
        events = _events(rdb)
        assert events[0]["from"] == 0 and events[0]["to"] >= 2 and events[-1]["to"] == 0
        logs = list((tmp_path / "stack").glob("worker-m-*.log"))
        assert len(logs) >= 2
        deadline = time.monotonic() + 15
        while not all('"worker stopped"' in p.read_text() for p in logs):  # SIGTERM: they drain and exit
            assert time.monotonic() < deadline, "a stopped worker did not exit cleanly"
            time.sleep(0.1)
        print(f"0 -> {events[0]['to']} replicas {reached:.2f}s after submission")
        assert set(stack.stop().values()) == {0}


def test_scale_down_while_busy_loses_nothing(tmp_path):
    # target 500 per replica, no stabilization window: as the backlog drains 4 → 3 → 2 → 1 replicas,
    # each step SIGTERMs a worker that is mid-generation
    with (
        _stack(tmp_path, latency=50, target=500, window=0) as stack,
        httpx.Client(base_url=stack.base_url, timeout=60) as client,
    ):
        rdb = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 3000, "d")
        _wait(client, job_id, stack, timeout=120)
        _assert_exact(client, job_id, ids, succeeded=3000)
        downs_mid_job = [e for e in _events(rdb) if e["to"] < e["from"] and e["backlog"] > 0]
        assert downs_mid_job, _events(rdb)  # how many steps it takes depends on the drain rate
        lines = [l for p in (tmp_path / "stack").glob("worker-m-*.log") for l in p.read_text().splitlines()]
        assert any("draining" in l for l in lines), "no stopped worker was busy: the scale-downs proved nothing"
        assert set(stack.stop().values()) == {0}
