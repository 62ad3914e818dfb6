"""HTTP API bodies: what clients send and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.core import states
from shared.core.pages import Page
from shared.wire.formats import ResponseFormat

ContractKind = Literal["json_object", "json_schema", "regex", "choice"]  # what a contract holds an output to

CustomId = Annotated[str, Meta(min_length=1, max_length=512, description="Unique within the job")]
ModelName = Annotated[str, Meta(min_length=1, max_length=256)]
MaxTokens = Annotated[int, Meta(ge=1)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Stop = Annotated[str, Meta(min_length=1)] | Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(max_length=8)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Role = Literal["system", "developer", "user", "assistant", "tool"]
# The status names of shared/core/states.py, as the API documents them (a Literal keeps the schema inline).
# The Literals are built at run time; the type checker sees plain strings.
if TYPE_CHECKING:
    JobStatus = str
    RequestStatus = str
else:
    JobStatus = Literal[tuple(s.value for s in states.JobStatus)]
    RequestStatus = Literal[tuple(s.value for s in states.RequestStatus)]
# 1 second to 7 days, in one unit: the pattern spells out each unit's maximum
COMPLETION_WINDOW_PATTERN = (
    r"^(?:[1-7]d|(?:[1-9]|[1-9][0-9]|1[0-5][0-9]|16[0-8])h|(?:[1-9][0-9]{0,3}|100[0-7][0-9]|10080)m"
    r"|(?:[1-9][0-9]{0,4}|[1-5][0-9]{5}|60[0-3][0-9]{3}|604[0-7][0-9]{2}|604800)s)$"
)
CompletionWindow = Annotated[
    str, Meta(pattern=COMPLETION_WINDOW_PATTERN, description="e.g. 24h, 90m, 3600s, 7d (at most 7d)")
]
Priority = Literal["interactive", "batch"]
# Longest a request may wait for its model before it moves to the next model of the model's
# fallback chain (seconds); without a chain it has no effect.
MaxQueueWait = Annotated[float, Meta(gt=0, le=86_400, description="seconds; needs a fallback chain")]
# Why a request was served by a model other than the one it named (see docs/architecture.md).
FallbackReason = Literal["unavailable", "max_queue_wait", "retries_exhausted", "budget_exceeded", "deadline"]
# What happens to a job with a `deadline` that the plan says its models' own fleets will miss.
DeadlineRisk = Literal["best_effort", "refuse", "spill"]
# Unix seconds, or an RFC 3339 time with its offset (`2026-12-08T09:00:00Z`).
Deadline = (
    Annotated[int, Meta(ge=0, le=2**40, description="Unix seconds")]
    | Annotated[dt.datetime, Meta(tz=True, description="RFC 3339, with its offset")]
)
# Rules the schema cannot state (the server checks them): the document describes them.
DEADLINE_RULE = (
    "after now, and no later than the end of the completion window; an on_deadline_risk other than best_effort needs it"
)
# Events a webhook can subscribe to (CloudEvents types are these prefixed with `com.inferq.`).
EventType = Literal[
    "job.completed", "job.failed", "job.cancelled", "job.expired", "job.deadline_at_risk", "request.completed"
]
# What a job's own webhook gets unless it says otherwise: its end, and a warning that its deadline is at risk.
JOB_EVENT_TYPES: tuple[EventType, ...] = (
    "job.completed",
    "job.failed",
    "job.cancelled",
    "job.expired",
    "job.deadline_at_risk",
)
# scheme, host (a name or an IP literal), a port from 1 to 65535, no credentials, printable ASCII;
# whether plain http is allowed is the server's setting (the document states it)
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(  # every way of writing 8 groups, `::` standing for one or more zero groups
    [
        f"(?:{_H}:){{7}}{_H}",
        f"(?:{_H}:){{1,7}}:",
        *(f"(?:{_H}:){{1,{7 - n}}}(?::{_H}){{1,{n}}}" for n in range(1, 7)),
        f":(?:(?::{_H}){{1,7}}|:)",
    ]
)
WEBHOOK_URL_PATTERN = rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*|\[(?:{_IPV6})\])(?::{_PORT})?(?:[/?#][!-~]*)?$"
WebhookUrl = Annotated[
    str,
    Meta(min_length=8, max_length=2048, pattern=WEBHOOK_URL_PATTERN, description="https URL that receives the events"),
]


class JobWebhook(Struct, forbid_unknown_fields=True, kw_only=True):
    """`webhook` of a job: an endpoint for that job's events only. `request.completed` is opt-in."""

    url: WebhookUrl
    events: Annotated[list[EventType], Meta(min_length=1, max_length=6)] = msgspec.field(
        default_factory=lambda: list(JOB_EVENT_TYPES)
    )


