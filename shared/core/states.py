"""The job and request state machines, defined once.

A job is `queued` until a worker starts one of its requests (`in_progress`); it ends `completed`
when every request has a final state. Cancel and expiry first mark it `cancelling` / `expiring`
(nothing more is routed or started; running requests are stopped), and it ends `cancelled` /
`expired` when every request is final. `failed` is reserved for a job that cannot run at all.

A request is final once it `succeeded`, `failed`, was `cancelled` or `expired`; before that it is
queued (never stored: the rest of the total) or running.

The Lua scripts receive these names from here (see shared/redis/scripts.py); nothing else spells them.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    # (in the order the API documents them)
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRING = "expiring"
    EXPIRED = "expired"


class RequestStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class BatchStatus(StrEnum):
    """An OpenAI batch's status (the SDK's names); a batch's job status maps onto it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


# Jobs whose requests may still be routed and started.
RUNNING_JOB_STATES = frozenset({JobStatus.QUEUED, JobStatus.IN_PROGRESS})
# A job being stopped -> (the state it ends in, the state its unfinished requests take).
STOPPING_JOB_STATES = {
    JobStatus.CANCELLING: (JobStatus.CANCELLED, RequestStatus.CANCELLED),
    JobStatus.EXPIRING: (JobStatus.EXPIRED, RequestStatus.EXPIRED),
}
FINAL_JOB_STATES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})
FINAL_REQUEST_STATES = tuple(RequestStatus)
# The state a job ends in once its last request is final, by the state it is in then.
JOB_END_STATES: dict[JobStatus, JobStatus] = {
    **{s: JobStatus.COMPLETED for s in RUNNING_JOB_STATES},
    **{s: end for s, (end, _) in STOPPING_JOB_STATES.items()},
}
# What stopping a job with each final request state (`cancelled`, `expired`) marks it first.
STOP_FOR_REASON: dict[RequestStatus, JobStatus] = {reason: s for s, (_, reason) in STOPPING_JOB_STATES.items()}

# Every move a job can make; anything else is a bug.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.IN_PROGRESS, JobStatus.CANCELLING, JobStatus.EXPIRING, JobStatus.COMPLETED, JobStatus.FAILED}
    ),
    JobStatus.IN_PROGRESS: frozenset({JobStatus.CANCELLING, JobStatus.EXPIRING, JobStatus.COMPLETED}),
    JobStatus.CANCELLING: frozenset({JobStatus.CANCELLED}),
    JobStatus.EXPIRING: frozenset({JobStatus.EXPIRED}),
    # a dead-lettered request put back reopens its finished job
    JobStatus.COMPLETED: frozenset({JobStatus.IN_PROGRESS}),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
}
