"""A tenant's jobs, newest first, a page at a time (GET /v1/jobs).

Pages come from the tenant's own index (`Keys.tenant_jobs`), so a listing never reads another
tenant's jobs. Filters (status, one metadata pair) are applied to the records read, and one page
reads at most `SCAN_PER_PAGE` index entries: a filter that matches rarely gives pages with fewer
than `limit` jobs (even none) whose cursor still moves on, never an endless run of empty pages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.jobs.store import job_from_hash
from shared.redis import scripts
from shared.redis.keys import JobField, Keys
from shared.wire.api import Job, JobList

SCAN_PER_PAGE = 1000  # index entries one page reads at most
_BATCH = 100
# `<created ms>-<job id>`: the position itself, so a page continues right after it even when the
# cursor's job has left the index meanwhile
CURSOR_PATTERN = r"^(\d{1,15})-(job_[0-9a-z]{26})$"
_CURSOR_RE = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Position:
    """Where a page stopped in the index: the last entry's score (created ms) and job id."""

    created_ms: int
    job_id: str

    def cursor(self) -> str:
        return f"{self.created_ms}-{self.job_id}"


def parse_cursor(cursor: str) -> Position | None:
    """The position a `next_cursor` names, or None when it is not one."""
    m = _CURSOR_RE.match(cursor)
    return Position(int(m.group(1)), m.group(2)) if m else None


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    metadata: tuple[str, str] | None = None

    def matches(self, job: Job) -> bool:
        if self.status is not None and job.status != self.status:
            return False
        if self.metadata is not None:
            key, value = self.metadata
            return job.metadata.get(key) == value
        return True


class JobLister:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._after = scripts.register(r, __name__, "jobs_after")

    async def _entries(self, tenant: str, after: Position | None, count: int) -> list[Position]:
        args = [str(after.created_ms), after.job_id] if after else ["", ""]
        flat = await self._after(keys=[self.keys.tenant_jobs(tenant)], args=[*args, count])
        return [Position(int(float(flat[i + 1])), flat[i].decode()) for i in range(0, len(flat), 2)]

    async def _records(self, entries: list[Position]) -> list[dict[str, str]]:
        async with self.r.pipeline(transaction=False) as pipe:
            for e in entries:
                pipe.hgetall(self.keys.job(e.job_id))
            raw = await pipe.execute()
        return [{k.decode(): v.decode() for k, v in h.items()} for h in raw]

    async def page(self, tenant: str, limit: int, after: Position | None, where: JobFilter) -> JobList:
        """Up to `limit` matching jobs after `after`. `has_more` is true when a further match was
        seen, or when the page stopped at `SCAN_PER_PAGE` entries with more of the index left."""
        found: list[Job] = []
        position, scanned = after, 0
        last_returned = Position(0, "")
        while scanned < SCAN_PER_PAGE:
            count = min(_BATCH, SCAN_PER_PAGE - scanned)
            entries = await self._entries(tenant, position, count)
            for entry, h in zip(entries, await self._records(entries)):
                if not h or h.get(JobField.TENANT, "default") != tenant:
                    position, scanned = entry, scanned + 1
                    continue  # expired (the index is cleaned behind it), or not the caller's
                job = job_from_hash(h)
                if where.matches(job):
                    if found and len(found) == limit:  # one more than the page holds: there is more
                        return JobList(data=found, has_more=True, next_cursor=last_returned.cursor())
                    found.append(job)
                    last_returned = entry
                position, scanned = entry, scanned + 1
            if len(entries) < count:  # the end of the index
                return JobList(data=found, has_more=False, next_cursor=None)
        return JobList(data=found, has_more=True, next_cursor=position.cursor() if position else None)