class JobWebhookInfo(Struct, kw_only=True, omit_defaults=True):
    """A job's own webhook endpoint; `secret` (for verifying signatures) only in the 202 reply."""

    id: str
    url: str
    events: list[str]
    secret: str | None = None


class ChatMessage(Struct, forbid_unknown_fields=True):
    role: Role
    content: str


class SamplingFields(Struct, forbid_unknown_fields=True, kw_only=True):
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stop: Stop | None = None
    seed: Seed | None = None


def _exactly_one(*names: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of `names`", where null counts as absent (as decoding does)."""
    return {
        "oneOf": [
            {
                "required": [a],
                "properties": {a: {"not": {"type": "null"}}, **{b: {"type": "null"} for b in names if b != a}},
            }
            for a in names
        ]
    }


# Rules a Struct's fields cannot state, by Struct name: the server checks them after decoding
# (services/ingest/submission.py) and `schema_components` adds them to the Struct's schema.
SCHEMA_EXTRA: dict[str, dict[str, Any]] = {
    "RequestSpec": _exactly_one("prompt", "messages"),
    "JobCreate": _exactly_one("requests", "prompts"),
    "QuoteRequest": _exactly_one("requests", "prompts", "input_file_id"),
}


class RequestSpec(SamplingFields, forbid_unknown_fields=True, kw_only=True):
    """One inference request: exactly one of `prompt` (completion) or `messages` (chat)."""

    model: ModelName
    custom_id: CustomId | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Meta(min_length=1)] | None = None
    priority: Priority | None = None  # overrides the job's priority for this request
    max_queue_wait: MaxQueueWait | None = None  # overrides the job's
    response_format: ResponseFormat | None = None  # overrides the job's


class PromptSpec(SamplingFields, forbid_unknown_fields=True, kw_only=True):
    """The common `{"prompts": [{"id", "model", "prompt"}]}` shape; `id` becomes `custom_id`."""

    model: ModelName
    prompt: str
    id: CustomId | None = None
    priority: Priority | None = None
    max_queue_wait: MaxQueueWait | None = None
    response_format: ResponseFormat | None = None


class JobCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of POST /v1/jobs: `requests` (native) or `prompts` (short form), not both."""

    requests: Annotated[list[RequestSpec], Meta(min_length=1)] | None = None
    prompts: Annotated[list[PromptSpec], Meta(min_length=1)] | None = None
    # `interactive` work is routed and served before `batch` work of the same model.
    priority: Priority = "batch"
    # When it passes, unfinished requests end `expired`, and so does the job.
    completion_window: CompletionWindow = "24h"
    # A request waiting longer than this for its model moves along the model's fallback chain.
    # Unset: interactive requests take their model's `interactive_max_queue_wait_s`; batch ones wait.
    max_queue_wait: MaxQueueWait | None = None
    # The shape every request's output must take, for requests that give none of their own.
    response_format: ResponseFormat | None = None
    metadata: Annotated[
        dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
        Meta(max_length=16),
    ] = {}
    # Signed callbacks for this job's events (see /v1/webhooks for endpoints that get every job's).
    webhook: JobWebhook | None = None
    # When the job must be done by; the dispatcher serves it ahead of work without an earlier one
    # and scales for it. `on_deadline_risk` says what happens when the plan says it will be late.
    deadline: Annotated[Deadline | None, Meta(description=DEADLINE_RULE)] = None
    on_deadline_risk: DeadlineRisk = "best_effort"


class QuoteRequest(JobCreate, forbid_unknown_fields=True, kw_only=True):
    """Body of POST /v1/jobs/quote: a POST /v1/jobs body, or `input_file_id` (an OpenAI batch
    input file) with the batch's `completion_window`, `metadata` and deadline."""

    input_file_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class RequestCounts(Struct, kw_only=True):
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0

    @property
    def finished(self) -> int:
        """Requests in a final state."""
        return self.succeeded + self.failed + self.cancelled + self.expired


