"""A sink's tenant and metadata filter: the tenant and metadata of each event's job, read once per
job (in one round trip per batch) and remembered for the next events of the job."""

from __future__ import annotations

from collections import OrderedDict

import msgspec
import redis.asyncio as aioredis

from shared.catalog.sinks import SinkConfig
from shared.redis.keys import JobField, Keys

DEFAULT_TENANT = "default"
_metadata = msgspec.json.Decoder(dict[str, str])


class JobFilter:
    def __init__(self, r: aioredis.Redis, keys: Keys, cfg: SinkConfig, remembered: int = 10_000) -> None:
        self.r, self.keys, self.cfg, self.remembered = r, keys, cfg, remembered
        self._jobs: OrderedDict[str, bool] = OrderedDict()

    async def wanted(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs' events the sink takes. A job whose record is gone (it expired
        before its events were read) cannot be placed in a tenant: a scoped sink skips it."""
        if self.cfg.wants_all_jobs():
            return set(job_ids)
        unknown = [j for j in dict.fromkeys(job_ids) if j not in self._jobs]
        if unknown:
            pipe = self.r.pipeline(transaction=False)
            for job_id in unknown:
                pipe.hmget(self.keys.job(job_id), [JobField.ID, JobField.TENANT, JobField.METADATA])
            for job_id, (found, tenant, metadata) in zip(unknown, await pipe.execute()):
                self._remember(job_id, found is not None and self._matches(tenant, metadata))
        return {j for j in job_ids if self._jobs.get(j)}

    def _matches(self, tenant: bytes | None, metadata: bytes | None) -> bool:
        if self.cfg.tenants and (tenant or DEFAULT_TENANT.encode()).decode() not in self.cfg.tenants:
            return False
        if self.cfg.metadata:
            try:
                meta = _metadata.decode(metadata or b"{}")
            except msgspec.DecodeError:
                return False
            return all(meta.get(k) == v for k, v in self.cfg.metadata.items())
        return True

    def _remember(self, job_id: str, wanted: bool) -> None:
        self._jobs[job_id] = wanted
        while len(self._jobs) > self.remembered:
            self._jobs.popitem(last=False)
