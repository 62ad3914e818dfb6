"""A consumer that dies (kill -9) has its unacknowledged work taken over as soon as its heartbeat
expires, not after the long idle backstop; one that is only paused for less than the heartbeat TTL
keeps all of it; a stopping job whose model has no live worker still ends. Real processes, real
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
from shared.redis.keys import COLLECTOR_GROUP, ROUTER_GROUP, WORKER_GROUP, Keys
from shared.wire.messages import request_decoder
from tests.e2e.test_pipeline import _all_results

pytestmark = pytest.mark.e2e
keys = Keys("inferq")
TTL_S = 10.0  # INFERQ_HEARTBEAT_TTL_S's default
TAKEOVER_BOUND_S = 15.0  # TTL + the 1 s check, with room for a loaded machine
STRANDED_BOUND_S = TTL_S + 2 + 3  # the documented TTL + 2 s, with the same room

MODELS = """
[models.slow]
engine = "dummy"
max_inflight = 8
[models.slow.options]
latency_ms = 300
runs_log = "{runs}"
"""


def _stack(tmp_path: Path, **kw) -> LocalStack:
    path = tmp_path / "models.toml"
    path.write_text(MODELS.format(runs=tmp_path / "runs.log"))
    return LocalStack(path, workdir=tmp_path / "stack", **kw)


def _runs(tmp_path: Path) -> list[tuple[int, str]]:
    """(pid, request id) of every run the dummy engine started, in every worker process."""
    lines = (tmp_path / "runs.log").read_text().splitlines()
    return [(int(pid), rid) for pid, rid in (line.split() for line in lines)]


def _submit(client: httpx.Client, n: int, tag: str) -> tuple[str, list[str]]:
    ids = [f"{tag}-{i}" for i in range(n)]
    resp = client.post("/v1/jobs", json={"requests": [{"custom_id": c, "model": "slow", "prompt": c} for c in ids]})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"], ids


def _job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()


def _wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := _job(client, job_id))["status"] != status:
        assert time.monotonic() < deadline, f"{job_id} is {job['status']}: {job['request_counts']}"
        time.sleep(0.1)
    return job


def _consumer_of(rc: redis.Redis, stream: str, group: str, pid: int) -> str | None:
    """The consumer name a process uses on a stream (names carry the pid)."""
    for c in rc.xinfo_consumers(stream, group):
        if f"-{pid}-" in c["name"].decode():
            return c["name"].decode()
    return None


def _held(rc: redis.Redis, stream: str, group: str, consumer: str) -> list[bytes]:
    return [row["message_id"] for row in rc.xpending_range(stream, group, "-", "+", 10_000, consumer)]


def _wait_until(what, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return value


def _assert_exact(client: httpx.Client, job_id: str, ids: list[str], **counts: int) -> list[dict]:
    job = _job(client, job_id)
    c = job["request_counts"]
    expected = {"succeeded": 0, "failed": 0, "cancelled": 0, "expired": 0, **counts}
    assert {k: c[k] for k in expected} == expected, c
    assert (c["total"], c["queued"], c["running"]) == (len(ids), 0, 0)
    lines = _all_results(client, job_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)  # each exactly once
    return lines


def _job_events(rc: redis.Redis, job_id: str) -> list[bytes]:
    return [
        f[b"type"] for _, f in rc.xrange(keys.events_stream) if f[b"job"] == job_id.encode() and b"job." in f[b"type"]
    ]


def test_a_killed_workers_requests_run_on_the_other_worker_within_the_heartbeat_ttl(tmp_path):
    with _stack(tmp_path, workers_per_model=2) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        stream = keys.model_stream("slow", "batch")
        job_id, ids = _submit(client, 240, "k")
        victim, survivor = stack.procs["worker-slow-1"], stack.procs["worker-slow-0"]
        name = _wait_until(lambda: _consumer_of(rc, stream, WORKER_GROUP, victim.pid), 30, "the worker never read")
        _wait_until(lambda: len(_held(rc, stream, WORKER_GROUP, name)) == 8, 30, "the worker never filled its slots")
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()
        stack.procs.pop("worker-slow-1")
        held = _held(rc, stream, WORKER_GROUP, name)
        assert held, "the killed worker held nothing: the test proves nothing"
        held_requests = {request_decoder.decode(f[b"d"]).request_id for i, f in rc.xrange(stream) if i in held}

        def taken() -> bool:
            mine = set(_held(rc, stream, WORKER_GROUP, name))
            return not mine & set(held)

        _wait_until(taken, 60, "the killed worker's requests were never taken over")
        taken_after = time.monotonic() - killed_at
        assert taken_after < TAKEOVER_BOUND_S, f"taken over {taken_after:.1f}s after the kill"
        print(f"worker: {len(held)} requests taken over {taken_after:.1f}s after the kill")

        _wait_status(client, job_id, "completed")
        _assert_exact(client, job_id, ids, succeeded=len(ids))
        runs = _runs(tmp_path)
        assert {rid for pid, rid in runs if pid == survivor.pid} >= held_requests  # they ran on the survivor
        assert "took over" in stack.log_path("worker-slow-0").read_text()
        _wait_until(
            lambda: all(_consumer_of(rc, s, WORKER_GROUP, victim.pid) is None for s in keys.model_streams("slow")),
            10,
            "the dead worker is still in the group",
        )
        assert _job_events(rc, job_id) == [b"job.completed"]


def test_a_worker_paused_for_less_than_the_ttl_keeps_its_requests(tmp_path):
    with _stack(tmp_path, workers_per_model=2) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        stream = keys.model_stream("slow", "batch")
        job_id, ids = _submit(client, 160, "p")
        paused = stack.procs["worker-slow-1"]
        name = _wait_until(lambda: _consumer_of(rc, stream, WORKER_GROUP, paused.pid), 30, "the worker never read")
        _wait_until(lambda: len(_held(rc, stream, WORKER_GROUP, name)) == 8, 30, "the worker never filled its slots")
        paused.send_signal(signal.SIGSTOP)
        try:
            held = _held(rc, stream, WORKER_GROUP, name)
            time.sleep(4.0)  # well under the TTL less one renewal period (7.5 s)
        finally:
            paused.send_signal(signal.SIGCONT)
        assert held, "the paused worker held nothing: the test proves nothing"
        held_requests = {request_decoder.decode(f[b"d"]).request_id for i, f in rc.xrange(stream) if i in held}
        _wait_status(client, job_id, "completed")
        _assert_exact(client, job_id, ids, succeeded=len(ids))
        runs = _runs(tmp_path)
        per_request = collections.Counter(rid for _, rid in runs)
        assert len(per_request) == len(ids) and set(per_request.values()) == {1}  # no request ran twice
        assert {rid for pid, rid in runs if pid == paused.pid} >= held_requests  # its own, finished by it
        assert "took over" not in stack.log_path("worker-slow-0").read_text()


def _stop_while_running_all_it_holds(rc, stream: str, name: str, proc, tmp_path: Path) -> list[bytes]:
    """SIGSTOP the worker at a moment when every entry it holds is already running in its engine
    (a held entry it had read but not started would not run late, and prove nothing). Returns
    the entries it holds, stopped."""
    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        held = _held(rc, stream, WORKER_GROUP, name)
        ids = {request_decoder.decode(f[b"d"]).request_id for i, f in rc.xrange(stream) if i in held}
        started = {rid for pid, rid in _runs(tmp_path) if pid == proc.pid}
        if len(held) == 8 and ids <= started:
            return held
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker was never caught running all it held")


def test_a_worker_paused_past_the_ttl_is_replaced_and_its_late_results_count_once(tmp_path):
    with _stack(tmp_path, workers_per_model=2) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        stream = keys.model_stream("slow", "batch")
        job_id, ids = _submit(client, 160, "z")
        paused, survivor = stack.procs["worker-slow-1"], stack.procs["worker-slow-0"]
        name = _wait_until(lambda: _consumer_of(rc, stream, WORKER_GROUP, paused.pid), 30, "the worker never read")
        _wait_until(lambda: len(_held(rc, stream, WORKER_GROUP, name)) == 8, 30, "the worker never filled its slots")
        held = _stop_while_running_all_it_holds(rc, stream, name, paused, tmp_path)
        try:
            _wait_until(
                lambda: not set(_held(rc, stream, WORKER_GROUP, name)) & set(held),
                TAKEOVER_BOUND_S + 10,
                "the paused worker's requests were never taken over",
            )
        finally:
            paused.send_signal(signal.SIGCONT)  # it finishes and publishes what it was running
        held_requests = {request_decoder.decode(f[b"d"]).request_id for i, f in rc.xrange(stream) if i in held}
        _wait_until(lambda: rc.exists(keys.heartbeat(name)), 10, "the resumed worker never announced itself again")
        _wait_status(client, job_id, "completed")
        _assert_exact(client, job_id, ids, succeeded=len(ids))
        assert _job_events(rc, job_id) == [b"job.completed"]
        runs = _runs(tmp_path)
        for pid in (paused.pid, survivor.pid):  # each of them ran on both workers; one result counted
            assert {rid for p, rid in runs if p == pid} >= held_requests
        assert "announced again" in stack.log_path("worker-slow-1").read_text()


def test_a_killed_dispatchers_unacknowledged_entries_are_taken_over_within_seconds(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        old = stack.procs["dispatcher-0"]
        warm_id, _ = _submit(client, 8, "warm")  # the collector joins its group with its first result
        _wait_status(client, warm_id, "completed")
        held: list[bytes] = []
        for attempt in range(5):
            old.send_signal(signal.SIGSTOP)  # while blocked in XREADGROUP, Redis still hands it entries
            # more than the lane's high watermark (64): what the lane has no room for goes to the router
            job_id, ids = _submit(client, 100, f"d{attempt}")
            router = _consumer_of(rc, keys.ingest_stream, ROUTER_GROUP, old.pid)
            held = _held(rc, keys.ingest_stream, ROUTER_GROUP, router) if router else []
            if held:
                break
            old.send_signal(signal.SIGCONT)  # it was between two reads: let it route, and try again
            _wait_status(client, job_id, "completed")
        assert held, "the stopped dispatcher never held an ingest entry: the test proves nothing"
        collector = _consumer_of(rc, keys.results_stream, COLLECTOR_GROUP, old.pid)
        assert router and collector
        old.kill()
        killed_at = time.monotonic()
        old.wait()
        stack.procs.pop("dispatcher-0")
        stack.spawn("dispatcher-1", "services.dispatcher")

        _wait_until(
            lambda: not set(_held(rc, keys.ingest_stream, ROUTER_GROUP, router)) & set(held),
            60,
            "the killed dispatcher's ingest entries were never taken over",
        )
        taken_after = time.monotonic() - killed_at
        assert taken_after < TAKEOVER_BOUND_S, f"taken over {taken_after:.1f}s after the kill (backstop: 30 s)"
        print(f"dispatcher: {len(held)} ingest entries taken over {taken_after:.1f}s after the kill")
        _wait_status(client, job_id, "completed", timeout=60)
        _assert_exact(client, job_id, ids, succeeded=len(ids))
        assert "took over" in stack.log_path("dispatcher-1").read_text()
        names = {ROUTER_GROUP: router, COLLECTOR_GROUP: collector}
        streams = {ROUTER_GROUP: keys.ingest_stream, COLLECTOR_GROUP: keys.results_stream}
        for group, dead in names.items():
            _wait_until(
                lambda group=group, dead=dead: (
                    dead not in {c["name"].decode() for c in rc.xinfo_consumers(streams[group], group)}
                ),
                10,
                f"the dead dispatcher's {group} consumer is still in its group",
            )


def test_a_job_cancelled_while_its_model_has_no_worker_ends_cancelled(tmp_path):
    with _stack(tmp_path, models=[]) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        job_id, ids = _submit(client, 50, "n")
        stream = keys.model_stream("slow", "batch")
        _wait_until(lambda: rc.xlen(stream) == 50, 30, "the router never fed the model's stream")
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        cancelled_at = time.monotonic()
        _wait_status(client, job_id, "cancelled", timeout=60)
        ended_after = time.monotonic() - cancelled_at
        assert ended_after < STRANDED_BOUND_S, f"cancelled {ended_after:.1f}s after the cancel"
        print(f"no worker: cancelled {ended_after:.1f}s after the cancel")
        lines = _assert_exact(client, job_id, ids, cancelled=len(ids))
        assert {line["status"] for line in lines} == {"cancelled"}
        assert _job_events(rc, job_id) == [b"job.cancelled"]
        assert rc.ttl(keys.job(job_id)) > 0 and not rc.exists(keys.job_requests(job_id))


def test_a_job_cancelled_after_its_only_worker_died_ends_cancelled(tmp_path):
    with _stack(tmp_path) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as client:
        rc = redis.Redis.from_url(stack.redis_url)
        stream = keys.model_stream("slow", "batch")
        job_id, ids = _submit(client, 60, "c")
        worker = stack.procs["worker-slow-0"]
        name = _wait_until(lambda: _consumer_of(rc, stream, WORKER_GROUP, worker.pid), 30, "the worker never read")
        _wait_until(lambda: len(_held(rc, stream, WORKER_GROUP, name)) == 8, 30, "the worker never filled its slots")
        _wait_until(lambda: _job(client, job_id)["request_counts"]["succeeded"] >= 8, 30, "nothing succeeded")
        worker.kill()
        killed_at = time.monotonic()
        worker.wait()
        stack.procs.pop("worker-slow-0")
        assert _held(rc, stream, WORKER_GROUP, name), "the worker held nothing when killed: the test proves nothing"
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        _wait_status(client, job_id, "cancelled", timeout=60)
        ended_after = time.monotonic() - killed_at
        assert ended_after < STRANDED_BOUND_S, f"cancelled {ended_after:.1f}s after the last worker died"
        print(f"dead worker: cancelled {ended_after:.1f}s after the kill")
        succeeded = _job(client, job_id)["request_counts"]["succeeded"]
        assert 8 <= succeeded < len(ids)
        _assert_exact(client, job_id, ids, succeeded=succeeded, cancelled=len(ids) - succeeded)
        assert _job_events(rc, job_id) == [b"job.cancelled"]
        assert rc.ttl(keys.job(job_id)) > 0
