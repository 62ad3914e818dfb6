"""The ingest HTTP API (FastAPI). Bodies are decoded and encoded with msgspec."""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import asynccontextmanager
from typing import Annotated

import msgspec
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.ingest import job_events, openai_routes, webhook_routes
from services.ingest.auth import Authenticator, tenant_of
from services.ingest.http_metrics import HttpMetrics
from services.ingest.limits import TenantLimits, tenant_limit_error
from services.ingest import openapi
from services.ingest.body import read_limited
from services.ingest.errors import ApiException, error_response, handle_api_exception, over_capacity
from services.ingest.submission import plan_job
from shared.api import ApiError, ApiErrorBody, DeadLetterList, Health, Job, JobCreate, JobWebhookInfo, ModelInfo, ModelList, RequestCounts, ResultLine, Usage
from shared.deadletters import get_dead_letter, list_dead_letters
from shared.api_keys import ApiKeyStore
from shared.jobstore import NO_LIMIT, AdmissionRejected, IdempotencyConflict, JobStore, StopRefused, TenantLimitReached
from shared.keys import Keys
from shared.models_config import ModelsConfig, load_models
from shared.redis_client import connect
from shared.settings import Settings
from shared import metrics
from shared.webhook_store import WebhookStore
from shared.flow import model_queue, model_scaling

log = logging.getLogger("inferq.ingest")
_encoder = msgspec.json.Encoder()
_CURSOR_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
JobId = Annotated[str, Path(pattern=r"^job_[0-9a-z]{26}$", description="Job id returned by POST /v1/jobs")]
_ERRORS = {
    400: openapi.json_response(ApiError, "Malformed request"),
    404: openapi.json_response(ApiError, "Not found"),
    413: openapi.json_response(ApiError, "Body or job too large"),
    422: openapi.json_response(ApiError, "Invalid field; `error.field` names it"),
    503: openapi.json_response(ApiError, "Redis unavailable; nothing was written"),
    429: openapi.json_response(ApiError, "Over capacity (the model's backlog), or the tenant's rate or queued-request limit; retry after `Retry-After` seconds"),
}


