"""/v1/jobs: submit a job, list the caller's jobs, read a job's state, cancel it."""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Annotated

import msgspec
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import Response

from services.ingest.access import job_not_found, owned_job
from services.ingest.batch_input import parse_batch_file
from services.ingest.body import read_json
from services.ingest.budget_check import budget_routes
from services.ingest.deps import (
    JobListerDep,
    JobsDep,
    KeysDep,
    LimitsDep,
    ModelLimitsDep,
    ModelsDep,
    QuoterDep,
    RedisDep,
    SettingsDep,
    TenantDep,
    WebhooksDep,
)
from services.ingest.errors.client import ApiException, decode_body, over_capacity, replayed_job_expired
from services.ingest.file_store import CONTENT_FIELD
from services.ingest.job_listing import CURSOR_PATTERN, SCAN_PER_PAGE, JobFilter, parse_cursor
from services.ingest.limits import tenant_limit_error
from services.ingest.openapi import describe
from services.ingest.paging import Limit
from services.ingest.paths import JobId
from services.ingest.quoting import quote_for_submission
from services.ingest.responses import as_json
from services.ingest.submission import JobPlan, create_planned, plan_job
from services.ingest.webhook_urls import checked_url
from shared.core.errors import (
    REDIS_UNAVAILABLE,
    AdmissionRejected,
    IdempotencyConflict,
    IdempotentJobExpired,
    StopRefused,
    TenantLimitReached,
    redis_refused,
)
from shared.core.pages import DEFAULT_LIMIT
from shared.core.states import JobStatus
from shared.ops import metrics
from shared.webhooks.records import WebhookRecord
from shared.wire.api import (
    ApiError,
    Job,
    JobCreate,
    JobList,
    JobUsage,
    JobWebhookInfo,
    Quote,
    QuoteRequest,
    RequestCounts,
)
from shared.wire.api import JobStatus as JobStatusName

router = APIRouter()
_encoder = msgspec.json.Encoder()


@router.post(
    "/v1/jobs",
    status_code=202,
    response_class=Response,
    summary="Submit a job",
    openapi_extra=describe.json_body(JobCreate),
    responses={
        202: describe.json_response(Job, "Accepted: every request is queued"),
        409: describe.route_error(
            "The Idempotency-Key was used with another body, or the job it created has expired; or the job's"
            " `deadline` cannot be met and `on_deadline_risk` is `refuse` (the body carries the quote)"
        ),
        429: describe.OVER_CAPACITY,
        **describe.ERRORS,
    },
)
async def create_job(
    request: Request,
    settings: SettingsDep,
    models: ModelsDep,
    model_limits: ModelLimitsDep,
    jobs: JobsDep,
    webhooks: WebhooksDep,
    limits: LimitsDep,
    tenant: TenantDep,
    quoter: QuoterDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Retrying with the same key returns the same job for 24 h; a different body with it is a 409.",
        ),
    ] = None,
) -> Response:
    body = await read_json(request, settings.max_body_bytes)
    budgets = await budget_routes(jobs.r, jobs.keys, models, tenant)
    plan = plan_job(body, models, settings.max_requests_per_job, settings.max_prompt_chars, budgets)
    idempotency = (tenant, idempotency_key, hashlib.sha256(body).hexdigest()) if idempotency_key else None
    if plan.webhook is not None:
        await checked_url(plan.webhook.url, settings, "webhook.url")
    quoted = await quote_for_submission(quoter, plan)
    # the rate limit is charged only for a job that passed validation
    await limits.admit(tenant, sum(plan.model_totals.values()))
    hook, extra = await _job_webhook(webhooks, tenant, plan)
    extra.update(quoted)
    job_id = await _write_job(jobs, webhooks, plan, settings, model_limits, tenant, hook, extra, idempotency)
    if job_id != plan.job_id:  # the same key and body were accepted before: that job, as it is now
        existing = await jobs.get(job_id)
        if existing is None:  # expired since the script found it
            raise replayed_job_expired(job_id)
        resp = as_json(existing, 202)
        resp.headers["Idempotent-Replayed"] = "true"
        return resp
    metrics.REQUESTS_ACCEPTED.inc(sum(plan.model_totals.values()))
    return as_json(_accepted(plan, hook), 202)


