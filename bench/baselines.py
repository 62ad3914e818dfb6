"""Reference points measured in the same run as inferq, on the same Redis: what plain Redis
streams and the naive "one arq job per prompt" design achieve on this machine."""

from __future__ import annotations

import asyncio
import time

import msgspec
import redis.asyncio as aioredis

from shared.wire.messages import InferenceRequest, SamplingParams

BATCH = 1000
_enc = msgspec.msgpack.Encoder()


def sample_payloads(n: int) -> list[bytes]:
    """Encoded requests the size of the ones inferq moves (prompt ~25 chars)."""
    return [
        _enc.encode(
            InferenceRequest(
                request_id=f"req_{i:012d}",
                job_id="job_baseline",
                custom_id=str(i),
                model="m",
                accepted_ms=0,
                prompt=f"benchmark prompt number {i}",
                params=SamplingParams(max_tokens=8),
            )
        )
        for i in range(n)
    ]


async def _xadd_batch(r: aioredis.Redis, stream: str, payloads: list[bytes]) -> None:
    pipe = r.pipeline(transaction=False)
    for p in payloads:
        pipe.xadd(stream, {"d": p})
    await pipe.execute()


async def raw_xadd(r: aioredis.Redis, payloads: list[bytes]) -> float:
    """Messages/s of pipelined XADD, 1000 per round trip."""
    stream = "baseline:xadd"
    t0 = time.perf_counter()
    for k in range(0, len(payloads), BATCH):
        await _xadd_batch(r, stream, payloads[k : k + BATCH])
    elapsed = time.perf_counter() - t0
    await r.delete(stream)
    return len(payloads) / elapsed


async def raw_hop(r: aioredis.Redis, payloads: list[bytes]) -> float:
    """Messages/s through one stream hop: pipelined XADD, XREADGROUP COUNT 1000, msgspec decode, XACK."""
    stream, group = "baseline:hop", "g"
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    decoder = msgspec.msgpack.Decoder(InferenceRequest)
    t0 = time.perf_counter()
    for k in range(0, len(payloads), BATCH):
        await _xadd_batch(r, stream, payloads[k : k + BATCH])
        reply = await r.xreadgroup(group, "c", {stream: ">"}, count=BATCH)
        entries = reply[0][1]
        for _, fields in entries:
            decoder.decode(fields[b"d"])
        await r.xack(stream, group, *[entry_id for entry_id, _ in entries])
    elapsed = time.perf_counter() - t0
    await r.delete(stream)
    return len(payloads) / elapsed


async def _noop(ctx, payload: bytes) -> None:
    return None


async def arq_per_prompt(redis_url: str, n: int) -> float:
    """Jobs/s end to end (first enqueue to last job done) with one arq job per prompt: enqueue
    them all, then a burst worker (max_jobs 200) runs a no-op for each."""
    from arq import Worker, create_pool
    from arq.connections import RedisSettings

    settings = RedisSettings.from_dsn(redis_url)
    pool = await create_pool(settings)
    payloads = sample_payloads(n)
    t0 = time.perf_counter()
    for p in payloads:
        await pool.enqueue_job("_noop", p)
    worker = Worker(
        functions=[_noop],
        redis_settings=settings,
        burst=True,
        max_jobs=200,
        poll_delay=0.05,
        keep_result=0,
        handle_signals=False,
    )
    worker.logger_disabled = True
    await worker.main()
    elapsed = time.perf_counter() - t0
    done = worker.jobs_complete
    await worker.close()
    await pool.aclose()
    if done != n:
        raise RuntimeError(f"arq ran {done} of {n} jobs")
    return n / elapsed


async def measure(redis_url: str, *, messages: int = 100_000, arq_jobs: int = 5_000, runs: int = 3) -> dict[str, float]:
    """Medians of `runs` runs (arq: one run, it is slow and steady): this machine is shared and
    single runs of the raw figures vary by ±30%."""
    import statistics

    r = aioredis.Redis.from_url(redis_url)
    payloads = sample_payloads(messages)
    try:
        xadd, hop = [], []
        for _ in range(runs):
            xadd.append(await raw_xadd(r, payloads))
            hop.append(await raw_hop(r, payloads))
        return {
            "raw_xadd": statistics.median(xadd),
            "raw_hop": statistics.median(hop),
            "raw_hop_runs": hop,
            "arq_per_prompt": await arq_per_prompt(redis_url, arq_jobs),
        }
    finally:
        await r.aclose()


if __name__ == "__main__":
    import sys

    from bench.scratch_redis import scratch_redis

    with scratch_redis() as url:
        print(asyncio.run(measure(url, messages=int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
