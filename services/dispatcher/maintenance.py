"""Periodic stream upkeep, run as an arq cron job by whichever dispatcher gets it first."""

from __future__ import annotations

from shared.keys import Keys
from shared.models_config import ModelsConfig
from shared.streams import trim_acknowledged


async def trim_streams(ctx: dict) -> int:
    """Keep internal streams bounded: drop entries every consumer group has acknowledged."""
    keys: Keys = ctx["keys"]
    models: ModelsConfig = ctx["models"]
    streams = [keys.ingest_stream, keys.results_stream, *(keys.model_stream(m) for m in models.names())]
    for stream in streams:
        await trim_acknowledged(ctx["stream_redis"], stream)
    return len(streams)