async def _job_webhook(
    webhooks: WebhooksDep, tenant: str, plan: JobPlan
) -> tuple[WebhookRecord | None, dict[str, str]]:
    """The job's own webhook endpoint, created before the job (a job never exists without the
    endpoint it names), and the job-hash fields that point at it."""
    if plan.webhook is None:
        return None, {}
    hook = await webhooks.create(tenant, plan.webhook, job_id=plan.job_id)
    extra = {"wh_req": "1"} if "request.completed" in hook.events else {}
    extra.update(
        webhook_id=hook.id,
        webhook=_encoder.encode(JobWebhookInfo(id=hook.id, url=hook.url, events=hook.events)).decode(),
    )
    return hook, extra


async def _write_job(
    jobs: JobsDep,
    webhooks: WebhooksDep,
    plan: JobPlan,
    settings: SettingsDep,
    model_limits: dict[str, int],
    tenant: str,
    hook: WebhookRecord | None,
    extra: dict[str, str],
    idempotency: tuple[str, str, str] | None,
) -> str:
    """Write the job; the id of the job that stands (another one for a replayed Idempotency-Key).
    A job that is not created leaves no webhook endpoint behind."""
    try:
        job_id = await create_planned(jobs, plan, settings, model_limits, tenant, idempotency=idempotency, extra=extra)
        if hook is not None and job_id != plan.job_id:  # a replay: the first submission's endpoint stands
            await webhooks.delete(tenant, hook.id)
        return job_id
    except REDIS_UNAVAILABLE as exc:  # answered 503; a job Redis refused leaves no endpoint behind
        if hook is not None and redis_refused(exc):
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # if this fails too, the endpoint expires with its TTL
                await webhooks.delete(tenant, hook.id)
        raise
    except (AdmissionRejected, TenantLimitReached, IdempotencyConflict, IdempotentJobExpired) as exc:
        if hook is not None:
            await webhooks.delete(tenant, hook.id)
        if isinstance(exc, AdmissionRejected):
            raise over_capacity(exc, settings.retry_after_s) from None
        if isinstance(exc, TenantLimitReached):
            raise tenant_limit_error(exc, settings.retry_after_s) from None
        if isinstance(exc, IdempotentJobExpired):
            raise replayed_job_expired(exc.job_id) from None
        key = idempotency[1] if idempotency else None
        raise ApiException(
            409,
            f"Idempotency-Key {key!r} was already used with a different body (job {exc.job_id})",
            type="idempotency_conflict",
            field="Idempotency-Key",
        ) from None


_quote_decoder = msgspec.json.Decoder(QuoteRequest)
_QUOTE_FILE_FIELDS = ("completion_window", "metadata", "deadline", "on_deadline_risk", "priority")


@router.post(
    "/v1/jobs/quote",
    response_class=Response,
    summary="Quote a job: its finish and cost if submitted now",
    description=(
        "Takes the body of `POST /v1/jobs` (or `input_file_id`, an uploaded OpenAI batch input file, with the "
        "batch's `completion_window`, `metadata` and `deadline`) and writes nothing. Per model and for the whole "
        "job: requests, estimated tokens, when it starts and finishes (p50 and p90) on the replicas running now and "
        "on the models' max_replicas, the cost from the models' prices, and with a `deadline`, whether it holds "
        "(`feasible`) and what would make it hold."
    ),
    openapi_extra=describe.json_body(QuoteRequest),
    responses={
        200: describe.json_response(Quote, "The quote"),
        404: describe.route_error("No such input file (`input_file_id`)"),
        **describe.ERRORS,
    },
)
async def quote_job(
    request: Request,
    settings: SettingsDep,
    models: ModelsDep,
    r: RedisDep,
    keys: KeysDep,
    quoter: QuoterDep,
    tenant: TenantDep,
) -> Response:
    body = await read_json(request, settings.max_body_bytes)
    doc = decode_body(_quote_decoder, body)
    if doc.input_file_id is not None:
        body = await _file_job_body(r, keys, tenant, models, doc)
    else:
        fields = msgspec.structs.asdict(doc)
        del fields["input_file_id"]
        body = msgspec.json.encode(fields)
    plan = plan_job(body, models, settings.max_requests_per_job, settings.max_prompt_chars)
    return as_json(await quoter.quote(plan))


