"""The latency floor on this machine: what one request costs with nothing else to do.

- `wake_latency`: a process blocked in XREADGROUP, as every inferq consumer waits, is handed an
  entry another process adds; the time from just before that XADD until the woken process has
  parsed the reply (redis-py's asyncio client, both clocks the same host's). A request crosses
  such a wake-up at each hop: ingest to worker, the worker's mark-started reply, worker to
  collector, the collector's reply.
- `idle_requests`: single-request jobs, one at a time, through the whole stack, measured like the
  latency test (the result's results-stream entry time minus the job's acceptance time, both in
  whole milliseconds), split at the moment the worker starts the request (its `queued_ms`).

    .venv/bin/python bench/latency_floor.py    # the wake-up alone, on a Redis of its own
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.quantiles import percentile  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402

_WAKER = """
import asyncio, sys, time
import redis.asyncio as aioredis

async def main(url, n):
    r = aioredis.Redis.from_url(url)
    await r.rpush("floor:wake:ready", "1")
    got = 0
    while got < n:
        reply = await r.xreadgroup("g", "c", {"floor:wake": ">"}, count=10, block=1000)
        now = time.time()
        for _, entries in reply or ():
            for _, fields in entries:
                await r.rpush("floor:wake:us", (now - float(fields[b"t"])) * 1e6)
                got += 1
    await r.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "min": values[0]}


async def wake_latency(redis_url: str, samples: int = 100, interval_s: float = 0.02) -> dict[str, float]:
    """µs from an XADD until a process blocked on the stream has the entry (p50, p90, min)."""
    r = aioredis.Redis.from_url(redis_url)
    await r.delete("floor:wake", "floor:wake:us", "floor:wake:ready")
    await r.xgroup_create("floor:wake", "g", id="0", mkstream=True)
    child = subprocess.Popen([sys.executable, "-c", _WAKER, redis_url, str(samples)])
    try:
        await r.blpop(["floor:wake:ready"], timeout=30)
        await asyncio.sleep(0.2)  # the child is blocked in its read
        for _ in range(samples):
            await r.xadd("floor:wake", {"t": repr(time.time())})
            await asyncio.sleep(interval_s)  # idle between samples: each wake-up starts from rest
        await asyncio.to_thread(child.wait, 30)
        values = [float(v) for v in await r.lrange("floor:wake:us", 0, -1)]
    finally:
        child.kill()
        await r.delete("floor:wake", "floor:wake:us", "floor:wake:ready")
        await r.aclose()
    return _summary(values)


class _Timings(msgspec.Struct):
    queued_ms: float


class _Line(msgspec.Struct):
    timings: _Timings


_line = msgspec.json.Decoder(_Line)


def _one_request_job(model: str, k: int) -> bytes:
    request = {"custom_id": str(k), "model": model, "prompt": f"one at a time {k}", "max_tokens": 8}
    return msgspec.json.encode({"requests": [request]})


async def idle_requests(
    base_url: str, r: aioredis.Redis, keys: Keys, model: str, jobs: int = 60, interval_s: float = 0.05
) -> dict[str, dict[str, float]]:
    """ms from acceptance until recorded for single-request jobs for `model` sent one at a time,
    and its two parts: until a worker starts the request, and from then until it is recorded."""
    job_ids = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for k in range(jobs):
            resp = await client.post(
                "/v1/jobs", content=_one_request_job(model, k), headers={"content-type": "application/json"}
            )
            resp.raise_for_status()
            job_ids.append(resp.json()["id"])
            await asyncio.sleep(interval_s)  # the previous one has finished: nothing else runs
    total, queued, after_start = [], [], []
    deadline = time.monotonic() + 30
    for job_id in job_ids:
        while not (entries := await r.xrange(keys.job_results(job_id))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} has no result after 30 s")
            await asyncio.sleep(0.05)
        created = int(await r.hget(keys.job(job_id), "created_ms"))
        entry_id, fields = entries[0]
        ms = int(entry_id.split(b"-")[0]) - created
        waited = _line.decode(fields[b"l"]).timings.queued_ms
        total.append(ms)
        queued.append(waited)
        after_start.append(ms - waited)
    return {"total_ms": _summary(total), "until_started_ms": _summary(queued), "after_start_ms": _summary(after_start)}


if __name__ == "__main__":
    from bench.scratch_redis import scratch_redis

    with scratch_redis() as url:
        print(asyncio.run(wake_latency(url)))