def _json(obj, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def create_app(settings: Settings | None = None, models: ModelsConfig | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    models = models or load_models(settings.models_path)  # a bad models file stops the service here
    keys = Keys(settings.key_prefix)
    model_limits = {name: cfg.flow.max_backlog for name, cfg in models.models.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        r = connect(settings.redis_url)
        app.state.redis = r
        app.state.jobs = JobStore(r, keys, settings.job_ttl_s)
        app.state.webhooks = WebhookStore(r, keys)
        auth.store = ApiKeyStore(r, keys)
        app.state.limits = TenantLimits(r, keys, settings)
        app.state.auth_enabled = auth.enabled
        yield
        await r.aclose()

    auth = Authenticator(settings)
    app = FastAPI(
        dependencies=[Depends(auth)],
        title="inferq",
        version="0.1.0",
        description="Submit batches of LLM requests as jobs; follow their state and stream their results.",
        lifespan=lifespan,
    )
    app.add_exception_handler(ApiException, handle_api_exception)
    app.add_middleware(HttpMetrics)

    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body")]
        field = ".".join(loc) or None
        return error_response(422, ApiErrorBody(message=f"{field}: {first.get('msg', 'invalid')}", type="invalid_request_error", field=field))

    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, ApiErrorBody(message=str(exc.detail), type="http_error"))

    async def _redis_down(_: Request, exc: Exception) -> Response:
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, ApiErrorBody(message="the queue store (Redis) is unavailable; nothing was written, retry shortly",
                                                type="unavailable"), {"Retry-After": str(settings.retry_after_s)})

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(StarletteHTTPException, _http)
    openai_routes.install(app, settings, models, keys, tenant_of, model_limits)
    webhook_routes.install(app, settings, keys, tenant_of)
    openapi.install(app)

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_class=Response,
        summary="Submit a job",
        openapi_extra=openapi.json_body(JobCreate),
        responses={202: openapi.json_response(Job, "Accepted: every request is queued"), **_ERRORS},
    )
    async def create_job(
        request: Request,
        idempotency_key: Annotated[str | None, Header(
            min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
            description="Retrying with the same key returns the same job for 24 h; a different body with it is a 409.",
        )] = None,
    ) -> Response:
        body = await read_limited(request, settings.max_body_bytes)
        plan = plan_job(body, models, settings.max_requests_per_job, settings.max_prompt_chars)
        jobs: JobStore = request.app.state.jobs
        tenant = tenant_of(request)
        idempotency = (tenant, idempotency_key, hashlib.sha256(body).hexdigest()) if idempotency_key else None
        extra: dict[str, str] = {}
        hook = None
        if plan.webhook is not None:
            await webhook_routes.checked_url(plan.webhook.url, settings, "webhook.url")
        # the rate limit is charged only for a job that passed validation
        await request.app.state.limits.admit(tenant, sum(plan.model_totals.values()))
        if plan.webhook is not None:
            hook = await request.app.state.webhooks.create(tenant, plan.webhook, job_id=plan.job_id)
            if "request.completed" in hook.events:
                extra["wh_req"] = "1"
            extra.update(webhook_id=hook.id, webhook=_encoder.encode(JobWebhookInfo(id=hook.id, url=hook.url, events=hook.events)).decode())
        try:
            job_id = await jobs.create(
                plan.job_id, plan.created_ms, plan.model_totals, plan.metadata, plan.chunks,
                priority=plan.priority, expires_ms=plan.expires_ms, model_limits=model_limits,
                global_limit=settings.max_backlog, idempotency=idempotency, extra=extra,
                tenant=tenant, tenant_limit=settings.tenant_max_queued or NO_LIMIT,
            )
            if hook is not None and job_id != plan.job_id:  # a replay: the first submission's endpoint stands
                await request.app.state.webhooks.delete(tenant, hook.id)
        except AdmissionRejected as exc:
            await _drop_hook(request, hook)
            raise over_capacity(exc, settings.retry_after_s) from None
        except TenantLimitReached as exc:
            await _drop_hook(request, hook)
            raise tenant_limit_error(exc, settings.retry_after_s) from None
        except IdempotencyConflict as exc:
            await _drop_hook(request, hook)
            raise ApiException(
                409, f"Idempotency-Key {idempotency_key!r} was already used with a different body (job {exc.job_id})",
                type="idempotency_conflict", field="Idempotency-Key",
            ) from None
        if job_id != plan.job_id:  # the same key and body were accepted before: that job, as it is now
            existing = await jobs.get(job_id)
            if existing is not None:
                resp = _json(existing, 202)
                resp.headers["Idempotent-Replayed"] = "true"
                return resp
        total = sum(plan.model_totals.values())
        metrics.REQUESTS_ACCEPTED.inc(total)
        job = Job(
            id=plan.job_id,
            status="queued",
            priority=plan.priority,
            created_at=plan.created_ms // 1000,
            expires_at=plan.expires_ms // 1000,
            request_counts=RequestCounts(total=total, queued=total),
            models={m: RequestCounts(total=n, queued=n) for m, n in sorted(plan.model_totals.items())},
            usage=Usage(),
            metadata=plan.metadata,
            webhook=JobWebhookInfo(id=hook.id, url=hook.url, events=hook.events, secret=hook.secret) if hook else None,
        )
        return _json(job, 202)

    @app.get(
        "/v1/jobs/{job_id}",
        response_class=Response,
        summary="Get a job's status, counts and usage",
        responses={200: openapi.json_response(Job, "The job"), **_ERRORS},
    )
    async def get_job(request: Request, job_id: JobId) -> Response:
        await _owned(request, job_id)
        job = await request.app.state.jobs.get(job_id)
        if job is None:
            raise _job_not_found(job_id)
        return _json(job)

    @app.post(
        "/v1/jobs/{job_id}/cancel",
        response_class=Response,
        summary="Cancel a job",
        description=(
            "Queued requests are dropped before they reach a model; requests already running finish. The job is "
            "`cancelling` until then and ends `cancelled`, keeping the results it has. Cancelling again is harmless; "
            "cancelling a finished job is a 409."
        ),
        responses={200: openapi.json_response(Job, "The job, now cancelling"), 409: openapi.json_response(ApiError, "Already finished"), **_ERRORS},
    )
    async def cancel_job(request: Request, job_id: JobId) -> Response:
        jobs: JobStore = request.app.state.jobs
        await _owned(request, job_id)
        try:
            await jobs.stop(job_id, "cancelled")
        except StopRefused as exc:
            if exc.status is None:
                raise _job_not_found(job_id) from None
            if exc.status != "cancelled":  # cancelling a cancelled job again is harmless
                raise ApiException(409, f"job {job_id} is already {exc.status}; only a queued or running job can be cancelled",
                                   type="job_finished", field="job_id") from None
        job = await jobs.get(job_id)
        if job is None:
            raise _job_not_found(job_id)
        return _json(job)

    @app.get(
        "/v1/dead-letters",
        response_class=Response,
        summary="Messages no consumer could process",
        responses={200: openapi.json_response(DeadLetterList, "Oldest first; pass `next_cursor` as `after` for more"), **_ERRORS},
    )
    async def get_dead_letters(
        request: Request,
        after: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Response:
        if after is not None and not _valid_cursor(after):
            raise ApiException(422, f"after: {after!r} is not a dead-letter cursor", field="after")
        page = await list_dead_letters(request.app.state.redis, keys, after, limit)
        page.data = [d for d in page.data if await _dead_letter_visible(request, d)]
        return _json(page)

    @app.post(
        "/v1/dead-letters/{dead_id}/requeue",
        response_class=Response,
        summary="Give a dead-lettered request another try",
        description=(
            "Undoes the request's `max_attempts_exceeded` failure (its count and result line), reopens its job if it "
            "had completed, and queues the request again. Only requests can be requeued, and only while their job exists "
            "and was not cancelled or expired."
        ),
        responses={200: openapi.json_response(Job, "The request's job"), 409: openapi.json_response(ApiError, "Not requeueable"), **_ERRORS},
    )
    async def requeue_dead_letter(request: Request, dead_id: Annotated[str, Path(pattern=r"^\d{1,20}-\d{1,20}$")]) -> Response:
        if not _valid_cursor(dead_id):
            raise ApiException(422, f"dead_id: {dead_id!r} is not a dead-letter id", field="dead_id")
        found = await get_dead_letter(request.app.state.redis, keys, dead_id)
        if found is None:
            raise ApiException(404, f"dead letter {dead_id} not found", type="not_found", field="dead_id")
        info, payload = found
        if not await _dead_letter_visible(request, info):
            raise ApiException(404, f"dead letter {dead_id} not found", type="not_found", field="dead_id")
        if not (info.requeueable and info.job_id and info.request_id and info.model and info.lane):
            raise ApiException(409, f"dead letter {dead_id} ({info.reason} from {info.source}) is not a request that can be requeued",
                               type="not_requeueable", field="dead_id")
        if info.model not in models.models:
            raise ApiException(409, f"model {info.model!r} is no longer configured", type="not_requeueable", field="dead_id")
        jobs: JobStore = request.app.state.jobs
        verdict, status = await jobs.requeue(dead_id, info.job_id, info.request_id, info.model, info.lane, payload)
        if verdict == "gone":
            raise ApiException(409, f"job {info.job_id} no longer exists", type="not_requeueable", field="dead_id")
        if verdict == "stopped":
            raise ApiException(409, f"job {info.job_id} is {status}; its requests cannot be requeued", type="not_requeueable", field="dead_id")
        if verdict == "not_failed":
            raise ApiException(409, f"request {info.request_id} has no recorded failure to undo (not yet collected, or already requeued)",
                               type="not_requeueable", field="dead_id")
        return _json(await jobs.get(info.job_id))

    @app.get(
        "/v1/jobs/{job_id}/results",
        response_class=Response,
        summary="Stream finished results as NDJSON",
        description=(
            "One JSON line per finished request, in the order they finished. Works while the job runs. "
            "The `Inferq-Next-Cursor` response header holds the cursor of the last line returned: pass it as "
            "`after` to continue. `Inferq-Job-Status` carries the job's status at the time of the read."
        ),
        responses={
            200: {"description": "Result lines", "content": {"application/x-ndjson": {"schema": openapi.ref(ResultLine)}}},
            **_ERRORS,
        },
    )
    async def get_results(
        request: Request,
        job_id: JobId,
        after: Annotated[str | None, Query(description="Cursor from a previous read's Inferq-Next-Cursor header")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Most lines to return")] = 1000,
    ) -> Response:
        if after is not None and not _valid_cursor(after):
            raise ApiException(422, f"after: {after!r} is not a results cursor (use the Inferq-Next-Cursor header)", field="after")
        jobs: JobStore = request.app.state.jobs
        status = await _owned(request, job_id)
        rows = await jobs.read_results(job_id, after, limit)
        cursor = rows[-1][0].decode() if rows else (after or "")
        body = b"".join(line + b"\n" for _, line in rows)
        return Response(
            body,
            media_type="application/x-ndjson",
            headers={"Inferq-Next-Cursor": cursor, "Inferq-Job-Status": status, "Inferq-Result-Count": str(len(rows))},
        )

    @app.get(
        "/v1/jobs/{job_id}/events",
        response_class=StreamingResponse,
        summary="Follow a job's events live (Server-Sent Events)",
        description=(
            "One `request.completed` event per finished request (a CloudEvents 1.0 document, its id a results cursor), "
            "then the job's own event (`job.completed`, `job.cancelled`, `job.expired`) with id `end`, then the stream "
            "closes. Reconnect with `Last-Event-ID` to continue where it stopped."
        ),
        responses={200: {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **_ERRORS},
    )
    async def follow_job(
        request: Request,
        job_id: JobId,
        last_event_id: Annotated[str | None, Header(description="Id of the last event received, to resume after it")] = None,
    ) -> StreamingResponse:
        if not job_events.valid_last_event_id(last_event_id):
            raise ApiException(422, f"Last-Event-ID: {last_event_id!r} is not an event id of this stream", field="Last-Event-ID")
        jobs: JobStore = request.app.state.jobs
        await _owned(request, job_id)
        stream = job_events.job_events(request, request.app.state.redis, keys, jobs, job_id, last_event_id)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/models", response_class=Response, summary="Configured models, their queues and replicas",
             responses={200: openapi.json_response(ModelList, "Models")})
    async def list_models(request: Request) -> Response:
        r = request.app.state.redis
        data = []
        for name in models.names():
            cfg = models.models[name]
            data.append(ModelInfo(id=name, engine=cfg.engine, max_inflight=cfg.max_inflight,
                                  queue=await model_queue(r, keys, cfg), scaling=await model_scaling(r, keys, cfg)))
        return _json(ModelList(data=data))

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics", include_in_schema=True,
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus_metrics(request: Request) -> Response:
        await metrics.refresh_queue_gauges(request.app.state.redis, keys, models)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", response_class=Response, summary="Liveness", responses={200: openapi.json_response(Health, "Alive")})
    async def healthz() -> Response:
        return _json(Health(status="ok"))

    @app.get("/readyz", response_class=Response, summary="Readiness: Redis reachable",
             responses={200: openapi.json_response(Health, "Ready"), 503: openapi.json_response(Health, "Redis unreachable")})
    async def readyz(request: Request) -> Response:
        try:
            await request.app.state.redis.ping()
        except Exception as exc:  # any failure to reach Redis means not ready
            return _json(Health(status="unavailable", detail=f"redis: {exc}"), 503)
        return _json(Health(status="ok"))

    return app


async def _drop_hook(request: Request, hook) -> None:
    """A job that was not created leaves no webhook endpoint behind."""
    if hook is not None:
        await request.app.state.webhooks.delete(tenant_of(request), hook.id)


async def _dead_letter_visible(request: Request, info) -> bool:
    """A dead letter belongs to the tenant of its job or webhook; one that names neither (an
    unreadable message) is shown only when auth is off (to the operator of a one-tenant setup)."""
    if info.job_id:
        status, tenant = await request.app.state.jobs.status_and_tenant(info.job_id)
        return status is not None and tenant == tenant_of(request)
    if info.webhook_id:
        return await request.app.state.webhooks.get(info.webhook_id, tenant_of(request)) is not None
    return not request.app.state.auth_enabled


async def _owned(request: Request, job_id: str) -> str:
    """The job's status, if it exists and belongs to the caller's tenant; otherwise 404 (another
    tenant's job is indistinguishable from a missing one)."""
    status, tenant = await request.app.state.jobs.status_and_tenant(job_id)
    if status is None or tenant != tenant_of(request):
        raise _job_not_found(job_id)
    return status


def _valid_cursor(cursor: str) -> bool:
    """A stream entry id `ms-seq`, each part below 2**64 as Redis requires."""
    if not _CURSOR_RE.match(cursor):
        return False
    ms, seq = cursor.split("-")
    return int(ms) < 2**64 and int(seq) < 2**64 - 1


def _job_not_found(job_id: str) -> ApiException:
    return ApiException(404, f"job {job_id} not found", type="not_found", field="job_id")
