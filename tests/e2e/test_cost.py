"""What requests cost: each one's share of its worker's busy time (services/inference/busy_clock.py)
at its serving model's prices, summed exactly per job, per serving model and per tenant and period."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
import redis

from inferq.cli import usd_text
from inferq.localstack import LocalStack
from services.dispatcher.collector import Collector
from services.inference.busy_clock import BusyClock
from services.inference.engines.dummy import DummyEngine
from services.inference.worker import InferenceWorker
from shared.catalog.budgets import period_id
from shared.catalog.models import DummyOptions, parse_models
from shared.jobs.store import JobStore
from shared.redis.keys import COLLECTOR_GROUP, EVENT_FIELD, PAYLOAD_FIELD, FlowField, Keys, spend_field
from shared.redis.streams import ensure_group
from shared.wire.api import ResultLine
from shared.wire.messages import InferenceRequest, SamplingParams
from tests.conftest import ROOT
from tests.support.published import published_results

enc = msgspec.msgpack.Encoder()


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_overlapping_requests_share_the_busy_time_and_idle_time_is_charged_to_nobody():
    now = FakeTime()
    clock = BusyClock(now)
    now.t = 100.0
    clock.start("a")  # a alone for 1 s
    now.t = 101.0
    clock.start("b")  # a and b for 1 s: half each
    now.t = 102.0
    a = clock.stop("a")  # b alone for 1 s
    now.t = 103.0
    b = clock.stop("b")
    now.t = 110.0  # idle for 7 s
    clock.start("c")
    now.t = 112.0
    c = clock.stop("c")
    assert (a, b, c) == (pytest.approx(1.5), pytest.approx(1.5), pytest.approx(2.0))
    assert clock.busy_s == pytest.approx(5.0)  # 100-103 and 110-112: the idle 7 s are nobody's
    assert clock.stop("c") == 0.0  # charged once
    assert clock.in_flight == 0


def test_shares_of_random_overlapping_requests_sum_to_the_busy_time():
    rng = random.Random(7)
    now = FakeTime()
    clock = BusyClock(now)
    spans = []
    for i in range(300):
        start = rng.uniform(0, 1000)
        spans.append((start, start + rng.expovariate(1 / 5), i))
    events = sorted([(s, 1, i) for s, _, i in spans] + [(e, 0, i) for _, e, i in spans])
    shares = {}
    for t, kind, i in events:
        now.t = t
        if kind:
            clock.start(i)
        else:
            shares[i] = clock.stop(i)
    busy, end = 0.0, float("-inf")  # the length of the union of the spans
    for s, e, _ in sorted(spans):
        busy += max(0.0, e - max(s, end))
        end = max(end, e)
    assert sum(shares.values()) == pytest.approx(busy, rel=1e-9)
    assert clock.busy_s == pytest.approx(busy, rel=1e-9)
    for s, e, i in spans:  # nobody is charged more than the time it was in flight
        assert 0 < shares[i] <= e - s + 1e-9


MOVED_MODELS = """
[models.alpha]
engine = "dummy"
fallback = ["beta"]

