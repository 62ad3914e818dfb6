"""Each sink's delivery state as GET /v1/sinks and the dashboard show it: its cursor and counters
(the hash the dispatcher's cursor script keeps) and its lag behind the events stream."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.catalog.sinks import HttpSink, SinkConfig
from shared.redis.keys import Keys, SinkField
from shared.wire.api import SinkInfo


async def read_sinks(r: aioredis.Redis, keys: Keys, sinks: dict[str, SinkConfig]) -> list[SinkInfo]:
    """In one round trip, by name."""
    names = sorted(sinks)
    pipe = r.pipeline(transaction=False)
    pipe.xinfo_stream(keys.events_stream)
    for name in names:
        pipe.hgetall(keys.sink(name))
        pipe.exists(keys.sink_lease(name))
    replies = await pipe.execute(raise_on_error=False)
    added = length = 0
    if not isinstance(replies[0], ResponseError):  # no events stream yet
        added, length = int(replies[0].get("entries-added", 0)), int(replies[0]["length"])
    out = []
    for i, name in enumerate(names):
        state = {k.decode(): v.decode() for k, v in replies[1 + 2 * i].items()}
        out.append(_info(name, sinks[name], state, bool(replies[2 + 2 * i]), added, length))
    return out


def _info(name: str, cfg: SinkConfig, state: dict[str, str], leased: bool, added: int, length: int) -> SinkInfo:
    def num(field: str) -> int:
        return int(state.get(field, 0))

    def seconds(field: str) -> int | None:
        return int(state[field]) // 1000 if field in state else None

    cursor = state.get(SinkField.CURSOR)
    if cursor is None:  # not started: what it will start with
        lag = length if cfg.start == "earliest" else 0
    else:
        lag = max(0, added - num(SinkField.SEEN))
    return SinkInfo(
        name=name,
        kind="http" if isinstance(cfg, HttpSink) else "nats",
        target=_shown_url(cfg.url) if isinstance(cfg, HttpSink) else ",".join(cfg.servers),
        mode=cfg.mode if isinstance(cfg, HttpSink) else None,
        subject=None if isinstance(cfg, HttpSink) else cfg.subject,
        types=list(cfg.types),
        tenants=list(cfg.tenants),
        cursor=cursor,
        lag=lag,
        delivered=num(SinkField.DELIVERED),
        lost=num(SinkField.LOST),
        rejected=num(SinkField.REJECTED),
        last_delivered_at=seconds(SinkField.DELIVERED_MS),
        last_error=state.get(SinkField.ERROR),
        last_error_at=seconds(SinkField.ERROR_MS),
        failing_since=seconds(SinkField.FAILING_SINCE_MS),
        delivering=leased,
    )


def _shown_url(url: str) -> str:
    """The URL without its query (which may carry a token): `?...` marks that there is one."""
    parts = urlsplit(url)
    return parts._replace(query="...", fragment="").geturl() if parts.query else parts._replace(fragment="").geturl()
