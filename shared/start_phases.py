"""How long a worker took to become useful, phase by phase: written by each worker once it has
served its first request, read by GET /v1/models and by the autoscaler (which starts replicas
that much ahead of need). One record per model: the latest start."""

from __future__ import annotations

import os
import time
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from msgspec import Struct

from shared.keys import Keys

Snapshot = Literal["none", "memory", "gpu"]


class StartPhases(Struct, kw_only=True):
    """Seconds since the worker's process started at which it had imported its engine, loaded the
    weights, had the engine ready, produced its first token and returned its first result.
    `weights_loaded_s` is unset where the engine loads them inside its own start (vLLM) and cannot
    tell the two apart; `first_token_s` where the engine does not stream (it returns whole
    outputs: transformers, dummy). The first token and result are engine ready plus the first
    request's own times: a wait for that first request is not counted."""

    at_ms: int  # when the start began (wall clock)
    imports_s: float
    engine_ready_s: float
    first_result_s: float
    weights_loaded_s: float | None = None
    first_token_s: float | None = None  # where the engine streams its first request (vLLM)
    snapshot: Snapshot = "none"  # what the start was restored from

    @property
    def boot_s(self) -> float:
        """From a process start to serving: what starting a replica ahead of need must cover."""
        return self.engine_ready_s


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
