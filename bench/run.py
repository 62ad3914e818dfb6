"""`make bench`: baselines and inferq measured in one run on one machine, printed as a table with
ratios, saved to bench/results/<date>.json and .png.

    .venv/bin/python bench/run.py [--requests 50000] [--backlog 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import baselines, latency_floor, lua_bytes, pipeline, redis_floor, report  # noqa: E402
from bench.redis_cost import RedisCost, ScriptTimes, script_summary, summary  # noqa: E402
from inferq.localstack import LocalStack, RedisServer  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402


def process_cpu(stack: LocalStack) -> dict[str, float]:
    """CPU seconds (user + system) so far of each of the stack's processes, Redis's included."""
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    if stack.redis is not None and stack.redis.proc is not None:
        pids["redis"] = stack.redis.proc.pid
    out = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[name] = t.user + t.system
    return out


def cpu_during(stack: LocalStack, cpu0: dict[str, float], wall0: float, requests: int) -> dict[str, float]:
    """The stack's CPU (Redis included, the benchmark's client not) since `cpu0`, taken at `wall0`:
    µs per request, and the share of all the machine's cores it kept busy."""
    cpu1, wall = process_cpu(stack), time.perf_counter() - wall0
    spent = sum(cpu1[name] - cpu0[name] for name in cpu0)
    return {"us_per_request": spent * 1e6 / requests, "busy_share": spent / wall / (os.cpu_count() or 1)}


async def measure_inferq(stack: LocalStack, args) -> dict:
    r = aioredis.Redis.from_url(stack.redis_url)
    keys = Keys()
    try:
        # warm up: imports, connections, consumer groups, script caches
        await pipeline.throughput(stack.base_url, r, keys, 3000, runs=1)
        idle = await latency_floor.idle_requests(stack.base_url, r, keys, pipeline.MODELS[0])
        print(
            f"  one request at a time: {idle['total_ms']['p50']:.1f} ms p50 from acceptance until recorded, "
            f"{idle['until_started_ms']['p50']:.1f} ms of it until a worker starts it",
            flush=True,
        )
        aof_dir = stack.redis.dir / "appendonlydir" if stack.redis is not None else None
        cost = await RedisCost.start(r, aof_dir)
        cpu0 = process_cpu(stack)
        runs = await pipeline.throughput(stack.base_url, r, keys, args.requests, runs=args.runs)
        cpu1 = process_cpu(stack)
        redis_cost = await cost.stop(args.requests * args.runs)
        per_process = {name: (cpu1[name] - cpu0[name]) * 1e6 / (args.requests * args.runs) for name in cpu0}
        ingest = statistics.median(x["ingest_rps"] for x in runs)
        e2e = statistics.median(x["e2e_rps"] for x in runs)
        print(
            f"  throughput runs: {[round(x['e2e_rps']) for x in runs]} req/s end to end; "
            f"ingest {[round(x['ingest_rps']) for x in runs]} req/s",
            flush=True,
        )
        print(
            f"  Redis: {redis_cost['cpu_us_per_request']:.1f} µs CPU and "
            f"{redis_cost['aof_bytes_per_request'] or 0:,.0f} AOF bytes per request; "
            f"µs per request: {summary(redis_cost)}",
            flush=True,
        )
        # a pass of its own: logging every call costs Redis a little
        times = await ScriptTimes.start(r)
        await pipeline.throughput(stack.base_url, r, keys, args.requests, runs=1)
        scripts = await times.stop(args.requests)
        print(f"  Redis µs per request by script: {script_summary(scripts)}", flush=True)
        rate = e2e * args.load
        per_job = max(1, round(rate / args.jobs_per_s))
        cpu0, wall0 = process_cpu(stack), time.perf_counter()
        latency = await pipeline.open_loop_latency(
            stack.base_url, r, keys, rate=rate, seconds=args.latency_s, per_job=per_job
        )
        latency["cpu"] = cpu_during(stack, cpu0, wall0, latency["requests"])
        print(
            f"  latency: {latency['requests']:,} requests at {latency['achieved_rps']:,.0f} req/s: "
            f"p50 {latency['p50_ms']:.1f} ms p99 {latency['p99_ms']:.1f} ms; the stack used "
            f"{latency['cpu']['us_per_request']:.0f} µs of CPU per request, "
            f"{latency['cpu']['busy_share']:.0%} of the machine's cores",
            flush=True,
        )
        memory = await pipeline.dispatcher_memory(
            stack.base_url, r, keys, stack.procs["dispatcher-0"].pid, args.backlog
        )
        return {
            "job_requests": args.requests,
            "ingest_rps": ingest,
            "e2e_rps": e2e,
            "runs": runs,
            "redis": redis_cost,
            "redis_scripts": scripts,
            "process_cpu_us_per_request": per_process,
            "latency": latency,
            "idle_latency": idle,
            "dispatcher_memory": memory,
        }
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000, help="requests in the throughput job")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--load", type=float, default=0.5, help="latency test arrival rate, share of end-to-end maximum")
    ap.add_argument("--latency-s", type=float, default=10.0)
    ap.add_argument(
        "--jobs-per-s",
        type=float,
        default=100.0,
        help="latency test: jobs submitted per second (requests per job follow from the rate)",
    )
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    args = ap.parse_args()
    # the runs' Redis data (its AOF reaches a GB or more) and logs, deleted at the end
    work = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
    try:
        print("baselines (raw Redis, arq) ...", flush=True)
        server = RedisServer(work / "baseline-redis").start()
        try:
            base = asyncio.run(baselines.measure(server.url))
            print("Redis floor of the guarantees (plain commands, no Lua) ...", flush=True)
            floor = asyncio.run(redis_floor.measure(server.url))
            print("wake-up of a blocked stream read ...", flush=True)
            wake = asyncio.run(latency_floor.wake_latency(server.url))
            lua = asyncio.run(lua_bytes.measure(server.url))
        finally:
            server.stop()
        print("inferq (ingest + dispatcher + one dummy worker per model) ...", flush=True)
        env = {"INFERQ_LOG_LEVEL": "WARNING"}
        with LocalStack(ROOT / "bench/models.bench.toml", workdir=work, models=list(pipeline.MODELS), env=env) as stack:
            ours = asyncio.run(measure_inferq(stack, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "baselines": base,
        "redis_floor_us_per_request": floor,
        "wake_us": wake,
        "lua_ns_per_byte": lua,
        "inferq": ours,
    }
    print()
    print(report.table(res))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / datetime.date.today().isoformat()
    report.write_json(res, stem.with_suffix(".json"))
    report.plot(res, stem.with_suffix(".png"))
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")


if __name__ == "__main__":
    main()
