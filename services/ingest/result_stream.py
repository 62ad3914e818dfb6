"""GET /v1/jobs/{id}/results without `limit`: every result line of the job as one chunked NDJSON
body, read from the job's results stream a page at a time, so the API's memory stays flat
whatever the job's size.

With `wait`, the body stays open until the job has ended, like `tail -f`: it blocks on the stream
for new lines, and ends only after reading the job's final status and then every line written
before it (the script that ends a job writes its last line first). A client that disconnects
cancels the generator at its next await, its Redis read included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from fastapi import Request

from shared.core.states import FINAL_JOB_STATES
from shared.jobs.store import JobStore
from shared.redis.keys import Keys

PAGE = 1000  # lines per Redis read and per chunk sent
BLOCK_MS = 5_000  # below the Redis socket timeout (see Settings.redis_socket_timeout_s)

Page = list[tuple[bytes, bytes]]


def chunk(rows: Page) -> bytes:
    return b"".join(line + b"\n" for _, line in rows)


async def result_lines(
    request: Request,
    r: aioredis.Redis,
    keys: Keys,
    jobs: JobStore,
    job_id: str,
    first: Page,
    after: str | None,
    wait: bool,
) -> AsyncIterator[bytes]:
    """The lines after `after`, starting with `first` (already read, so a failing Redis is a 503
    before the body starts); with `wait`, until the job has ended."""
    rows, cursor, ended = first, after, False
    while True:
        while rows:
            yield chunk(rows)
            cursor = rows[-1][0].decode()
            rows = await jobs.read_results(job_id, cursor, PAGE) if len(rows) == PAGE else []
        if not wait or ended:
            return
        status = await jobs.status(job_id)
        if status is None or status in FINAL_JOB_STATES:
            ended = True  # every line was written before (or with) the final status: one last drain
        elif await request.is_disconnected():
            return
        else:
            await r.xread({keys.job_results(job_id): cursor or "0-0"}, count=1, block=BLOCK_MS)
        rows = await jobs.read_results(job_id, cursor, PAGE)


async def page_when_ready(
    request: Request, r: aioredis.Redis, keys: Keys, jobs: JobStore, job_id: str, after: str | None, limit: int
) -> tuple[Page, str | None]:
    """A page with `wait` (a long poll): the lines after `after` as soon as there is one, or none
    once the job has ended; with the job's status as read before them. None when the client left."""
    while True:
        status = await jobs.status(job_id)
        rows = await jobs.read_results(job_id, after, limit)
        if rows or status is None or status in FINAL_JOB_STATES:
            return rows, status
        if await request.is_disconnected():
            return [], None
        await r.xread({keys.job_results(job_id): after or "0-0"}, count=1, block=BLOCK_MS)
