"""OpenAI-compatible Files and Batches endpoints, so the official `openai` SDK and existing batch
pipelines work against inferq by changing the base URL. A batch runs as an inferq job: routing,
flow control, cancel, expiry and events are the job's."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from services.ingest.batch_input import parse_batch_file
from services.ingest.batch_view import batch_id_of, batch_status, batch_view, output_line
from services.ingest.body import read_json
from services.ingest.budget_check import budget_routes
from services.ingest.deps import (
    FilesDep,
    JobsDep,
    KeysDep,
    LimitsDep,
    ModelLimitsDep,
    ModelsDep,
    QuoterDep,
    RedisDep,
    SettingsDep,
    TenantDep,
)
from services.ingest.errors.client import ApiException, decode_body, over_capacity, quota_exceeded
from services.ingest.file_store import CONTENT_FIELD, META_FIELD, Stored
from services.ingest.limits import tenant_limit_error
from services.ingest.openai_batch import (
    Batch,
    BatchCreate,
    BatchError,
    BatchErrors,
    BatchList,
    BatchRequestCounts,
    FileDeleted,
    FileList,
    FileObject,
)
from services.ingest.openapi import describe
from services.ingest.paging import AfterBatch, AfterFile, Limit
from services.ingest.paths import BatchId, FileId
from services.ingest.quoting import quote_for_submission
from services.ingest.responses import as_json
from services.ingest.submission import JobPlan, create_planned, plan_job
from shared.core.errors import REDIS_UNAVAILABLE, AdmissionRejected, StopRefused, TenantLimitReached, redis_refused
from shared.core.ids import new_file_id
from shared.core.pages import DEFAULT_LIMIT, openai_page_of
from shared.core.settings import Settings
from shared.core.states import BatchStatus, JobStatus, RequestStatus
from shared.jobs.store import JobStore
from shared.redis.index_pages import read_indexes, start_at
from shared.redis.keys import Keys
from shared.wire.api import ApiError, ResultLine
from shared.wire.messages import one_line

router = APIRouter()
_enc = msgspec.json.Encoder()
_batch_dec = msgspec.json.Decoder(Batch)


def _decode_record(raw: bytes) -> Batch:
    """A stored batch record; one written before `job_id` was left out when unset held `null`."""
    return _batch_dec.decode(raw.replace(b',"job_id":null', b""))


_file_dec = msgspec.json.Decoder(FileObject)
_create_dec = msgspec.json.Decoder(BatchCreate)
_line_dec = msgspec.json.Decoder(ResultLine)
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: describe.json_response(ApiError, "Malformed request"),
    404: describe.json_response(ApiError, "Not found"),
    413: describe.json_response(ApiError, "Too large"),
    422: describe.json_response(ApiError, "Invalid field; `error.field` names it"),
    503: describe.json_response(ApiError, "Redis unavailable; nothing was written"),
}


MAX_CREATE_BYTES = 64 * 1024  # a batch's creation names its input file; the requests are in the file


def _not_found(what: str, ident: str, field: str) -> ApiException:
    return ApiException(404, f"{what} {ident} not found", type="not_found", field=field)


async def _owned_file(r, keys: Keys, tenant: str, file_id: str) -> None:
    """404 for a file of another tenant: it is indistinguishable from a missing one."""
    if await r.zscore(keys.files_index(tenant), file_id) is None:
        raise _not_found("file", file_id, "file_id")


async def _load_batch(r, keys: Keys, tenant: str, batch_id: str) -> Batch:
    raw = await r.get(keys.batch(batch_id))
    if raw is None or await r.zscore(keys.batches_index(tenant), batch_id) is None:
        raise _not_found("batch", batch_id, "batch_id")
    return _decode_record(raw)


async def _view(jobs: JobStore, record: Batch) -> Batch:
    job = await jobs.get(record.job_id) if record.job_id else None
    return batch_view(record, job, int(time.time()))


async def _output_file(r, keys: Keys, jobs: JobStore, tenant: str, file_id: str) -> tuple[Batch, Batch, bool]:
    """A batch's output (`-output`) or error (`-errors`) file: (its batch, the batch's view,
    whether it is the output file); 404 until the batch has that file."""
    batch_id = "batch_" + file_id.removeprefix("file-").rsplit("-", 1)[0]
    record = await _load_batch(r, keys, tenant, batch_id)
    shown = await _view(jobs, record)
    wanted = file_id.endswith("-output")
    if (shown.output_file_id if wanted else shown.error_file_id) != file_id:
        raise _not_found("file", file_id, "file_id")
    return record, shown, wanted


async def _render(jobs: JobStore, record: Batch, errors: bool) -> AsyncIterator[bytes]:
    """The output (or error) file's lines, rendered from the job's results a page at a time."""
    assert isinstance(record.job_id, str)  # only a batch that runs as a job has output files
    cursor = None
    while True:
        page = await jobs.read_results(record.job_id, cursor, 1000)
        if not page:
            return
        out = bytearray()
        for _entry_id, raw in page:
            line = _line_dec.decode(raw)
            if (line.status != RequestStatus.SUCCEEDED) == errors:
                out += one_line(_enc.encode(output_line(line, record.endpoint, record.created_at))) + b"\n"
        cursor = page[-1][0].decode()
        if out:
            yield bytes(out)


UPLOAD_FIELDS = {"file", "purpose"}


@router.post(
    "/v1/files",
    response_class=Response,
    summary="Upload a batch input file (OpenAI Files API)",
    description="Each tenant's stored files (until deleted or expired) count against INFERQ_TENANT_FILE_BYTES "
    "and INFERQ_TENANT_FILES: a file larger than the whole byte quota is a 413, one that does not fit what is "
    "left of a quota a 429; both name the quota (`error.quota`), its `limit` and the tenant's usage (`used`).",
    responses={
        200: describe.json_response(FileObject, "The stored file"),
        **_ERRORS,
        413: describe.route_error(
            "Larger than INFERQ_MAX_BODY_BYTES, or than the tenant's whole byte quota (`error.quota`)"
        ),
        429: describe.route_error(
            "The tenant's file quota is used up: `error.quota` names it, with its `limit` and `used`"
        ),
    },
)
async def upload_file(
    request: Request,
    file: Annotated[UploadFile, File(description="JSONL, one request per line")],
    purpose: Annotated[Literal["batch"], Form(description="What the file is for: batch input")],
    settings: SettingsDep,
    files: FilesDep,
    tenant: TenantDep,
) -> Response:
    unknown = sorted(set((await request.form()).keys()) - UPLOAD_FIELDS)  # the form FastAPI parsed, cached
    if unknown:
        raise ApiException(
            422, f"{unknown[0]}: unknown form field; the upload takes `file` and `purpose`", field=unknown[0]
        )
    content = await file.read(settings.max_body_bytes + 1)
    if len(content) > settings.max_body_bytes:
        raise ApiException(
            413,
            f"file: larger than the limit of {settings.max_body_bytes} bytes",
            type="request_too_large",
            field="file",
        )
    meta = FileObject(
        id=new_file_id(),
        bytes=len(content),
        created_at=int(time.time()),
        filename=file.filename or "input.jsonl",
        purpose="batch",
    )
    stored = await files.store(
        tenant,
        meta.id,
        _enc.encode(meta),
        content,
        created_at=meta.created_at,
        ttl_s=settings.job_ttl_s,
        max_bytes=settings.tenant_file_bytes,
        max_files=settings.tenant_files,
    )
    if stored.refused is not None:
        raise _over_quota(settings, stored, len(content))
    return as_json(meta)


def _over_quota(settings: Settings, stored: Stored, size: int) -> ApiException:
    if size > settings.tenant_file_bytes:
        return quota_exceeded(
            413,
            "INFERQ_TENANT_FILE_BYTES",
            settings.tenant_file_bytes,
            stored.used_bytes,
            f"file: {size} bytes is more than the tenant's whole file quota of {settings.tenant_file_bytes} bytes "
            f"(INFERQ_TENANT_FILE_BYTES)",
            "file",
        )
    if stored.refused == "files":
        return quota_exceeded(
            429,
            "INFERQ_TENANT_FILES",
            settings.tenant_files,
            stored.files,
            f"file: the tenant already stores {stored.files} files, its quota (INFERQ_TENANT_FILES); "
            "delete some or wait until they expire",
            "file",
        )
    return quota_exceeded(
        429,
        "INFERQ_TENANT_FILE_BYTES",
        settings.tenant_file_bytes,
        stored.used_bytes,
        f"file: {size} bytes do not fit: the tenant stores {stored.used_bytes} of its {settings.tenant_file_bytes} "
        "bytes (INFERQ_TENANT_FILE_BYTES); delete files or wait until they expire",
        "file",
    )


@router.get(
    "/v1/files/{file_id}",
    response_class=Response,
    summary="A file's metadata",
    responses={200: describe.json_response(FileObject, "The file"), **_ERRORS},
)
async def get_file(file_id: FileId, r: RedisDep, keys: KeysDep, jobs: JobsDep, tenant: TenantDep) -> Response:
    if file_id.endswith(("-output", "-errors")):
        record, shown, wanted = await _output_file(r, keys, jobs, tenant, file_id)
        size = 0
        async for chunk in _render(jobs, record, errors=not wanted):
            size += len(chunk)
        return as_json(
            FileObject(
                id=file_id,
                bytes=size,
                created_at=shown.completed_at or shown.created_at,
                filename=f"{record.id}_{'output' if wanted else 'errors'}.jsonl",
                purpose="batch_output",
            )
        )
    await _owned_file(r, keys, tenant, file_id)
    raw = await r.hget(keys.file(file_id), META_FIELD)  # type: ignore[misc]
    if raw is None:
        raise _not_found("file", file_id, "file_id")
    return as_json(_file_dec.decode(raw))


@router.get(
    "/v1/files/{file_id}/content",
    summary="A file's content (batch input, output or errors, JSONL)",
    responses={200: {"description": "JSONL", "content": {"application/jsonl": {}}}, **_ERRORS},
)
async def get_file_content(file_id: FileId, r: RedisDep, keys: KeysDep, jobs: JobsDep, tenant: TenantDep):
    if file_id.endswith(("-output", "-errors")):
        record, _, wanted = await _output_file(r, keys, jobs, tenant, file_id)
        return StreamingResponse(_render(jobs, record, errors=not wanted), media_type="application/jsonl")
    await _owned_file(r, keys, tenant, file_id)
    content = await r.hget(keys.file(file_id), CONTENT_FIELD)  # type: ignore[misc]
    if content is None:
        raise _not_found("file", file_id, "file_id")
    return Response(content, media_type="application/jsonl")


@router.delete(
    "/v1/files/{file_id}",
    response_class=Response,
    summary="Delete an uploaded file",
    responses={200: describe.json_response(FileDeleted, "Deleted"), **_ERRORS},
)
async def delete_file(file_id: FileId, r: RedisDep, keys: KeysDep, files: FilesDep, tenant: TenantDep) -> Response:
    await _owned_file(r, keys, tenant, file_id)
    if not await files.delete(tenant, file_id):
        raise _not_found("file", file_id, "file_id")
    return as_json(FileDeleted(id=file_id))


@router.post(
    "/v1/batches",
    response_class=Response,
    summary="Create a batch from an uploaded file (OpenAI Batch API)",
    description="Valid files start at once as a job (`in_progress`); a file with invalid lines gives a `failed` "
    "batch whose `errors` name each line, as OpenAI does.",
    openapi_extra=describe.json_body(BatchCreate),
    responses={
        **_ERRORS,
        200: describe.json_response(Batch, "The batch"),
        404: describe.route_error("No such input file (`input_file_id`)"),
        429: describe.OVER_CAPACITY,
    },
)
async def create_batch(
    request: Request,
    settings: SettingsDep,
    models: ModelsDep,
    model_limits: ModelLimitsDep,
    r: RedisDep,
    keys: KeysDep,
    jobs: JobsDep,
    limits: LimitsDep,
    tenant: TenantDep,
    quoter: QuoterDep,
) -> Response:
    create = decode_body(_create_dec, await read_json(request, MAX_CREATE_BYTES))
    content = await r.hget(keys.file(create.input_file_id), CONTENT_FIELD)  # type: ignore[misc]
    if content is None or await r.zscore(keys.files_index(tenant), create.input_file_id) is None:
        raise _not_found("file", create.input_file_id, "input_file_id")
    now = int(time.time())
    requests, line_of, errors = parse_batch_file(content, create.endpoint, models)
    plan = None
    if not errors:
        plan, errors = await _plan(r, keys, models, settings, tenant, create, requests, line_of)
    quoted = await quote_for_submission(quoter, plan) if plan is not None else {}
    record = _batch_record(create, now, plan, len(requests), errors)
    if plan is not None:
        await limits.admit(tenant, len(requests))
    await _save_record(r, keys, settings, tenant, record, now)
    if plan is not None:
        await _create_job(r, keys, jobs, settings, model_limits, tenant, record, plan, quoted)
    return as_json(await _view(jobs, record))


async def _plan(
    r: RedisDep,
    keys: KeysDep,
    models: ModelsDep,
    settings: SettingsDep,
    tenant: str,
    create: BatchCreate,
    requests: list,
    line_of: list[int],
) -> tuple[JobPlan | None, list[BatchError]]:
    """The job of a valid file, or the error of the line that makes it invalid (as OpenAI names
    lines, not request indexes)."""
    job_body = msgspec.json.encode(
        {
            "requests": requests,
            "completion_window": create.completion_window,
            "metadata": create.metadata or {},
            **_deadline_of(create),
        }
    )
    try:
        budgets = await budget_routes(r, keys, models, tenant)
        return plan_job(job_body, models, settings.max_requests_per_job, settings.max_prompt_chars, budgets), []
    except ApiException as exc:
        line = line_of[exc.body.index] if exc.body.index is not None else None
        message = exc.body.message.replace(f"requests[{exc.body.index}]", f"line {line}") if line else exc.body.message
        return None, [BatchError(code=exc.body.type, message=message, line=line)]


def _deadline_of(create: BatchCreate) -> dict:
    """The batch's deadline options: its own fields, else `metadata` keys of the same names."""
    meta = create.metadata or {}
    out: dict = {}
    deadline = create.deadline if create.deadline is not None else meta.get("deadline")
    if deadline is not None:
        out["deadline"] = int(deadline) if isinstance(deadline, str) and deadline.isdigit() else deadline
    risk = create.on_deadline_risk or meta.get("on_deadline_risk")
    if risk is not None:
        out["on_deadline_risk"] = risk
    return out


