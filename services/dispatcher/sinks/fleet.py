"""The dispatcher's sinks: one runner per `[sinks.NAME]` table of the models file."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.dispatcher.sinks.http_sink import HttpSinkClient
from services.dispatcher.sinks.nats_sink import NatsSinkClient
from services.dispatcher.sinks.runner import SinkRunner
from shared.catalog.models import ModelsConfig
from shared.catalog.sinks import HttpSink
from shared.core.settings import Settings
from shared.redis.keys import Keys


def sink_runners(r: aioredis.Redis, keys: Keys, models: ModelsConfig, settings: Settings) -> list[SinkRunner]:
    """Raises ConfigError (naming the sink) for credentials the environment lacks."""
    runners = []
    for name, cfg in sorted(models.sinks.items()):
        client = HttpSinkClient(name, cfg, settings) if isinstance(cfg, HttpSink) else NatsSinkClient(name, cfg)
        runners.append(SinkRunner(r, keys, name, cfg, client))
    return runners
