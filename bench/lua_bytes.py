"""What a byte costs Redis when it passes through a Lua script, against a plain command.

Every string that enters the script's Lua state (an argument, each string `cmsgpack.unpack`
makes, each result of `..`) is a new Lua string, hashed over its whole length by the Lua that
Redis 7.0 embeds. A plain command copies the same bytes at memcpy speed. So the scripts' cost
grows with the payload bytes they carry, not only with their Redis calls.

    .venv/bin/python bench/lua_bytes.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.redis.luapack import lua_bytes, pack  # noqa: E402

PAYLOAD = 187  # bytes of one encoded request in the benchmark's jobs


async def _usec_per_call(r: aioredis.Redis, command: str, call, calls: int) -> float:
    await r.config_resetstat()
    for _ in range(calls):
        await call()
    stats = await r.info("commandstats")
    return float(stats[f"cmdstat_{command}"]["usec_per_call"])


async def measure(redis_url: str, payloads: int = 100, calls: int = 300) -> dict[str, float]:
    """ns per argument byte: a SET of the bytes, a script given them (returning at once), and a
    script that also unpacks them (`payloads` strings of PAYLOAD bytes, msgpack, as inferq sends them)."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        blob = pack([lua_bytes(b"x" * PAYLOAD) for _ in range(payloads)])
        small = pack([])
        noop = await r.script_load("return 1")
        unpack = await r.script_load("local t = cmsgpack.unpack(ARGV[1]) return #t")
        out = {}
        for name, command, call in (
            ("set", "set", lambda v: r.set("floor:lua-bytes", v)),
            ("script_argument", "evalsha", lambda v: r.evalsha(noop, 0, v)),
            ("script_argument_unpacked", "evalsha", lambda v: r.evalsha(unpack, 0, v)),
        ):
            base = await _usec_per_call(r, command, lambda c=call: c(small), calls)
            full = await _usec_per_call(r, command, lambda c=call: c(blob), calls)
            out[f"{name}_ns_per_byte"] = (full - base) * 1000 / len(blob)
        await r.delete("floor:lua-bytes")
        return out
    finally:
        await r.aclose()


if __name__ == "__main__":
    from bench.scratch_redis import scratch_redis

    with scratch_redis() as url:
        for name, ns in asyncio.run(measure(url)).items():
            print(f"{name:40s} {ns:6.2f} ns")