def _batch_record(create: BatchCreate, now: int, plan: JobPlan | None, total: int, errors: list[BatchError]) -> Batch:
    """A failed batch that names its invalid lines, or a validating one with the job it runs as."""
    if plan is None:
        return Batch(
            id=batch_id_of("job_" + new_file_id()[5:]),
            endpoint=create.endpoint,
            input_file_id=create.input_file_id,
            completion_window=create.completion_window,
            status=BatchStatus.FAILED,
            created_at=now,
            failed_at=now,
            errors=BatchErrors(data=errors),
            metadata=create.metadata,
        )
    return Batch(
        id=batch_id_of(plan.job_id),
        endpoint=create.endpoint,
        input_file_id=create.input_file_id,
        completion_window=create.completion_window,
        status=BatchStatus.VALIDATING,
        created_at=now,
        metadata=create.metadata,
        job_id=plan.job_id,
        request_counts=BatchRequestCounts(total=total),
    )


async def _save_record(r: RedisDep, keys: KeysDep, settings: SettingsDep, tenant: str, record: Batch, now: int) -> None:
    """The record before its job: a crash between the two shows as a failed batch."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(keys.batch(record.id), _enc.encode(record), ex=settings.job_ttl_s)
        pipe.zadd(keys.batches_index(tenant), {record.id: now})
        # entries as old as the TTL point at expired records; the index goes with the record that expires last
        pipe.zremrangebyscore(keys.batches_index(tenant), "-inf", now - settings.job_ttl_s)
        pipe.expire(keys.batches_index(tenant), settings.job_ttl_s, nx=True)
        pipe.expire(keys.batches_index(tenant), settings.job_ttl_s, gt=True)
        await pipe.execute()


async def _create_job(
    r: RedisDep,
    keys: KeysDep,
    jobs: JobsDep,
    settings: SettingsDep,
    model_limits: dict[str, int],
    tenant: str,
    record: Batch,
    plan: JobPlan,
    extra: dict[str, str],
) -> None:
    """The batch's job; a job that is not created takes its batch record with it."""
    try:
        await create_planned(jobs, plan, settings, model_limits, tenant, extra=extra)
    except REDIS_UNAVAILABLE as exc:  # answered 503; a batch whose job Redis refused is not listed
        if redis_refused(exc):
            with contextlib.suppress(*REDIS_UNAVAILABLE):  # if this fails too, it shows as failed
                await r.delete(keys.batch(record.id))
                await r.zrem(keys.batches_index(tenant), record.id)
        raise
    except (AdmissionRejected, TenantLimitReached) as exc:
        await r.delete(keys.batch(record.id))
        await r.zrem(keys.batches_index(tenant), record.id)
        if isinstance(exc, TenantLimitReached):
            raise tenant_limit_error(exc, settings.retry_after_s) from None
        raise over_capacity(exc, settings.retry_after_s) from None


