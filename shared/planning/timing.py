"""Finish times on a model's published plan: the schedule model (shared/planning/schedule.py) on
the plan's work, replicas and measured speed. The planner's ETAs and the ingest's quotes both
come from here."""

from __future__ import annotations

import math

from shared.planning.plan import ModelPlan
from shared.planning.schedule import Backlog, QueuedWork, seconds_to_do


class PlanTiming:
    """Finish times on one model's plan, on the replicas the plan aims at."""

    def __init__(self, plan: ModelPlan) -> None:
        self.plan = plan
        self.per_s = plan.speed.mean_replica_s  # replica seconds per request of the queued work
        self.known = plan.speed.calibrated_from > 0 and self.per_s > 0
        self.backlog = Backlog(plan.work, self.per_s) if self.known else None
        most = max(plan.max_replicas, plan.replicas)
        self.target = min(max(plan.replicas, plan.desired, plan.deadline_replicas), most)

    def finish_s(
        self, w: QueuedWork, job_s: float | None = None, replicas: int | None = None, extra_s: float = 0.0
    ) -> float | None:
        """Seconds from the plan's time until `w` is done (its work `job_s` in replica seconds,
        by default its requests at the model's mean), on `replicas` (default: the plan's target),
        with `extra_s` more replica seconds served first."""
        if self.backlog is None:
            return None
        own = w.requests * self.per_s if job_s is None else job_s
        before = self.backlog.before(w, own) + extra_s
        t = seconds_to_do(before, self.plan.replicas, self.target if replicas is None else replicas, self.plan.boot_s)
        return t if math.isfinite(t) else None
