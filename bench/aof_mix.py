"""What the AOF holds per request, by command and key family: runs the local stack (dummy engine),
one job of `--requests` requests, and parses the RESP commands Redis appended meanwhile.

    .venv/bin/python bench/aof_mix.py [--requests 30000]

AOF rewrites are switched off for the measured job, so the incremental file holds every command."""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import pipeline  # noqa: E402
from inferq.localstack import LocalStack  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402


def commands(buf: bytes):
    """(argv, bytes) of each RESP command in `buf`."""
    i = 0
    while i < len(buf):
        begin = i
        j = buf.index(b"\r\n", i)
        argc, i = int(buf[i + 1 : j]), j + 2
        argv = []
        for _ in range(argc):
            j = buf.index(b"\r\n", i)
            n, i = int(buf[i + 1 : j]), j + 2
            argv.append(buf[i : i + n])
            i += n + 2
        yield argv, i - begin


def family(key: str, prefix: str) -> str:
    """`stream:model`, `job`, `queue`...: the key's kind, without the names in it."""
    parts = key.removeprefix(prefix + ":").split(":")
    return ":".join(parts[:2]) if parts[0] == "stream" else parts[0]


async def measure(stack: LocalStack, n: int) -> list[tuple[str, float, float]]:
    assert stack.redis is not None and stack.redis_url  # the stack runs its own Redis, with AOF on
    r = aioredis.Redis.from_url(stack.redis_url)
    keys = Keys()
    try:
        await pipeline.throughput(stack.base_url, r, keys, 3000, runs=1)  # warm up
        await r.config_set("auto-aof-rewrite-percentage", 0)
        await r.bgrewriteaof()  # start from a fresh incremental file
        while (await r.info("persistence"))["aof_rewrite_in_progress"]:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        aof = stack.redis.dir / "appendonlydir"
        start = {f: f.stat().st_size for f in aof.glob("*.incr.aof")}
        await pipeline.throughput(stack.base_url, r, keys, n, runs=1)
        await asyncio.sleep(1.5)  # appendfsync everysec
        size: collections.Counter[str] = collections.Counter()
        count: collections.Counter[str] = collections.Counter()
        for f in aof.glob("*.incr.aof"):
            for argv, b in commands(f.read_bytes()[start.get(f, 0) :]):
                name = argv[0].decode().upper()
                label = f"{name} {family(argv[1].decode(), keys.prefix)}" if len(argv) > 1 else name
                size[label] += b
                count[label] += 1
        return [(label, b / n, count[label] / n) for label, b in size.most_common()]
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30_000)
    args = ap.parse_args()
    env = {"INFERQ_LOG_LEVEL": "WARNING"}
    with LocalStack(ROOT / "bench/models.bench.toml", models=list(pipeline.MODELS), env=env) as stack:
        rows = asyncio.run(measure(stack, args.requests))
    print(f"AOF bytes per request: {sum(b for _, b, _ in rows):,.0f}")
    for label, b, c in rows:
        if b >= 1:
            print(f"  {label:32s} {b:6.0f} B  {c:5.2f} commands per request")


if __name__ == "__main__":
    main()