@router.get(
    "/v1/batches/{batch_id}",
    response_class=Response,
    summary="A batch",
    responses={200: describe.json_response(Batch, "The batch"), **_ERRORS},
)
async def get_batch(batch_id: BatchId, r: RedisDep, keys: KeysDep, jobs: JobsDep, tenant: TenantDep) -> Response:
    return as_json(await _view(jobs, await _load_batch(r, keys, tenant, batch_id)))


@router.post(
    "/v1/batches/{batch_id}/cancel",
    response_class=Response,
    summary="Cancel a batch",
    responses={
        200: describe.json_response(Batch, "The batch, cancelling"),
        409: describe.json_response(ApiError, "Finished"),
        **_ERRORS,
    },
)
async def cancel_batch(batch_id: BatchId, r: RedisDep, keys: KeysDep, jobs: JobsDep, tenant: TenantDep) -> Response:
    record = await _load_batch(r, keys, tenant, batch_id)
    if not record.job_id or record.status == BatchStatus.FAILED:
        raise ApiException(
            409, f"batch {batch_id} failed validation; there is nothing to cancel", type="batch_finished"
        )
    try:
        await jobs.stop(record.job_id, JobStatus.CANCELLED.value)
    except StopRefused as exc:
        if exc.status not in (JobStatus.CANCELLED, None):
            raise ApiException(
                409, f"batch {batch_id} is already {batch_status(exc.status)}", type="batch_finished"
            ) from None
    return as_json(await _view(jobs, record))


