"""Stopping jobs that no worker would ever finish.

A job being cancelled or expired ends once each of its requests has a final state. Requests still
in a model's lane streams are normally dropped by the worker that reads them; when the model has no
live worker (none started, or every one died), nobody reads them and the job would stay
`cancelling` / `expiring` for good. Every second the dispatcher looks at the stopping jobs
(`Keys.stopping_jobs`, filled by the stop script), and for each model of theirs without a live
worker turns their entries into drop notices (shared/lanes/lua/drop_stranded.lua), which the collector
counts like a worker's. Staging queues need no such care: the stop script drains them and the
router drops a stopping job's requests instead of staging them.
"""

from __future__ import annotations

import logging

import msgspec

from shared.core.states import STOPPING_JOB_STATES
from shared.lanes.liveness import Liveness
from shared.lanes.takeover import DropStranded
from shared.redis.keys import PAYLOAD_FIELD, WORKER_GROUP, JobField, Keys

log = logging.getLogger("inferq.dispatcher")
SCAN_PAGE = 1000
_PAYLOAD = PAYLOAD_FIELD.encode()


class _JobOf(msgspec.Struct):
    """Only the job id of an encoded InferenceRequest (the rest is skipped, not decoded)."""

    job_id: str


# a request as accepted, or one moved from another model ([reason, request]: shared/wire/messages.py)
_job_of = msgspec.msgpack.Decoder(_JobOf | tuple[str, _JobOf])


async def finish_stranded_jobs(ctx: dict) -> int:
    """arq cron, every second: drop the stranded requests of stopping jobs. Returns how many."""
    keys: Keys = ctx["keys"]
    r = ctx["stream_redis"]
    liveness: Liveness = ctx["liveness"]
    ids = [i.decode() for i in await r.zrange(keys.stopping_jobs, 0, -1)]  # few: a stopping job ends soon
    if not ids:
        return 0
    async with r.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), [JobField.STATUS, JobField.ROUTES, JobField.MODELS])
        rows = await pipe.execute()
    ended: list[str] = []
    by_model: dict[str, set[str]] = {}  # model -> its stopping jobs
    for job_id, (status, routes, models) in zip(ids, rows):
        if status is None or status.decode() not in STOPPING_JOB_STATES:
            ended.append(job_id)  # finished (or expired from Redis): nothing left to watch
            continue
        for model in msgspec.json.decode(routes or models or b"[]", type=list[str]):
            by_model.setdefault(model, set()).add(job_id)
    if ended:
        await r.zrem(keys.stopping_jobs, *ended)
    dropper = DropStranded(r)
    dropped = 0
    for model, stopping in by_model.items():
        streams = keys.model_streams(model)
        if await liveness.any_alive(streams, WORKER_GROUP):
            continue  # its workers drop these requests when they read them
        found = [await _entries_of(r, stream, stopping) for stream in streams]
        for job_id in stopping:
            ids_per_lane = [lane.get(job_id, []) for lane in found]
            if not any(ids_per_lane):
                continue
            n = await dropper(
                job=keys.job(job_id), results_stream=keys.results_stream, streams=streams, entry_ids=ids_per_lane
            )
            if n:
                dropped += n
                log.warning(
                    "dropped %d requests of a stopping job: model %s has no live worker",
                    n,
                    model,
                    extra={"job_id": job_id},
                )
    return dropped


async def _entries_of(r, stream: str, job_ids: set[str]) -> dict[str, list[bytes]]:
    """The ids of the entries of `stream` that belong to these jobs, by job."""
    out: dict[str, list[bytes]] = {}
    start = "-"
    while True:
        page = await r.xrange(stream, min=start, max="+", count=SCAN_PAGE)
        for entry_id, fields in page:
            try:
                found = _job_of.decode(fields.get(_PAYLOAD, b""))
                job_id = (found[1] if isinstance(found, tuple) else found).job_id
            except msgspec.DecodeError:
                continue  # unreadable: the worker that reads it dead-letters it
            if job_id in job_ids:
                out.setdefault(job_id, []).append(entry_id)
        if len(page) < SCAN_PAGE:
            return out
        start = "(" + page[-1][0].decode()