class Usage(Struct, kw_only=True):
    """Tokens, the worker busy time a request was charged (`gpu_seconds`: its share of the time
    its worker had work, split evenly among the requests in flight at each moment) and its cost
    in USD (from the serving model's price; 0 when it has none), to the micro-dollar."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0


class ModelUsage(Struct, kw_only=True):
    """What one serving model used for a job."""

    requests: int = 0
    gpu_seconds: float = 0.0
    cost: float = 0.0


class JobUsage(Usage, kw_only=True):
    """A job's usage: the sums of its result lines, and per serving model (`by_model`)."""

    by_model: dict[str, ModelUsage] = {}


class Job(Struct, kw_only=True):
    """A job as GET /v1/jobs/{id} shows it. Timestamps are Unix seconds."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    priority: Priority = "batch"
    created_at: int
    started_at: int | None = None
    expires_at: int | None = None
    completed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    request_counts: RequestCounts
    models: dict[str, RequestCounts]
    usage: JobUsage
    metadata: dict[str, str]
    webhook: JobWebhookInfo | None = None
    deadline: int | None = None  # Unix seconds
    on_deadline_risk: DeadlineRisk | None = None  # set with a deadline
    # When the plan says the job will finish (Unix seconds), from its models' measured throughput,
    # the work ahead of it and their replicas; updated each second while the job runs.
    estimated_completion_at: int | None = None
    deadline_at_risk: bool | None = None  # with a deadline: the plan's finish is after it


class JobList(Page[Job], kw_only=True):
    """GET /v1/jobs: the caller's jobs, newest first. A filtered page can hold fewer than `limit`
    jobs (a page reads a bounded number of jobs), and still have more after it."""


class Output(Struct, kw_only=True):
    text: str
    # stop: end of sequence or a stop string; length: max_tokens or the context; repetition: the
    # engine's repetition detection ended it (vLLM)
    finish_reason: Literal["stop", "length", "repetition"]
    # the decoded JSON of an output held to a json_object or json_schema response_format
    parsed: Any | msgspec.UnsetType = msgspec.UNSET


class DeadLetter(Struct, kw_only=True, omit_defaults=True):
    """A message no consumer could process, kept for an operator (GET /v1/dead-letters)."""

    id: str = ""  # its entry id in the dead-letter stream; filled when read
    source: str  # the stream it was read from
    reason: str  # max_attempts_exceeded | undecodable | ...
    attempts: int = 0
    error: str = ""
    at: int = 0  # Unix seconds
    job_id: str | None = None
    request_id: str | None = None
    custom_id: str | None = None
    model: str | None = None
    lane: str | None = None
    requeueable: bool = False
    webhook_id: str | None = None  # a webhook delivery that gave up: redeliver it from /v1/webhooks
    delivery_id: str | None = None


class DeadLetterList(Page[DeadLetter], kw_only=True):
    """GET /v1/dead-letters: the caller's dead letters, oldest first."""


class ErrorInfo(Struct, kw_only=True):
    code: str
    message: str


