"""Per-tenant submission rate: a token bucket in Redis (one script call per job), so every ingest
replica enforces the same limit. A job takes as many tokens as it has requests."""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis

from services.ingest.errors.client import ApiException
from services.ingest.token_bucket import TakeTokens
from shared.core.settings import Settings
from shared.redis.keys import Keys


class TenantLimits:
    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self.rate = settings.tenant_rate
        self.burst = settings.tenant_burst or settings.max_requests_per_job
        self._take = TakeTokens(r)

    async def admit(self, tenant: str, requests: int) -> None:
        """429 with Retry-After when the tenant submits faster than its rate."""
        if self.rate <= 0:
            return
        if requests > self.burst:
            raise ApiException(
                429,
                f"rate limit: a job of {requests} requests is larger than this tenant's burst of "
                f"{self.burst}; split it",
                type="rate_limited",
                headers={"Retry-After": "1"},
            )
        ok, tokens = await self._take(
            bucket=self.keys.rate_bucket(tenant),
            rate=self.rate,
            burst=self.burst,
            cost=requests,
            now_ms=int(time.time() * 1000),
        )
        if not int(ok):
            wait = max(1, math.ceil((requests - float(tokens)) / self.rate))
            raise ApiException(
                429,
                f"rate limit: this tenant may submit {self.rate:g} requests/s (burst {self.burst}); "
                f"retry after {wait}s",
                type="rate_limited",
                headers={"Retry-After": str(wait)},
            )


def tenant_limit_error(exc, retry_after_s: int) -> ApiException:
    return ApiException(
        429,
        f"tenant limit: {exc.current} of your requests are queued or running and this job would "
        f"pass the limit of {exc.limit}; nothing was written, retry after {retry_after_s}s",
        type="tenant_limit",
        headers={"Retry-After": str(retry_after_s)},
    )