[models.beta]
engine = "dummy"
max_inflight = 4
price_per_hour = 36.0
[models.beta.options]
latency_ms = 50
"""


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_moved_request_is_charged_to_the_model_that_served_it_and_counted_on_the_one_it_named(r, keys):
    models = parse_models(MOVED_MODELS)
    store = JobStore(r, keys)
    reqs = [
        InferenceRequest(
            request_id=f"req_{i}",
            job_id="job_moved",
            custom_id=f"c{i}",
            model="alpha",
            accepted_ms=int(time.time() * 1000),
            prompt="one two three",
            params=SamplingParams(max_tokens=8),
        )
        for i in range(3)
    ]
    await store.create("job_moved", int(time.time() * 1000), {"alpha": 3}, {}, [], tenant="acme")
    # as the fallback mover leaves them on beta's stream: [reason, request as accepted]
    for req in reqs:
        await r.xadd(keys.model_stream("beta", "batch"), {PAYLOAD_FIELD: enc.encode(["max_queue_wait", req])})
    worker = InferenceWorker(r, keys, models.get("beta"), DummyEngine(DummyOptions(latency_ms=50)), block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def published():
        return len(await published_results(r, keys)) == 3

    await _until(published)
    stop.set()
    await task
    envelopes = await published_results(r, keys)
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    collector = Collector(r, keys, store)
    reply = await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}, count=100)
    await collector.handle(reply[0][1])

    lines = [msgspec.json.decode(raw, type=ResultLine) for _, raw in await store.read_results("job_moved", None, 10)]
    assert {(l.model, l.served_by, l.fallback_reason, l.status) for l in lines} == {
        ("alpha", "beta", "max_queue_wait", "succeeded")
    }
    # three at once for ~50 ms: each is charged about a third of the worker's busy time
    assert all(0.005 < l.usage.gpu_seconds < 0.05 for l in lines)
    for env in envelopes:  # beta costs $36 per busy hour: one micro-dollar per 100 µs
        assert env.cost_micros == round(env.busy_us * 36 / 3600)
        assert env.line.usage.cost == env.cost_micros / 1e6
        assert env.line.usage.gpu_seconds == env.busy_us / 1e6

    job = await store.get("job_moved")
    assert job.status == "completed"
    assert set(job.models) == {"alpha"} and job.models["alpha"].succeeded == 3  # counted as named
    assert list(job.usage.by_model) == ["beta"]  # charged to the model that served them
    beta = job.usage.by_model["beta"]
    assert beta.requests == 3
    assert round(beta.cost * 1e6) == sum(e.cost_micros for e in envelopes) == round(job.usage.cost * 1e6)
    assert round(beta.gpu_seconds * 1e6) == sum(e.busy_us for e in envelopes)
    # the unfinished count is the named model's: back to 0; beta's was never touched
    assert int(await r.hget(keys.flow("alpha"), FlowField.UNFINISHED)) == 0
    assert await r.hget(keys.flow("beta"), FlowField.UNFINISHED) is None
    day = keys.spend("day", period_id("day", datetime.now(UTC)))
    assert int(await r.hget(day, spend_field("acme", "beta"))) == sum(e.cost_micros for e in envelopes)


PRICED_MODELS = """
[models.timed]
engine = "dummy"
max_inflight = 4
price_per_hour = 3600.0
[models.timed.options]
latency_ms = 100

