"""A job created the way ingest creates one (one ingest chunk), for tests that drive the collector
or the router in process."""

from __future__ import annotations

import time

import msgspec

from shared.jobs.store import JobStore
from shared.wire.messages import InferenceRequest, IngestChunk, SamplingParams

_enc = msgspec.msgpack.Encoder()


async def create_job(store: JobStore, job_id: str, n: int, created_ms: int | None = None) -> list[InferenceRequest]:
    """A job of `n` requests of model alpha (ids `<job_id>_<i>`), accepted at `created_ms` (now
    when None); its requests."""
    reqs = [
        InferenceRequest(
            request_id=f"{job_id}_{i}",
            job_id=job_id,
            custom_id=f"c{i}",
            model="alpha",
            accepted_ms=0,
            prompt="p",
            params=SamplingParams(max_tokens=4),
        )
        for i in range(n)
    ]
    chunk = _enc.encode(IngestChunk(job_id, [(q.model, "batch", _enc.encode(q)) for q in reqs]))
    accepted = created_ms if created_ms is not None else int(time.time() * 1000)
    await store.create(job_id, accepted, {"alpha": n}, {}, [chunk])
    return reqs
