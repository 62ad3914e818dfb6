"""Router throughput: the flow-controlled router (admit to staging queues, then feed under
watermarks, round-robin between jobs) against a plain forwarder (XACK + XADD straight to the
model stream, as a router without flow control would do), on the same data in one run. Also
reports Redis memory per request waiting in the staging queues.

    .venv/bin/python bench/router_throughput.py [--requests 100000] [--jobs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch_redis import scratch_redis  # noqa: E402
from services.dispatcher.router import Router  # noqa: E402
from shared.catalog.models import parse_models  # noqa: E402
from shared.jobs.store import JobStore  # noqa: E402
from shared.redis.keys import PAYLOAD_FIELD, ROUTER_GROUP, Keys  # noqa: E402
from shared.redis.streams import ensure_group, read_new  # noqa: E402
from shared.wire.messages import InferenceRequest, IngestChunk, SamplingParams, chunk_decoder  # noqa: E402

MODELS = parse_models("""
[models.m1]
engine = "dummy"
[models.m1.flow]
high_watermark = 10000000
low_watermark = 5000000
[models.m2]
engine = "dummy"
[models.m2.flow]
high_watermark = 10000000
low_watermark = 5000000
""")

# The baseline: forward without staging (no flow control), one script call per read.
PLAIN_FORWARD = (Path(__file__).parent / "plain_forward.lua").read_text()

enc = msgspec.msgpack.Encoder()


async def fill(r, keys: Keys, n: int, jobs: int) -> None:
    store = JobStore(r, keys)
    per_job = n // jobs
    for j in range(jobs):
        job_id = f"job_bench{j}"
        items = []
        for i in range(per_job):
            model = "m1" if i % 2 else "m2"
            req = InferenceRequest(
                request_id=f"req_{j}_{i}",
                job_id=job_id,
                custom_id=str(i),
                model=model,
                accepted_ms=0,
                prompt=f"benchmark prompt number {i}",
                params=SamplingParams(max_tokens=16),
            )
            items.append((model, "batch", enc.encode(req)))
        chunks = [enc.encode(IngestChunk(job_id, items[k : k + 500])) for k in range(0, len(items), 500)]
        await store.create(job_id, 0, {"m1": per_job // 2, "m2": per_job - per_job // 2}, {}, chunks)


async def run_plain(r, keys: Keys, n: int) -> float:
    script = r.register_script(PLAIN_FORWARD)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    t0 = time.perf_counter()
    routed = 0
    while routed < n:
        entries = await read_new(r, keys.ingest_stream, ROUTER_GROUP, "plain", 8, None)
        streams = [keys.ingest_stream, keys.model_stream("m1", "batch"), keys.model_stream("m2", "batch")]
        args: list = [ROUTER_GROUP, PAYLOAD_FIELD]
        for entry_id, fields in entries:
            chunk = chunk_decoder.decode(fields[PAYLOAD_FIELD.encode()])
            args += (entry_id, len(chunk.items))
            for model, _, payload in chunk.items:
                args += (2 if model == "m1" else 3, payload)
            routed += len(chunk.items)
        await script(keys=streams, args=args)
    return time.perf_counter() - t0


async def run_flow(r, keys: Keys, n: int, empty: int) -> tuple[float, float, int]:
    router = Router(r, keys, MODELS)
    await ensure_group(r, keys.ingest_stream, ROUTER_GROUP)
    await router.prepare()
    t0 = time.perf_counter()
    while router.admitted < n:
        await router.admit(await read_new(r, keys.ingest_stream, ROUTER_GROUP, router.consumer, 8, None))
    admitted_s = time.perf_counter() - t0
    from shared.redis.streams import trim_acknowledged

    await trim_acknowledged(r, keys.ingest_stream)
    staged_bytes = (await r.info("memory"))["used_memory"] - empty
    while router.routed < n:
        await router.feed_all()
    return time.perf_counter() - t0, admitted_s, staged_bytes


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    with scratch_redis() as url:
        r = aioredis.Redis.from_url(url)
        keys = Keys("bench")
        n = args.requests
        empty = (await r.info("memory"))["used_memory"]
        await fill(r, keys, n, args.jobs)
        ingest_bytes = (await r.info("memory"))["used_memory"] - empty
        plain = await run_plain(r, keys, n)
        await r.flushall()
        await fill(r, keys, n, args.jobs)
        total, admit, staged_bytes = await run_flow(r, keys, n, empty)
        print(f"plain forwarder         : {n / plain:10,.0f} requests/s")
        print(f"flow-controlled router  : {n / total:10,.0f} requests/s  (admit {n / admit:,.0f}/s, then feed)")
        print(f"ratio flow / plain      : {plain / total:10.2f}")
        print(f"Redis memory per request in the ingest stream: {ingest_bytes / n:.0f} bytes")
        sample = InferenceRequest(
            request_id="req_0_0",
            job_id="job_bench0",
            custom_id="0",
            model="m1",
            accepted_ms=0,
            prompt="benchmark prompt number 0",
            params=SamplingParams(max_tokens=16),
        )
        print(
            f"Redis memory per staged request: {staged_bytes / n:.0f} bytes"
            f" (payload ~{len(enc.encode(sample)):d} bytes)"
        )
        await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