@router.get(
    "/v1/batches",
    response_class=Response,
    summary="Batches, newest first",
    responses={200: describe.json_response(BatchList, "A page of batches, newest first"), **_ERRORS},
)
async def list_batches(
    r: RedisDep,
    keys: KeysDep,
    jobs: JobsDep,
    tenant: TenantDep,
    limit: Limit = DEFAULT_LIMIT,
    after: AfterBatch = None,
) -> Response:
    index = keys.batches_index(tenant)
    position, by_id = await start_at(r, index, after, newest_first=True)

    async def load(ids: list[str]) -> list[Batch | None]:
        raws = await r.mget([keys.batch(i) for i in ids])
        return [None if raw is None else _decode_record(raw) for raw in raws]

    found = await read_indexes(r, [index], after=position, by_id=by_id, want=limit + 1, newest_first=True, load=load)
    shown = [await _view(jobs, record) for record in found[:limit]]  # the one beyond only says more follow
    return as_json(openai_page_of(shown + found[limit:], limit, _id))


@router.get(
    "/v1/files",
    response_class=Response,
    summary="Files, newest first",
    responses={200: describe.json_response(FileList, "A page of the tenant's uploaded files, newest first"), **_ERRORS},
)
async def list_files(
    files: FilesDep, tenant: TenantDep, limit: Limit = DEFAULT_LIMIT, after: AfterFile = None
) -> Response:
    return as_json(openai_page_of(await files.read(tenant, after, limit + 1), limit, _id))


def _id(item: Batch | FileObject) -> str:
    return item.id
