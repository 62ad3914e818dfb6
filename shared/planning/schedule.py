"""When a model finishes a job's requests, from the work queued for it and its replicas: a fluid
model of the router's feed (services/dispatcher/lua/feed.lua, shared/redis/lua/lib/staging.lua).

The feed serves a model's interactive lane before its batch lane. Within a lane, three of every
four turns go to the job with the earliest deadline, the fourth goes round-robin over every job
waiting; jobs without a deadline share their turns equally. In the fluid version work is measured
in worker busy seconds, and a model with R replicas does R busy seconds each second. So the work
served before a job's last request is:

- every interactive request ahead of a batch job (strict priority);
- for a job without a deadline: min(r_i, r_J) of each other job without one (equal shares), and
  deadline work at three times that pace, as much as there is;
- for a job with a deadline: all the work of jobs with an earlier (or equal) deadline, and work
  without a deadline at a third of that pace.

No I/O: the dispatcher's planner and the ingest's quote both call it on the same published plan.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import accumulate

from msgspec import Struct

DEADLINE_TURNS = 3  # of every DEADLINE_TURNS + 1 turns in a lane, those that go to the earliest deadline


class QueuedWork(Struct, array_like=True):
    """One job's unfinished requests on one model, as the plan publishes them."""

    job_id: str
    lane: str  # interactive | batch
    deadline_ms: int  # 0: none
    requests: int


class Backlog:
    """A model's queued work, indexed so that `before` costs O(log n) per job."""

    def __init__(self, work: list[QueuedWork], per_request_s: float) -> None:
        self.per_s = per_request_s
        self.members = {w.job_id: w for w in work}
        self.interactive = 0.0
        self._plain: dict[str, tuple[list[float], list[float]]] = {}  # lane -> (sizes sorted, prefix sums)
        self._deadlines: dict[str, tuple[list[int], list[float]]] = {}  # lane -> (deadlines sorted, prefix sums)
        plain: dict[str, list[float]] = {}
        dated: dict[str, list[tuple[int, float]]] = {}
        for w in work:
            if w.requests <= 0:
                continue
            size = w.requests * per_request_s
            if w.lane == "interactive":
                self.interactive += size
            if w.deadline_ms:
                dated.setdefault(w.lane, []).append((w.deadline_ms, size))
            else:
                plain.setdefault(w.lane, []).append(size)
        for lane, sizes in plain.items():
            sizes.sort()
            self._plain[lane] = (sizes, list(accumulate(sizes, initial=0.0)))
        for lane, pairs in dated.items():
            pairs.sort()
            self._deadlines[lane] = ([d for d, _ in pairs], list(accumulate((s for _, s in pairs), initial=0.0)))

    def before(self, job: QueuedWork, job_s: float) -> float:
        """Busy seconds the model serves before `job`'s last request, its own `job_s` included
        (the job's own entry in the backlog, if any, stands for the same requests: not counted twice)."""
        listed = self.members.get(job.job_id)
        mine = listed.requests * self.per_s if listed is not None and listed.requests > 0 else 0.0
        ahead = 0.0
        if job.lane != "interactive":
            ahead = self.interactive  # served first; batch work never is ahead of interactive work
        sizes, sums = self._plain.get(job.lane, ([], [0.0]))
        plain_total = sums[-1] - (mine if listed is not None and not listed.deadline_ms else 0.0)
        dates, dsums = self._deadlines.get(job.lane, ([], [0.0]))
        if job.deadline_ms:
            earlier = dsums[bisect_right(dates, job.deadline_ms)]
            if listed is not None and listed.deadline_ms and listed.deadline_ms <= job.deadline_ms:
                earlier -= mine
            dated = earlier + job_s
            # work without a deadline keeps its fourth of the turns while the deadline work waits
            return ahead + dated + min(plain_total, dated / DEADLINE_TURNS)
        k = bisect_right(sizes, job_s)
        shares = sums[k] + (len(sizes) - k) * job_s  # equal shares: min(size, job_s) of each
        if listed is not None and not listed.deadline_ms:
            shares -= min(mine, job_s)
        own = shares + job_s
        dated_total = dsums[-1] - (mine if listed is not None and listed.deadline_ms else 0.0)
        return ahead + own + min(dated_total, own * DEADLINE_TURNS)


def seconds_to_do(work_s: float, current: int, replicas: int, boot_s: float) -> float:
    """Wall seconds to serve `work_s` busy seconds with `current` replicas serving now and
    `replicas` in all once the ones started now are ready, `boot_s` from now."""
    if work_s <= 0:
        return 0.0 if current > 0 else (boot_s if replicas > 0 else math.inf)
    replicas = max(replicas, current)
    if replicas <= 0:
        return math.inf
    if current >= replicas:
        return work_s / current
    early = current * boot_s  # what the running replicas do while the others start
    if current > 0 and work_s <= early:
        return work_s / current
    return boot_s + (work_s - early) / replicas


def work_within(within_s: float, current: int, replicas: int, boot_s: float) -> float:
    """Busy seconds served in `within_s` wall seconds (the inverse of seconds_to_do)."""
    if within_s <= 0:
        return 0.0
    replicas = max(replicas, current)
    if current >= replicas:
        return current * within_s
    if within_s <= boot_s:
        return current * within_s
    return current * boot_s + replicas * (within_s - boot_s)


def replicas_for(work_s: float, within_s: float, current: int, boot_s: float, most: int) -> int | None:
    """The fewest replicas (at least `current`, at most `most`) that serve `work_s` busy seconds
    within `within_s` wall seconds; None when even `most` cannot."""
    for n in range(max(1, current), most + 1):
        if seconds_to_do(work_s, current, n, boot_s) <= within_s:
            return n
    return None