class Timings(Struct, kw_only=True):
    queued_ms: float
    inference_ms: float


class ResultLine(Struct, kw_only=True):
    """One line of GET /v1/jobs/{id}/results (NDJSON)."""

    custom_id: str
    request_id: str
    model: str
    status: RequestStatus
    output: Output | None
    usage: Usage
    error: ErrorInfo | None
    timings: Timings
    served_by: str | None = None  # the model that ran it: `model`, or one of its fallback chain
    fallback_reason: FallbackReason | None = None  # why it moved along the chain; null when it did not


class LaneQueue(Struct, kw_only=True):
    """`queued` counts requests; `routed_unread` and `pending` count stream entries, which the
    watermarks compare with: a batch-lane entry of a model with flow.batch_bundle > 1 carries up
    to that many requests."""

    queued: int  # admitted, waiting in the router's staging queues
    routed_unread: int  # entries in the model's stream, not yet read by a worker
    pending: int  # entries read by a worker, not yet acknowledged (in flight)


class ModelQueue(Struct, kw_only=True):
    """Where a model's accepted-but-unfinished requests are, and the router's flow state."""

    unfinished: int  # accepted, no result yet (what admission control limits)
    queued: int
    routed_unread: int
    pending: int
    consumers: int
    flow: Literal["flowing", "paused"]  # paused: the batch lane is over its high watermark
    high_watermark: int
    low_watermark: int
    max_backlog: int
    lanes: dict[str, LaneQueue]


class ScalingChange(Struct, kw_only=True):
    from_replicas: int
    to_replicas: int
    reason: str
    at: float  # unix seconds


class ScalingFailures(Struct, kw_only=True):
    """A backend's calls for a model that keep failing (a Modal spawn, cancel or status check that
    got no answer, a local worker that exits at once): retried after growing delays, not at every
    tick, and meanwhile nothing is started or stopped for the model."""

    count: int  # consecutive failures
    last_error: str | None = None  # e.g. the exception, or the worker's last log line
    last_exit_status: int | None = None  # a local worker's exit status, when known
    last_at: float  # unix seconds
    next_attempt_at: float | None = None  # no new start before this (unix seconds)


class ModelScaling(Struct, kw_only=True):
    """The autoscaler's view of a model: replicas now and wanted, and why."""

    backend: Literal["static", "local", "modal"]
    min_replicas: int
    max_replicas: int
    current: int | None = None  # None: not managed (static), or no decision yet
    desired: int | None = None
    backlog: int | None = None
    reason: str | None = None  # the latest decision
    decided_at: float | None = None
    last_change: ScalingChange | None = None
    failures: ScalingFailures | None = None  # None: the backend's last starts succeeded


HealthState = Literal["serving", "cold-starting", "degraded", "unavailable"]


class ModelHealth(Struct, kw_only=True):
    """Whether the model serves its requests now (shared/models/health.py), and why not."""

    state: HealthState
    reason: str
    since: float  # unix seconds: when it entered this state


class SpendLimitView(Struct, kw_only=True):
    """A spend limit covering the model: its scope, the spend it counts so far this period."""

    name: str  # e.g. `model llama-8b monthly`, `tenant my-team daily`
    period: Literal["day", "month"]
    limit_usd: float
    spent_usd: float
    reached: bool
    resets_at: int  # unix seconds: when the period ends (UTC)


class ModelSpend(Struct, kw_only=True):
    """What the model has cost this UTC day and month, every tenant together (the caller's own
    tenant limits are listed with their spend; other tenants' are not shown)."""

    day_usd: float
    month_usd: float
    limits: list[SpendLimitView]


Snapshot = Literal["none", "memory", "gpu"]


