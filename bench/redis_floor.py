"""The least Redis CPU per request that inferq's guarantees allow, measured on this machine.

Each layout below does, as plain pipelined commands (no Lua, no flow control, no staging, no
ingest stream, no budgets, no webhooks), only the writes that survive a crash with the AOF on:
the request appended to its model stream, a worker's group read (Redis logs it to the AOF as one
XCLAIM per entry), the request marked running, the worker's XACK with its results appended as one
entry, the collector's read, the request marked done, the job's result line stored and the
`request.completed` CloudEvent appended to the events stream, then the collector's XACK.

- `per_request_entries`: one stream entry per request, one CloudEvent per events-stream entry:
  what the documented contracts ask for (docs/events.md: one CloudEvent per entry).
- `bundled_entries`: many requests per model-stream entry and many result lines per stored
  entry; still one CloudEvent per events-stream entry.
- `bundled_with_event_batches`: also the CloudEvents many per events-stream entry, which would
  change the events stream's contract for every consumer.

The real pipeline cannot spend less than its layout's figure; what it spends above it is Lua,
flow control and the other hops.

    .venv/bin/python bench/redis_floor.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.baselines import sample_payloads  # noqa: E402
from shared.wire.api import Output, ResultLine, Timings, Usage  # noqa: E402
from shared.wire.events import request_event_json  # noqa: E402

BATCH = 250
LAYOUTS = ("per_request_entries", "bundled_entries", "bundled_with_event_batches")


def _line(i: int) -> bytes:
    return msgspec.json.encode(
        ResultLine(
            custom_id=str(i),
            request_id=f"req_{i:012d}",
            model="m",
            status="succeeded",
            output=Output(text="echo: benchmark prompt number 12345", finish_reason="stop"),
            usage=Usage(prompt_tokens=5, completion_tokens=8),
            error=None,
            timings=Timings(queued_ms=1.5, inference_ms=0.2),
        )
    )


async def _one_layout(r: aioredis.Redis, layout: str, payloads: list[bytes]) -> float:
    bundled = layout != "per_request_entries"
    event_batches = layout == "bundled_with_event_batches"
    model, results, lines, events = "floor:model", "floor:results", "floor:job:lines", "floor:events"
    await r.delete(model, results, lines, events, "floor:job:reqs", "floor:job")
    await r.xgroup_create(model, "workers", id="0", mkstream=True)
    await r.xgroup_create(results, "collector", id="0", mkstream=True)
    cpu0 = await r.info("cpu")
    for k in range(0, len(payloads), BATCH):
        batch = payloads[k : k + BATCH]
        rids = [f"req_{k + j:012d}" for j in range(len(batch))]
        line_docs = [_line(k + j) for j in range(len(batch))]
        pipe = r.pipeline(transaction=False)
        if bundled:
            pipe.xadd(model, {"p": b"".join(batch)})
        else:
            for p in batch:
                pipe.xadd(model, {"p": p})
        await pipe.execute()
        read = await r.xreadgroup("workers", "w1", {model: ">"}, count=BATCH)
        entry_ids = [entry_id for entry_id, _ in read[0][1]]
        await r.hset("floor:job:reqs", mapping=dict.fromkeys(rids, "r"))
        pipe = r.pipeline(transaction=True)
        pipe.xack(model, "workers", *entry_ids)
        pipe.xadd(results, {"b": b"".join(line_docs)})
        await pipe.execute()
        read = await r.xreadgroup("collector", "c1", {results: ">"}, count=10)
        pipe = r.pipeline(transaction=True)
        pipe.hmget("floor:job:reqs", rids)
        pipe.hset("floor:job:reqs", mapping=dict.fromkeys(rids, "d"))
        if bundled:
            pipe.xadd(lines, {"l": b"\n".join(line_docs)})
        else:
            for doc in line_docs:
                pipe.xadd(lines, {"l": doc})
        now = "2026-01-01T00:00:00.000Z"
        docs = [
            request_event_json("job_floor", rid, f"{k}-{j}", doc, now)
            for j, (rid, doc) in enumerate(zip(rids, line_docs))
        ]
        if event_batches:
            pipe.xadd(
                events, {"type": "batch", "event": b"[" + b",".join(docs) + b"]"}, maxlen=100_000, approximate=True
            )
        else:
            for doc in docs:
                pipe.xadd(
                    events,
                    {"type": "request.completed", "job": "job_floor", "event": doc},
                    maxlen=100_000,
                    approximate=True,
                )
        pipe.hincrby("floor:job", "done", len(rids))
        pipe.xack(results, "collector", *[entry_id for entry_id, _ in read[0][1]])
        await pipe.execute()
    cpu1 = await r.info("cpu")
    await r.delete(model, results, lines, events, "floor:job:reqs", "floor:job")
    seconds = sum(cpu1[k] - cpu0[k] for k in ("used_cpu_user", "used_cpu_sys"))
    return seconds * 1e6 / len(payloads)


async def measure(redis_url: str, requests: int = 50_000) -> dict[str, float]:
    """Redis CPU µs per request (main process; the AOF is written there, rewrites are not) per
    layout, on a Redis configured like inferq's (AOF on, fsync every second)."""
    r = aioredis.Redis.from_url(redis_url)
    [rewrite] = (await r.config_get("auto-aof-rewrite-percentage")).values()
    try:
        await r.config_set("auto-aof-rewrite-percentage", 0)  # a rewrite's child is not the floor
        payloads = sample_payloads(requests)
        return {layout: await _one_layout(r, layout, payloads) for layout in LAYOUTS}
    finally:
        await r.config_set("auto-aof-rewrite-percentage", rewrite)
        await r.aclose()


if __name__ == "__main__":
    from bench.scratch_redis import scratch_redis

    with scratch_redis() as url:
        for name, us in asyncio.run(measure(url)).items():
            print(f"{name:28s} {us:5.1f} µs per request")
