"""/v1/dead-letters: messages no consumer could process, and a second try for a failed request."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest.access import dead_letter_visible
from services.ingest.cursors import valid_cursor
from services.ingest.deps import JobsDep, KeysDep, ModelsDep, RedisDep, TenantDep
from services.ingest.errors.client import ApiException
from services.ingest.openapi import describe
from services.ingest.paging import AfterDeadLetter, Limit
from services.ingest.paths import DeadLetterId
from services.ingest.responses import as_json
from shared.core.errors import RequeueRefused
from shared.core.pages import DEFAULT_LIMIT
from shared.lanes.dead_letters import get_dead_letter, tenant_dead_letters
from shared.wire.api import ApiError, DeadLetter, DeadLetterList, Job

router = APIRouter()


@router.get(
    "/v1/dead-letters",
    response_class=Response,
    summary="Messages no consumer could process",
    description=(
        "The caller's dead letters (those of its jobs and webhook endpoints), oldest first. With auth off, also "
        "those that name no job or endpoint (an unreadable message)."
    ),
    responses={200: describe.json_response(DeadLetterList, "A page, oldest first"), **describe.ERRORS},
)
async def get_dead_letters(
    request: Request,
    r: RedisDep,
    keys: KeysDep,
    tenant: TenantDep,
    limit: Limit = DEFAULT_LIMIT,
    after: AfterDeadLetter = None,
) -> Response:
    if after is not None and not valid_cursor(after):
        raise ApiException(422, f"after: {after!r} is not a dead-letter id", field="after")
    unattributed = not request.app.state.auth_enabled
    return as_json(await tenant_dead_letters(r, keys, tenant, unattributed=unattributed, after=after, limit=limit))


@router.get(
    "/v1/dead-letters/{dead_id}",
    response_class=Response,
    summary="One dead letter",
    description="A dead letter of the caller's jobs or webhook endpoints; another tenant's answers 404.",
    responses={200: describe.json_response(DeadLetter, "The dead letter"), **describe.ERRORS},
)
async def get_one_dead_letter(request: Request, dead_id: DeadLetterId, r: RedisDep, keys: KeysDep) -> Response:
    info, _ = await _visible_dead_letter(request, dead_id, r, keys)
    return as_json(info)


@router.post(
    "/v1/dead-letters/{dead_id}/requeue",
    response_class=Response,
    summary="Give a dead-lettered request another try",
    description=(
        "Undoes the request's `max_attempts_exceeded` failure (its count and result line), reopens its job if it "
        "had completed, and queues the request again. Only requests can be requeued, and only while their job exists "
        "and was not cancelled or expired."
    ),
    responses={
        200: describe.json_response(Job, "The request's job"),
        409: describe.json_response(ApiError, "Not requeueable"),
        **describe.ERRORS,
    },
)
async def requeue_dead_letter(
    request: Request, dead_id: DeadLetterId, r: RedisDep, keys: KeysDep, models: ModelsDep, jobs: JobsDep
) -> Response:
    info, payload = await _visible_dead_letter(request, dead_id, r, keys)
    if not (info.requeueable and info.job_id and info.request_id and info.model and info.lane):
        raise ApiException(
            409,
            f"dead letter {dead_id} ({info.reason} from {info.source}) is not a request that can be requeued",
            type="not_requeueable",
            field="dead_id",
        )
    if info.model not in models.models:
        raise ApiException(
            409, f"model {info.model!r} is no longer configured", type="not_requeueable", field="dead_id"
        )
    try:
        await jobs.requeue(dead_id, info.job_id, info.request_id, info.model, info.lane, payload)
    except RequeueRefused as exc:
        raise _not_requeueable(exc, info) from None
    return as_json(await jobs.get(info.job_id))


def _not_requeueable(exc: RequeueRefused, info) -> ApiException:
    """409 saying why, in the words of the request and job concerned."""
    message = {
        "gone": f"job {info.job_id} no longer exists",
        "stopped": f"job {info.job_id} is {exc.status}; its requests cannot be requeued",
        "not_failed": f"request {info.request_id} has no recorded failure to undo"
        " (not yet collected, or already requeued)",
    }[exc.reason]
    return ApiException(409, message, type="not_requeueable", field="dead_id")


async def _visible_dead_letter(request: Request, dead_id: str, r, keys) -> tuple[DeadLetter, bytes]:
    """The dead letter and its message, if the caller may see it; otherwise 404, as for a missing one."""
    if not valid_cursor(dead_id):
        raise ApiException(422, f"dead_id: {dead_id!r} is not a dead-letter id", field="dead_id")
    found = await get_dead_letter(r, keys, dead_id)
    if found is None or not await dead_letter_visible(request, found[0]):
        raise ApiException(404, f"dead letter {dead_id} not found", type="not_found", field="dead_id")
    return found