[models.tokens]
engine = "dummy"
max_inflight = 8
price_per_million_tokens = 3.0
[models.tokens.options]
latency_ms = 5
"""


def _micros(usd: float) -> int:
    return round(usd * 1_000_000)


@pytest.mark.e2e
def test_a_jobs_cost_is_the_sum_of_its_result_lines_per_serving_model_and_tenant(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(PRICED_MODELS)
    body = {
        "requests": [{"custom_id": f"t{i}", "model": "timed", "prompt": f"timed prompt {i}"} for i in range(12)]
        + [{"custom_id": f"k{i}", "model": "tokens", "prompt": "a b c d " * (i + 1)} for i in range(6)]
    }
    with LocalStack(models, workdir=tmp_path / "stack") as stack:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            began = time.monotonic()
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 60
            while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] != "completed":
                assert time.monotonic() < deadline, job
                stack.check_alive()
                time.sleep(0.1)
            wall = time.monotonic() - began
            lines = [json.loads(l) for l in client.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
        assert len(lines) == 18 and all(l["status"] == "succeeded" for l in lines)
        assert all(l["served_by"] == l["model"] and l["fallback_reason"] is None for l in lines)

        by_model: dict[str, list[dict]] = {"timed": [], "tokens": []}
        for line in lines:
            by_model[line["model"]].append(line)
        for line in by_model["timed"]:  # $3600 per busy hour: one micro-dollar per busy µs
            assert 0 < line["usage"]["gpu_seconds"] <= wall
            assert _micros(line["usage"]["cost"]) == _micros(line["usage"]["gpu_seconds"])
        for line in by_model["tokens"]:  # $3 per million tokens, and nothing for time
            u = line["usage"]
            assert u["gpu_seconds"] > 0
            assert _micros(u["cost"]) == 3 * (u["prompt_tokens"] + u["completion_tokens"])

        usage = job["usage"]
        sums = {m: sum(_micros(l["usage"]["cost"]) for l in ls) for m, ls in by_model.items()}
        busy = {m: sum(_micros(l["usage"]["gpu_seconds"]) for l in ls) for m, ls in by_model.items()}
        assert _micros(usage["cost"]) == sums["timed"] + sums["tokens"]  # to the micro-dollar
        assert round(usage["cost"], 2) == round(sum(l["usage"]["cost"] for l in lines), 2)  # so to the cent
        assert _micros(usage["gpu_seconds"]) == busy["timed"] + busy["tokens"]
        assert usage["by_model"] == {
            m: {"requests": len(by_model[m]), "gpu_seconds": busy[m] / 1e6, "cost": sums[m] / 1e6}
            for m in ("timed", "tokens")
        }
        # 12 requests of 100 ms, at most 4 at a time: the worker was busy at least 0.3 s
        assert 0.3 <= usage["by_model"]["timed"]["gpu_seconds"] <= wall
        assert usage["prompt_tokens"] == sum(l["usage"]["prompt_tokens"] for l in lines)

        keys = Keys("inferq")
        db = redis.Redis.from_url(stack.redis_url)
        now = datetime.now(UTC)
        for period in ("day", "month"):
            key = keys.spend(period, period_id(period, now))
            spend = {k.decode(): int(v) for k, v in db.hgetall(key).items()}
            assert spend == {
                spend_field("default", "timed"): sums["timed"],
                spend_field("default", "tokens"): sums["tokens"],
            }
            assert db.ttl(key) > 0
        (event,) = [
            json.loads(f[EVENT_FIELD.encode()])
            for _, f in db.xrange(keys.events_stream)
            if f[b"type"] == b"job.completed"
        ]
        assert event["data"]["usage"] == usage  # the job event carries the same usage

        env = {**os.environ, "INFERQ_URL": stack.base_url, "COLUMNS": "120"}
        cli = [sys.executable, "-m", "inferq.cli"]
        status = subprocess.run([*cli, "status", job_id], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["usage"] == usage
        total = f"cost {usd_text(usage['cost'])} ({usage['gpu_seconds']:.3f} GPU-seconds)"
        assert total in status.stderr
        for model in ("timed", "tokens"):
            (row,) = [l.split() for l in status.stderr.splitlines() if l.split()[:1] == [model]]
            assert row[1] == str(len(by_model[model])) and row[3] == usd_text(sums[model] / 1e6)
        followed = subprocess.run(
            [*cli, "results", job_id, "--wait", "--out", str(tmp_path / "r.jsonl")],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert followed.returncode == 0 and total in followed.stdout


async def test_a_request_cancelled_while_running_is_charged_for_the_time_it_ran(r, keys):
    models = parse_models(MOVED_MODELS)
    store = JobStore(r, keys)
    req = InferenceRequest(
        request_id="req_long",
        job_id="job_cut",
        custom_id="long",
        model="beta",
        accepted_ms=int(time.time() * 1000),
        prompt="x",
        params=SamplingParams(max_tokens=8),
    )
    await store.create("job_cut", int(time.time() * 1000), {"beta": 1}, {}, [])
    await r.xadd(keys.model_stream("beta", "batch"), {PAYLOAD_FIELD: enc.encode(req)})
    worker = InferenceWorker(r, keys, models.get("beta"), DummyEngine(DummyOptions(latency_ms=30_000)), block_ms=100)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def running():
        return bool(worker.inflight)

    async def published():
        return len(await published_results(r, keys)) == 1

    await _until(running)
    await asyncio.sleep(0.3)
    await store.stop("job_cut", "cancelled")
    await _until(published)
    stop.set()
    await task
    await ensure_group(r, keys.results_stream, COLLECTOR_GROUP)
    reply = await r.xreadgroup(COLLECTOR_GROUP, "c", {keys.results_stream: ">"}, count=10)
    await Collector(r, keys, store).handle(reply[0][1])

    (line,) = [msgspec.json.decode(raw, type=ResultLine) for _, raw in await store.read_results("job_cut", None, 10)]
    assert line.status == "cancelled" and line.error.code == "job_cancelled"
    assert line.served_by == "beta"  # it ran there: 0.3 s or more, until the abort (within 0.5 s more)
    assert 0.3 <= line.usage.gpu_seconds < 1.5
    assert line.usage.cost == round(line.usage.gpu_seconds * 1e6 * 36 / 3600) / 1e6
    job = await store.get("job_cut")
    assert job.status == "cancelled"
    assert job.usage.cost == line.usage.cost and job.usage.by_model["beta"].requests == 1
