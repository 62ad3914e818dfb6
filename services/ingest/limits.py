"""Per-tenant submission rate: a token bucket in Redis (one script call per job), so every ingest
replica enforces the same limit. A job takes as many tokens as it has requests."""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis

from services.ingest.errors import ApiException
from shared.keys import Keys
from shared.settings import Settings

# KEYS[1] bucket. ARGV: rate per s, burst, cost, now ms. Returns {granted (0/1), tokens left}.
_TAKE = """
local rate, burst, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens, ms = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ms) * rate / 1000)
local ok = 0
if tokens >= cost then tokens = tokens - cost; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {ok, tostring(tokens)}
"""


class TenantLimits:
    def __init__(self, r: aioredis.Redis, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self.rate = settings.tenant_rate
        self.burst = settings.tenant_burst or settings.max_requests_per_job
        self._take = r.register_script(_TAKE)

    async def admit(self, tenant: str, requests: int) -> None:
        """429 with Retry-After when the tenant submits faster than its rate."""
        if self.rate <= 0:
            return
        if requests > self.burst:
            raise ApiException(429, f"rate limit: a job of {requests} requests is larger than this tenant's burst of "
                                    f"{self.burst}; split it", type="rate_limited", headers={"Retry-After": "1"})
        ok, tokens = await self._take(keys=[self.keys.rate_bucket(tenant)],
                                      args=[self.rate, self.burst, requests, int(time.time() * 1000)])
        if not int(ok):
            wait = max(1, math.ceil((requests - float(tokens)) / self.rate))
            raise ApiException(429, f"rate limit: this tenant may submit {self.rate:g} requests/s (burst {self.burst}); "
                                    f"retry after {wait}s", type="rate_limited", headers={"Retry-After": str(wait)})


def tenant_limit_error(exc, retry_after_s: int) -> ApiException:
    return ApiException(429, f"tenant limit: {exc.current} of your requests are queued or running and this job would "
                             f"pass the limit of {exc.limit}; nothing was written, retry after {retry_after_s}s",
                        type="tenant_limit", headers={"Retry-After": str(retry_after_s)})
