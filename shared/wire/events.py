"""The CloudEvents 1.0 documents inferq publishes: one per finished request, one per finished job,
and one when a job's deadline comes at risk.

The collector's script writes them to the events stream as it records results (so an event exists
exactly when its effect does); the SSE endpoint renders the same documents from a job's results.
These Structs are their schema (docs/events.schema.json is generated from them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast

import msgspec
from msgspec import Struct

from shared.core.states import FINAL_JOB_STATES, JobStatus
from shared.wire.api import EventType, JobUsage, RequestCounts, ResultLine

SPECVERSION = "1.0"
SOURCE = "/inferq"
TYPE_PREFIX = "com.inferq."
# Short names, used in webhooks and the events stream's `type` field; CloudEvents `type` adds the prefix.
JOB_EVENTS = ("job.completed", "job.failed", "job.cancelled", "job.expired", "job.deadline_at_risk")
REQUEST_EVENTS = ("request.completed",)
EVENT_TYPES = JOB_EVENTS + REQUEST_EVENTS
# The states a job ends in, in the API's order.
# Built at run time from shared/core/states.py; the type checker sees a plain string.
if TYPE_CHECKING:
    FinalJobStatus = str
else:
    FinalJobStatus = Literal[tuple(s.value for s in JobStatus if s in FINAL_JOB_STATES)]
JobEventType = Literal[
    "com.inferq.job.completed", "com.inferq.job.failed", "com.inferq.job.cancelled", "com.inferq.job.expired"
]
__all__ = ["DeadlineRiskEvent", "EventType", "JobEvent", "JobSummary", "RequestEvent"]


class JobSummary(Struct, kw_only=True):
    """`data` of a job.* event."""

    id: str
    object: Literal["job"] = "job"
    status: FinalJobStatus
    request_counts: RequestCounts
    usage: JobUsage  # tokens, busy time and cost: in all and per serving model (`by_model`)
    created_at: int
    ended_at: int
    results_url: str  # relative to the API's base URL


class JobEvent(Struct, kw_only=True):
    specversion: Literal["1.0"] = "1.0"
    id: str  # <job id>.<status>.<ended ms>
    source: str
    type: JobEventType
    subject: str  # the job id
    time: str  # RFC 3339
    datacontenttype: Literal["application/json"] = "application/json"
    data: JobSummary


class RequestEvent(Struct, kw_only=True):
    specversion: Literal["1.0"] = "1.0"
    id: str  # <request id>.<results cursor>
    source: str
    type: Literal["com.inferq.request.completed"]
    subject: str  # the job id
    time: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: ResultLine


class DeadlineRisk(Struct, kw_only=True):
    """`data` of a job.deadline_at_risk event: the plan's finish is past the job's deadline."""

    id: str
    object: Literal["job"] = "job"
    deadline: int  # Unix seconds
    estimated_completion_at: int  # Unix seconds, when the plan found it
    on_deadline_risk: Literal["best_effort", "refuse", "spill"]
    request_counts: RequestCounts  # when the plan found it
    job_url: str  # relative to the API's base URL


class DeadlineRiskEvent(Struct, kw_only=True):
    """Sent once per job, the first time the planner finds its deadline at risk."""

    specversion: Literal["1.0"] = "1.0"
    id: str  # <job id>.deadline_at_risk
    source: str
    type: Literal["com.inferq.job.deadline_at_risk"] = "com.inferq.job.deadline_at_risk"
    subject: str  # the job id
    time: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: DeadlineRisk


def deadline_risk_json(risk: DeadlineRisk, time: str) -> bytes:
    return msgspec.json.encode(
        DeadlineRiskEvent(id=f"{risk.id}.deadline_at_risk", source=SOURCE, subject=risk.id, time=time, data=risk)
    )


def rfc3339_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_event_json(job_id: str, request_id: str, cursor: str, line_json: bytes, time: str) -> bytes:
    """The request.completed document around an already-encoded result line (no re-encoding); the
    collector's script builds the identical bytes. Its id is `<request id>.<results cursor>`:
    unique per result, even for a request that runs again after a dead-letter requeue."""
    return (
        b'{"specversion":"1.0","id":"'
        + request_id.encode()
        + b"."
        + cursor.encode()
        + b'","source":"'
        + SOURCE.encode()
        + b'","type":"com.inferq.request.completed","subject":"'
        + job_id.encode()
        + b'","time":"'
        + time.encode()
        + b'","datacontenttype":"application/json","data":'
        + line_json
        + b"}"
    )


def job_event(summary: JobSummary, time: str, ended_ms: int) -> JobEvent:
    """The job.<status> document, the same on the events stream, in webhooks and at the end of a
    job's Server-Sent Events. Its id is `<job id>.<status>.<ended ms>`: a job reopened by a
    dead-letter requeue ends again later, under a new id."""
    return JobEvent(
        id=f"{summary.id}.{summary.status}.{ended_ms}",
        source=SOURCE,
        type=cast(JobEventType, f"{TYPE_PREFIX}job.{summary.status}"),  # a final status
        subject=summary.id,
        time=time,
        data=summary,
    )


def job_event_json(summary: JobSummary, time: str, ended_ms: int) -> bytes:
    """The job.<status> document as the collector's script writes it to the events stream."""
    return msgspec.json.encode(job_event(summary, time, ended_ms))


def schema() -> dict:
    """JSON Schema of every event document (what docs/events.schema.json holds)."""
    (job, req, risk), components = msgspec.json.schema_components(
        [JobEvent, RequestEvent, DeadlineRiskEvent], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "inferq events (CloudEvents 1.0 JSON)",
        "oneOf": [job, req, risk],
        "$defs": components,
    }