class StartPhases(Struct, kw_only=True):
    """Seconds since the worker's process started at which it had imported its engine, loaded the
    weights, had the engine ready, produced its first token and returned its first result.
    `weights_loaded_s` is unset where the engine loads them inside its own start (vLLM) and cannot
    tell the two apart; `first_token_s` where the engine does not stream (it returns whole
    outputs: transformers, dummy). The first token and result are engine ready plus the first
    request's own times: a wait for that first request is not counted."""

    at_ms: int  # when the start began (wall clock)
    imports_s: float
    engine_ready_s: float
    first_result_s: float
    weights_loaded_s: float | None = None
    first_token_s: float | None = None  # where the engine streams its first request (vLLM)
    snapshot: Snapshot = "none"  # what the start was restored from

    @property
    def boot_s(self) -> float:
        """From a process start to serving: what starting a replica ahead of need must cover."""
        return self.engine_ready_s


class ModelInfo(Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    engine: str
    max_inflight: int
    queue: ModelQueue
    scaling: ModelScaling
    health: ModelHealth
    fallback: list[str]  # where its waiting requests move when it cannot serve them
    price_per_hour: float | None  # USD per busy replica-hour (Modal models: their GPU's list price)
    price_per_million_tokens: float | None
    spend: ModelSpend
    # whether it holds outputs to a response_format, and the kinds it does (`text` needs none): those
    # its engine and the engine of every model of its fallback chain can enforce
    supports_response_format: bool = False
    response_formats: list[ContractKind] = []
    # the latest worker start of the model, phase by phase (None until a worker served a request)
    start_phases: StartPhases | None = None
    quote_error: QuoteError | None = None  # how wrong the quotes of its recent jobs were (None: none measured)


class ModelList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ModelStatsSample(Struct, kw_only=True):
    """One time bucket of a model's figures. `None`: nothing was measured in that bucket (no
    request ran; no dispatcher sampled the queue)."""

    at: int  # unix seconds, the start of the bucket
    completed: int  # results recorded (every status)
    failed: int
    latency_ms: float | None  # mean from acceptance to result, of the requests that ran
    backlog: int | None  # accepted-but-unfinished requests when sampled
    replicas: int | None  # workers: the autoscaler's count, else the workers reading the model's queue


class ModelStats(Struct, kw_only=True):
    """A model's throughput and latency over the last minute, and its recent history."""

    id: str
    object: Literal["model.stats"] = "model.stats"
    bucket_s: int
    window_s: int
    throughput_per_s: float  # results per second over the last minute
    latency_ms: float | None  # mean acceptance-to-result time over the last minute
    inference_ms: float | None  # of which in the engine
    samples: list[ModelStatsSample]  # oldest first, one per bucket of the window, the current one last


class ModelStatsList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelStats]


class SinkInfo(Struct, kw_only=True):
    """An event sink of the models file and how far its delivery has got."""

    object: Literal["sink"] = "sink"
    name: str
    kind: Literal["http", "nats"]
    target: str  # the receiver's URL, or the NATS servers
    mode: Literal["structured", "binary", "batch"] | None = None  # http
    subject: str | None = None  # nats: `{type}` stands for the event type
    types: list[str]
    tenants: list[str]  # empty: every tenant's events
    # The last events-stream entry passed (delivered, or not wanted by the filter); None before
    # the sink's first start.
    cursor: str | None
    lag: int  # events in the stream after the cursor: not yet handed over
    delivered: int  # events the sink acknowledged, ever
    lost: int  # events trimmed from the events stream before the sink read them, ever
    rejected: int  # events the receiver refused as malformed (HTTP 400/413/422), skipped
    last_delivered_at: int | None  # Unix seconds
    last_error: str | None  # the last failure to hand over, until the next success
    last_error_at: int | None
    failing_since: int | None
    delivering: bool  # a dispatcher holds the sink's lease now


class SinkList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[SinkInfo]


class Timeline(Struct, kw_only=True):
    """When a model's share of a job starts (its first result) and finishes, median and 90th
    percentile, on a given number of replicas. Unix seconds."""

    replicas: int
    start_at: float
    start_p90_at: float
    finish_at: float
    finish_p90_at: float


