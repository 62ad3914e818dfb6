"""Periodic stream upkeep, run as an arq cron job by whichever dispatcher gets it first."""

from __future__ import annotations

import logging

from services.dispatcher.retention import enforce_retention
from shared.catalog.models import ModelsConfig
from shared.core.errors import StopRefused
from shared.core.states import RequestStatus
from shared.jobs.store import JobStore
from shared.redis.keys import Keys
from shared.redis.streams import trim_acknowledged

log = logging.getLogger("inferq.dispatcher")


async def expire_due_jobs(ctx: dict) -> int:
    """Jobs whose completion window has passed: stop them (status `expiring`); the collector
    finishes them as `expired` once their in-flight requests are done."""
    jobs: JobStore = ctx["jobs"]
    expired = 0
    for job_id in await jobs.due_for_expiry():
        try:
            await jobs.stop(job_id, RequestStatus.EXPIRED)
            expired += 1
            log.info("job expiring: completion window passed", extra={"job_id": job_id})
        except StopRefused:  # finished meanwhile, or gone
            await ctx["stream_redis"].zrem(ctx["keys"].deadlines, job_id)
    return expired


async def trim_streams(ctx: dict) -> int:
    """Keep internal streams bounded: drop entries every consumer group has acknowledged."""
    keys: Keys = ctx["keys"]
    models: ModelsConfig = ctx["models"]
    streams = [
        keys.ingest_stream,
        keys.results_stream,
        keys.webhook_events,
        *(s for m in models.names() for s in keys.model_streams(m)),
    ]
    for stream in streams:
        await trim_acknowledged(ctx["stream_redis"], stream)
    await forget_expired_jobs(ctx)
    await enforce_retention(ctx)
    return len(streams)


async def forget_expired_jobs(ctx: dict, batch: int = 500) -> int:
    """Drop the oldest entries of the jobs index whose job record has expired, from the global
    index and from their tenant's (`Keys.tenant_jobs`), whose name the job -> tenant hash keeps."""
    keys: Keys = ctx["keys"]
    r = ctx["stream_redis"]
    oldest = await r.zrange(keys.jobs_index, 0, batch - 1)
    if not oldest:
        return 0
    async with r.pipeline(transaction=False) as pipe:
        for job_id in oldest:
            pipe.exists(keys.job(job_id.decode()))
        alive = await pipe.execute()
    gone = [job_id for job_id, exists in zip(oldest, alive) if not exists]
    if not gone:
        return 0
    tenants = await r.hmget(keys.job_tenants, gone)
    async with r.pipeline(transaction=True) as pipe:
        for job_id, tenant in zip(gone, tenants):
            if tenant is not None:
                pipe.zrem(keys.tenant_jobs(tenant.decode()), job_id)
        pipe.hdel(keys.job_tenants, *gone)
        pipe.zrem(keys.jobs_index, *gone)
        await pipe.execute()
    return len(gone)
