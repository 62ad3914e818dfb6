"""Handing a batch over in order per job: a job's events one after another (the next only once the
previous was acknowledged), different jobs' side by side, all within one deadline. Shared by the
HTTP sink's single-event modes and the NATS sink, so both keep a job's events in stream order
whatever fails: after a failure, the job's later events are not sent at all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.dispatcher.sinks.events import Outcome, SinkEvent

NOT_SENT = Outcome("failed", "not sent: an earlier event of its job was not acknowledged")


async def in_job_order(
    events: list[SinkEvent], send_one: Callable[[SinkEvent], Awaitable[Outcome]], *, concurrency: int, deadline_s: float
) -> list[Outcome]:
    outcomes: dict[int, Outcome] = {}
    by_job: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        by_job.setdefault(event.job_id, []).append(i)
    gate = asyncio.Semaphore(concurrency)

    async def one_job(indexes: list[int]) -> None:
        async with gate:
            for i in indexes:
                outcome = await send_one(events[i])
                outcomes[i] = outcome
                if outcome.kind == "failed":
                    return

    tasks = [asyncio.create_task(one_job(ix)) for ix in by_job.values()]
    _, late = await asyncio.wait(tasks, timeout=deadline_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    timed_out = Outcome("failed", f"not acknowledged within {deadline_s:g} s")
    for indexes in by_job.values():  # a job's events after its first failure (or the deadline) fail too
        failed = False
        for i in indexes:
            got = outcomes.get(i)
            if failed or got is None:
                outcomes[i] = NOT_SENT if failed else timed_out
                failed = True
            elif got.kind == "failed":
                failed = True
    return [outcomes[i] for i in range(len(events))]
