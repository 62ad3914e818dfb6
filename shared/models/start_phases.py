"""How long a worker took to become useful, phase by phase: written by each worker once it has
served its first request, read by GET /v1/models and by the autoscaler (which starts replicas
that much ahead of need). One record per model: the latest start (`StartPhases`, shared/wire/api.py)."""

from __future__ import annotations

import os
import time

import msgspec
import redis.asyncio as aioredis

from shared.redis.keys import Keys
from shared.wire.api import StartPhases


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc); elsewhere since this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StartPhases)


async def record(r: aioredis.Redis, keys: Keys, model: str, phases: StartPhases) -> None:
    await r.hset(keys.start_phases, model, _encoder.encode(phases))  # type: ignore[misc,arg-type]


async def read_all(r: aioredis.Redis, keys: Keys) -> dict[str, StartPhases]:
    raw = await r.hgetall(keys.start_phases)  # type: ignore[misc]
    out = {}
    for model, value in raw.items():
        try:
            out[model.decode()] = _decoder.decode(value)
        except msgspec.DecodeError:  # written by another version: as if never measured
            continue
    return out
