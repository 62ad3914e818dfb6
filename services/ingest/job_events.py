"""GET /v1/jobs/{id}/events: a job's events as Server-Sent Events, live.

Request events are read from the job's results stream, so their SSE ids are results cursors: a
client that reconnects with Last-Event-ID continues after the last event it saw, missing nothing.
After the last result the job's own event (job.completed, job.cancelled, ...) is sent with SSE id
`end` (its document keeps the id it has on the events stream), and the stream closes. Comment
lines keep idle connections open through proxies."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import msgspec
import redis.asyncio as aioredis
from fastapi import Request

from services.ingest import patterns
from shared.core.states import FINAL_JOB_STATES
from shared.jobs.store import JobStore
from shared.redis.keys import Keys
from shared.wire.api import Job
from shared.wire.events import JobSummary, job_event, request_event_json, rfc3339_ms

END_ID = "end"
BLOCK_MS = 5_000
READ_COUNT = 500
KEEPALIVE_S = 15.0
_LAST_EVENT_ID_RE = re.compile(patterns.LAST_EVENT_ID)
_encoder = msgspec.json.Encoder()


class _LineIds(msgspec.Struct):
    request_id: str


_line_decoder = msgspec.json.Decoder(_LineIds)


def valid_last_event_id(value: str | None) -> bool:
    """None, `end`, or a results cursor (services/ingest/patterns.py)."""
    return value is None or _LAST_EVENT_ID_RE.fullmatch(value) is not None


async def job_events(
    request: Request, r: aioredis.Redis, keys: Keys, jobs: JobStore, job_id: str, last_event_id: str | None
) -> AsyncIterator[bytes]:
    if last_event_id == END_ID:
        return
    cursor = last_event_id or "0-0"
    stream = keys.job_results(job_id)
    last_sent = time.monotonic()
    yield b"retry: 2000\n\n"
    block: int | None = None  # wait for new lines only once the job is known to be running
    while True:
        reply = await r.xread({stream: cursor}, count=READ_COUNT, block=block)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            line = fields[b"l"]
            ms = int(entry_id.split(b"-")[0])
            doc = request_event_json(
                job_id, _line_decoder.decode(line).request_id, entry_id.decode(), line, rfc3339_ms(ms)
            )
            yield b"id: " + entry_id + b"\nevent: request.completed\ndata: " + doc + b"\n\n"
            cursor = entry_id.decode()
        if entries:
            last_sent = time.monotonic()
            if len(entries) == READ_COUNT:  # more may be waiting: read on before asking the job
                continue
        job = await jobs.get(job_id)
        if job is None:
            return
        if job.status in FINAL_JOB_STATES:
            # the script that finished the job wrote its last line first: nothing is left unread
            if await r.xrange(stream, min=f"({cursor}", max="+", count=1):
                continue
            yield (
                b"id: "
                + END_ID.encode()
                + b"\nevent: job."
                + job.status.encode()
                + b"\ndata: "
                + _encoder.encode(_final_event(job, await jobs.ended_ms(job_id)))
                + b"\n\n"
            )
            return
        block = BLOCK_MS
        if await request.is_disconnected():
            return
        if time.monotonic() - last_sent >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(0)


def _final_event(job: Job, ended_ms: int | None):
    ended_ms = ended_ms or int(time.time() * 1000)  # a finished job has one; this is a safeguard
    ended = ended_ms // 1000
    summary = JobSummary(
        id=job.id,
        status=job.status,
        request_counts=job.request_counts,
        usage=job.usage,
        created_at=job.created_at,
        ended_at=ended,
        results_url=f"/v1/jobs/{job.id}/results",
    )
    return job_event(summary, rfc3339_ms(ended_ms), ended_ms)