@router.api_route("/v1/jobs/quote", methods=["GET", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False)
async def quote_other_methods() -> Response:
    """405 with `Allow: POST`: without it `GET /v1/jobs/quote` would be read as a job id."""
    raise HTTPException(405, "Method Not Allowed")


async def _file_job_body(r, keys, tenant: str, models, doc: QuoteRequest) -> bytes:
    """The POST /v1/jobs body an uploaded batch input file stands for, with the quote's options."""
    if doc.requests is not None or doc.prompts is not None:
        raise ApiException(
            422, "input_file_id: give either an input file or `requests`/`prompts`, not both", field="input_file_id"
        )
    file_id = doc.input_file_id
    assert file_id is not None
    content = await r.hget(keys.file(file_id), CONTENT_FIELD)
    if content is None or await r.zscore(keys.files_index(tenant), file_id) is None:
        raise ApiException(404, f"input_file_id: no file {file_id!r}", type="not_found", field="input_file_id")
    first = next((line for line in content.split(b"\n") if line.strip()), b"")
    url = (msgspec.json.decode(first).get("url") if first.startswith(b"{") else None) or ""
    if url not in ("/v1/chat/completions", "/v1/completions"):
        raise ApiException(
            422,
            f"input_file_id: the file's first line names url {url!r}; a batch input file's lines POST to"
            " /v1/chat/completions or /v1/completions",
            field="input_file_id",
        )
    requests, line_of, errors = parse_batch_file(content, url, models)
    if errors:
        raise ApiException(422, f"input_file_id: {errors[0].message}", type=errors[0].code, field="input_file_id")
    opts = msgspec.to_builtins(doc)
    return msgspec.json.encode({"requests": requests, **{k: opts[k] for k in _QUOTE_FILE_FIELDS if k in opts}})


def _accepted(plan: JobPlan, hook: WebhookRecord | None) -> Job:
    """The job as it is the moment it is accepted: every request queued."""
    total = sum(plan.model_totals.values())
    return Job(
        id=plan.job_id,
        status=JobStatus.QUEUED.value,
        priority=plan.priority,
        created_at=plan.created_ms // 1000,
        expires_at=plan.expires_ms // 1000,
        request_counts=RequestCounts(total=total, queued=total),
        models={m: RequestCounts(total=n, queued=n) for m, n in sorted(plan.model_totals.items())},
        usage=JobUsage(),
        metadata=plan.metadata,
        webhook=JobWebhookInfo(id=hook.id, url=hook.url, events=hook.events, secret=hook.secret) if hook else None,
        deadline=plan.deadline_ms // 1000 if plan.deadline_ms else None,
        on_deadline_risk=plan.on_deadline_risk if plan.deadline_ms else None,  # type: ignore[arg-type]
    )


_METADATA_PARAM = re.compile(r"^metadata\[(.*)\]$", re.DOTALL)
# `metadata[<key>]=<value>`, declared here because FastAPI has no deepObject query parameters
_METADATA_FILTER = {
    "name": "metadata",
    "in": "query",
    "style": "deepObject",
    "explode": True,
    "description": "Only jobs whose metadata has this key with this value: `metadata[team]=search` (one pair)",
    "schema": {
        "type": "object",
        "maxProperties": 1,
        "propertyNames": {"minLength": 1, "maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 512},
    },
}


def _metadata_filter(request: Request) -> tuple[str, str] | None:
    """The one `metadata[key]=value` pair of the query, if any; a 422 naming `metadata` otherwise."""
    pairs = [
        (m.group(1), value)
        for name, value in request.query_params.multi_items()
        if (m := _METADATA_PARAM.match(name)) is not None
    ]
    if len(pairs) > 1:
        raise ApiException(422, "metadata: filter by one metadata pair, metadata[key]=value", field="metadata")
    if not pairs:
        return None
    key, value = pairs[0]
    if not 1 <= len(key) <= 64 or len(value) > 512:
        raise ApiException(
            422, "metadata: a key of 1 to 64 characters and a value of at most 512, as jobs carry", field="metadata"
        )
    return key, value


@router.get(
    "/v1/jobs",
    response_class=Response,
    summary="List your jobs, newest first",
    description=(
        "The caller's jobs, newest first, `limit` at a time; pass `next_cursor` as `after` for the next page while "
        "`has_more` is true. Filter by `status`, and by one metadata pair: `metadata[team]=search`. "
        f"A page reads at most {SCAN_PER_PAGE:,} jobs, so a filtered page can hold fewer than `limit` jobs, even "
        "none, and still have `has_more`: its cursor continues where it stopped."
    ),
    openapi_extra={"parameters": [_METADATA_FILTER]},
    responses={200: describe.json_response(JobList, "A page of jobs"), **describe.ERRORS},
)
async def list_jobs(
    request: Request,
    tenant: TenantDep,
    lister: JobListerDep,
    limit: Limit = DEFAULT_LIMIT,
    after: Annotated[
        str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page")
    ] = None,
    status: Annotated[JobStatusName | None, Query(description="Only jobs in this status")] = None,
) -> Response:
    position = parse_cursor(after) if after is not None else None
    if after is not None and position is None:
        raise ApiException(
            422, f"after: {after!r} is not a jobs cursor (use next_cursor of a previous page)", field="after"
        )
    where = JobFilter(status=status, metadata=_metadata_filter(request))
    return as_json(await lister.page(tenant, limit, position, where))


@router.get(
    "/v1/jobs/{job_id}",
    response_class=Response,
    summary="Get a job's status, counts and usage",
    responses={200: describe.json_response(Job, "The job"), **describe.ERRORS},
)
async def get_job(request: Request, job_id: JobId, jobs: JobsDep) -> Response:
    await owned_job(request, job_id)
    job = await jobs.get(job_id)
    if job is None:
        raise job_not_found(job_id)
    return as_json(job)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_class=Response,
    summary="Cancel a job",
    description=(
        "Queued requests are dropped before they reach a model; requests already running finish. The job is "
        "`cancelling` until then and ends `cancelled`, keeping the results it has. Cancelling again is harmless; "
        "cancelling a finished job is a 409."
    ),
    responses={
        200: describe.json_response(Job, "The job, now cancelling"),
        409: describe.json_response(ApiError, "Already finished"),
        **describe.ERRORS,
    },
)
async def cancel_job(request: Request, job_id: JobId, jobs: JobsDep) -> Response:
    await owned_job(request, job_id)
    try:
        await jobs.stop(job_id, JobStatus.CANCELLED.value)
    except StopRefused as exc:
        if exc.status is None:
            raise job_not_found(job_id) from None
        if exc.status != JobStatus.CANCELLED:  # cancelling a cancelled job again is harmless
            raise ApiException(
                409,
                f"job {job_id} is already {exc.status}; only a queued or running job can be cancelled",
                type="job_finished",
                field="job_id",
            ) from None
    job = await jobs.get(job_id)
    if job is None:
        raise job_not_found(job_id)
    return as_json(job)