class ModelQuote(Struct, kw_only=True):
    """One model's share of a quoted job."""

    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    # tokenizer: the model's own, counted here; learned: characters per token measured on the
    # model's finished results; default: 4 characters per token (nothing measured yet)
    prompt_tokens_from: Literal["tokenizer", "learned", "default"]
    # learned: the share of max_tokens the model's results used; max_tokens: nothing measured yet
    completion_tokens_from: Literal["learned", "max_tokens"]
    busy_seconds: float  # worker busy time the requests will be charged, in all
    cost: float  # USD, from the model's prices
    ahead_requests: int  # requests of other jobs the model serves before this job's last one
    calibrated_from: int  # results the model's busy time per request was measured on (0: none)
    # on the replicas the autoscaler aims at now (one to be started, at zero); None: nothing measured yet
    current: Timeline | None
    at_max_replicas: Timeline | None  # on scaling.max_replicas (static fleets: the workers reading now)
    replicas_needed: int | None = None  # with a deadline: the fewest replicas that meet it (p90)


class Quote(Struct, kw_only=True):
    """POST /v1/jobs/quote: what a job would take and cost if submitted now. Nothing is written."""

    object: Literal["job.quote"] = "job.quote"
    quoted_at: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float  # USD
    current: Timeline | None  # the job as a whole: its last model's finish (None: a model has nothing measured)
    at_max_replicas: Timeline | None
    deadline: int | None = None
    on_deadline_risk: DeadlineRisk | None = None
    # whether the deadline holds: the p90 finish at the models' max_replicas is before it (None: no deadline)
    feasible: bool | None = None
    suggestions: list[str] = []  # what would make an infeasible deadline feasible
    notes: list[str] = []  # what the estimate could not take into account
    models: list[ModelQuote]


class QuoteError(Struct, kw_only=True):
    """How wrong the recent quotes of a model's jobs were: the quote made when each job was
    accepted against what happened, relative errors (actual / quoted - 1)."""

    jobs: int  # finished jobs measured (the latest, up to 100)
    finish_error_p50: float | None  # of the time from acceptance to the job's end
    finish_error_p90: float | None  # the 90th percentile of its absolute value
    cost_error_p50: float | None
    latest: list[QuoteSample] = []  # the newest few, newest first


class QuoteSample(Struct, kw_only=True):
    """One finished job's quote against what happened (which job is not shown: any tenant's)."""

    at: int  # Unix seconds: when the job ended
    quoted_s: float  # quoted time from acceptance to the end
    actual_s: float
    quoted_cost: float
    actual_cost: float


class ApiErrorBody(Struct, kw_only=True, omit_defaults=True):
    message: str
    type: str
    field: str | None = None
    index: int | None = None
    model: str | None = None
    known_models: list[str] | None = None
    # A quota refusal: the quota's setting, its limit and the tenant's usage of it before the request.
    quota: str | None = None
    limit: int | None = None
    used: int | None = None
    # A spend limit refusal (429 budget_exceeded): the limit reached, in USD, and when it resets.
    budget: str | None = None
    limit_usd: float | None = None
    spent_usd: float | None = None
    resets_at: int | None = None
    # A deadline refusal (409 deadline_infeasible, on_deadline_risk = refuse): the quote.
    quote: Quote | None = None


class ApiError(Struct, kw_only=True):
    """Every 4xx/5xx answer: `{"error": {"message", "type", "field"?, "index"?, "quota"?, "limit"?, "used"?}}`."""

    error: ApiErrorBody


class Health(Struct, kw_only=True):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


def schema_components(types: list[type]) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """JSON Schema of msgspec types, with refs pointing into OpenAPI's components, and the rules of
    SCHEMA_EXTRA added to the Structs they concern."""
    out, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    for name, extra in SCHEMA_EXTRA.items():
        if name in components:
            components[name].update(extra)
    return out, components
