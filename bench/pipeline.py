"""inferq's own figures, measured against a running stack (real processes, dummy engine at zero
latency): ingest acceptance rate, end-to-end throughput, open-loop latency, dispatcher memory."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import psutil
import redis.asyncio as aioredis

from bench.lean_http import LeanClient
from bench.quantiles import percentile
from shared.core.states import JobStatus
from shared.redis.keys import ROUTER_GROUP, Keys

MODELS = ("bench-a", "bench-b", "bench-c")
PARKED = "bench-parked"  # a model with no workers: its requests stay queued (the backlog test)


def job_body(n: int, models: tuple[str, ...] = MODELS, offset: int = 0) -> bytes:
    """A job of `n` requests spread over `models`, encoded once so the client's JSON work is not timed."""
    return json.dumps(
        {
            "requests": [
                {
                    "custom_id": str(offset + i),
                    "model": models[i % len(models)],
                    "prompt": f"benchmark prompt number {offset + i}",
                    "max_tokens": 8,
                }
                for i in range(n)
            ]
        }
    ).encode()


async def _job_hash(r: aioredis.Redis, keys: Keys, job_id: str) -> dict[bytes, bytes]:
    return await r.hgetall(keys.job(job_id))


async def _wait_done(r: aioredis.Redis, keys: Keys, job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(job_ids)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs did not finish within {timeout:.0f}s")
        pipe = r.pipeline(transaction=False)
        for job_id in pending:
            pipe.hget(keys.job(job_id), "status")
        statuses = await pipe.execute()
        pending = [
            j
            for j, s in zip(pending, statuses)
            if s not in (JobStatus.COMPLETED.value.encode(), JobStatus.FAILED.value.encode())
        ]
        if pending:
            await asyncio.sleep(0.005)


async def throughput(base_url: str, r: aioredis.Redis, keys: Keys, n: int, runs: int) -> list[dict[str, float]]:
    """Per run: acceptance rate of one `n`-request job (POST sent → 202 received) and end-to-end
    rate (POST sent → the job's last result recorded by the collector)."""
    body = job_body(n)
    out = []
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        for _ in range(runs):
            sent_ms = time.time() * 1000
            t0 = time.perf_counter()
            resp = await client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
            accepted_s = time.perf_counter() - t0
            resp.raise_for_status()
            job_id = resp.json()["id"]
            await _wait_done(r, keys, [job_id], timeout=300)
            ended_ms = int(await r.hget(keys.job(job_id), "ended_ms"))
            out.append(
                {
                    "ingest_rps": n / accepted_s,
                    "e2e_rps": n / ((ended_ms - sent_ms) / 1000),
                    "accepted_ms": accepted_s * 1000,
                    "e2e_s": (ended_ms - sent_ms) / 1000,
                }
            )
    return out


async def open_loop_latency(
    base_url: str, r: aioredis.Redis, keys: Keys, rate: float, seconds: float, per_job: int
) -> dict:
    """Submit jobs of `per_job` requests at a fixed arrival rate (requests/s), whatever the replies
    do (open loop), then take each request's latency as the time its result was recorded (the
    entry id of the job's results stream) minus the job's acceptance time."""
    interval = per_job / rate
    job_ids: list[str] = []
    lag_ms: list[float] = []
    client = LeanClient(base_url, connections=200)
    try:
        posts = [client.prepare_post("/v1/jobs", job_body(per_job, offset=k * per_job)) for k in range(64)]

        async def submit(k: int) -> None:
            status, reply = await asyncio.wait_for(client.send(posts[k % len(posts)]), timeout=60)
            if status != 202:
                raise RuntimeError(f"POST /v1/jobs answered {status}: {reply}")
            job_ids.append(reply["id"])

        tasks = []
        start = time.perf_counter()
        k = 0
        while (due := start + k * interval) < start + seconds:
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            lag_ms.append((time.perf_counter() - due) * 1000)
            tasks.append(asyncio.create_task(submit(k)))
            k += 1
        await asyncio.gather(*tasks)
        sent_s = time.perf_counter() - start
    finally:
        await client.close()
    await _wait_done(r, keys, job_ids, timeout=120)
    latencies: list[float] = []
    for k in range(0, len(job_ids), 200):
        pipe = r.pipeline(transaction=False)
        for job_id in job_ids[k : k + 200]:
            pipe.hget(keys.job(job_id), "created_ms")
            pipe.xrange(keys.job_results(job_id), count=per_job + 10)
        replies = await pipe.execute()
        for created, entries in zip(replies[0::2], replies[1::2]):
            for entry_id, _ in entries:
                latencies.append(int(entry_id.split(b"-")[0]) - int(created))
    latencies.sort()
    return {
        "offered_rps": rate,
        "achieved_rps": len(job_ids) * per_job / sent_s,
        "requests": len(latencies),
        "per_job": per_job,
        "send_lag_p99_ms": percentile(sorted(lag_ms), 0.99),
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
        "latencies_ms": latencies,
    }


async def dispatcher_memory(
    base_url: str, r: aioredis.Redis, keys: Keys, pid: int, backlog: int, per_job: int = 50_000
) -> dict:
    """RSS of the dispatcher while a backlog of `backlog` requests for a model without workers is
    admitted and held (staged in Redis, not in the dispatcher), sampled as it grows."""
    proc = psutil.Process(pid)
    idle = proc.memory_info().rss
    samples: list[tuple[int, int]] = []  # (requests admitted so far, rss)
    body = job_body(per_job, models=(PARKED,))
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        for _ in range(backlog // per_job):
            resp = await client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
            resp.raise_for_status()
            samples.append((await _admitted(r, keys), proc.memory_info().rss))
    deadline = time.monotonic() + 180
    while (admitted := await _admitted(r, keys)) < backlog and time.monotonic() < deadline:
        samples.append((admitted, proc.memory_info().rss))
        await asyncio.sleep(0.25)
    samples.append((await _admitted(r, keys), proc.memory_info().rss))
    queued = int(await r.hget(keys.flow(PARKED), "unfinished") or 0)
    peak = max(rss for _, rss in samples)
    at_tenth = next((rss for a, rss in samples if a >= backlog // 10), peak)
    return {
        "backlog": queued,
        "admitted": samples[-1][0],
        "idle_rss_mb": idle / 2**20,
        "rss_at_10pct_mb": at_tenth / 2**20,
        "rss_at_full_mb": samples[-1][1] / 2**20,
        "peak_rss_mb": peak / 2**20,
        "redis_used_mb": (await r.info("memory"))["used_memory"] / 2**20,
    }


async def _admitted(r: aioredis.Redis, keys: Keys) -> int:
    """Requests of the parked model that the router has taken off the ingest stream."""
    flow = await r.hgetall(keys.flow(PARKED))
    lanes = sum(int(v) for k, v in flow.items() if k.startswith(b"staged:"))
    streamed = sum([await r.xlen(s) for s in keys.model_streams(PARKED)])
    return lanes + streamed


async def ingest_backlog(r: aioredis.Redis, keys: Keys) -> int:
    groups = await r.xinfo_groups(keys.ingest_stream)
    return sum(int(g["lag"] or 0) + int(g["pending"]) for g in groups if g["name"] == ROUTER_GROUP.encode())
