"""What Redis spends per request over a measured window: CPU (INFO CPU), time per command family
(INFO COMMANDSTATS) and bytes appended to the AOF, so a change to the pipeline is judged by the
work it saves in Redis, not only by throughput on a shared machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
AOF_POLL_S = 0.02


class RedisCost:
    """Usage: `cost = await RedisCost.start(r, aof_dir)`, run the work, `await cost.stop(requests)`.

    AOF bytes are the growth of the incremental AOF files: polled, with each file's largest size
    kept, because a rewrite starts a new file and later deletes the old ones (which no longer grow
    once the new one exists)."""

    def __init__(self, r: aioredis.Redis, aof_dir: Path | None) -> None:
        self.r = r
        self.aof_dir = aof_dir
        self._cpu0: dict[str, float] = {}
        self._cmd0: dict[str, dict] = {}
        self._aof0: dict[str, int] = {}
        self._aof_max: dict[str, int] = {}
        self._poller: asyncio.Task | None = None
        self._rewrites0 = 0

    @classmethod
    async def start(cls, r: aioredis.Redis, aof_dir: Path | None) -> RedisCost:
        self = cls(r, aof_dir)
        self._aof0 = self._incr_sizes()
        self._aof_max = dict(self._aof0)
        self._cpu0 = await r.info("cpu")
        self._cmd0 = await r.info("commandstats")
        self._rewrites0 = int((await r.info("persistence")).get("aof_rewrites", 0))
        self._poller = asyncio.create_task(self._poll())
        return self

    def _incr_sizes(self) -> dict[str, int]:
        if self.aof_dir is None or not self.aof_dir.is_dir():
            return {}
        sizes = {}
        for entry in os.scandir(self.aof_dir):
            if entry.name.endswith(".incr.aof"):
                try:
                    sizes[entry.name] = entry.stat().st_size
                except FileNotFoundError:
                    pass
        return sizes

    async def _poll(self) -> None:
        while True:
            for name, size in self._incr_sizes().items():
                if size > self._aof_max.get(name, 0):
                    self._aof_max[name] = size
            await asyncio.sleep(AOF_POLL_S)

    async def stop(self, requests: int) -> dict:
        assert self._poller is not None
        self._poller.cancel()
        await asyncio.gather(self._poller, return_exceptions=True)
        for name, size in self._incr_sizes().items():
            self._aof_max[name] = max(size, self._aof_max.get(name, 0))
        cpu = await self.r.info("cpu")
        cmd = await self.r.info("commandstats")
        rewrites = int((await self.r.info("persistence")).get("aof_rewrites", 0)) - self._rewrites0

        def spent(keys: tuple[str, ...]) -> float:
            return sum(float(cpu[k]) - float(self._cpu0[k]) for k in keys)

        main_s = spent(("used_cpu_user", "used_cpu_sys"))
        children_s = spent(("used_cpu_user_children", "used_cpu_sys_children"))
        families = {}
        for key, now in cmd.items():
            before = self._cmd0.get(key, {"calls": 0, "usec": 0})
            calls, usec = int(now["calls"]) - int(before["calls"]), int(now["usec"]) - int(before["usec"])
            if calls > 0:
                families[key.removeprefix("cmdstat_")] = {
                    "calls_per_request": calls / requests,
                    "usec_per_request": usec / requests,
                }
        families = dict(sorted(families.items(), key=lambda kv: -kv[1]["usec_per_request"]))
        aof_bytes = sum(size - self._aof0.get(name, 0) for name, size in self._aof_max.items())
        return {
            "requests": requests,
            "cpu_us_per_request": main_s * 1e6 / requests,
            "rewrite_cpu_us_per_request": children_s * 1e6 / requests,
            "aof_bytes_per_request": aof_bytes / requests if self.aof_dir is not None else None,
            "aof_rewrites": rewrites,
            "commands": families,
        }


def summary(cost: dict, top: int = 8) -> str:
    """One line: the costliest command families in µs per request (EVALSHA includes what its
    scripts call, which also appear under their own names)."""
    parts = [f"{name} {f['usec_per_request']:.1f}" for name, f in list(cost["commands"].items())[:top]]
    return ", ".join(parts)


class ScriptTimes:
    """Redis time per script over a measured window, from the slow log with every call logged
    (EVALSHA's own figure mixes all scripts). Logging every command costs Redis a little, so this
    runs in a pass of its own, apart from the CPU and AOF figures. Redis logs the commands a
    script calls too; only the EVALSHA entries are counted. Names come from the script texts'
    SHA1s (shared/redis/scripts.py), which every process shares."""

    SLOWLOG_MAX = 1_000_000

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self._saved: dict[str, str] = {}

    @classmethod
    async def start(cls, r: aioredis.Redis) -> ScriptTimes:
        self = cls(r)
        for name in ("slowlog-log-slower-than", "slowlog-max-len"):
            [self._saved[name]] = (await r.config_get(name)).values()
        await r.config_set("slowlog-max-len", self.SLOWLOG_MAX)
        await r.config_set("slowlog-log-slower-than", 0)
        await r.slowlog_reset()
        return self

    async def stop(self, requests: int) -> dict[str, dict[str, float]]:
        await self.r.config_set("slowlog-log-slower-than", -1)
        log = await self.r.slowlog_get(self.SLOWLOG_MAX)
        await self.r.slowlog_reset()
        for name, value in self._saved.items():
            await self.r.config_set(name, value)
        if len(log) >= self.SLOWLOG_MAX:  # the oldest calls were dropped (the commands scripts call count too)
            raise RuntimeError(f"the slow log filled ({self.SLOWLOG_MAX:,} calls): time fewer requests")
        names = _script_names()
        spent: dict[str, list[int]] = {}
        for entry in log:
            command = entry["command"].split(b" ")
            if command[0].lower() != b"evalsha" or len(command) < 2:
                continue
            name = names.get(command[1].decode(), command[1].decode()[:8])
            calls_us = spent.setdefault(name, [0, 0])
            calls_us[0] += 1
            calls_us[1] += entry["duration"]
        ranked = sorted(spent.items(), key=lambda kv: -kv[1][1])
        return {
            name: {"calls_per_request": calls / requests, "usec_per_request": us / requests}
            for name, (calls, us) in ranked
        }


def _script_names() -> dict[str, str]:
    from shared.redis import scripts

    out = {}
    for path in sorted(p for top in ("shared", "services") for p in (ROOT / top).rglob("lua/*.lua")):
        package = ".".join(path.parent.parent.relative_to(ROOT).parts)
        out[hashlib.sha1(scripts.source(package, path.stem).encode()).hexdigest()] = path.stem
    return out


def script_summary(times: dict[str, dict[str, float]], top: int = 6) -> str:
    return ", ".join(f"{name} {t['usec_per_request']:.1f}" for name, t in list(times.items())[:top])
