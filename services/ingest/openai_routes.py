"""OpenAI-compatible Files and Batches endpoints, so the official `openai` SDK and existing batch
pipelines work against inferq by changing the base URL. A batch runs as an inferq job: routing,
flow control, cancel, expiry and events are the job's."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, AsyncIterator

import msgspec
from fastapi import FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from services.ingest import openapi
from services.ingest.batch_input import parse_batch_file
from services.ingest.errors import ApiException, over_capacity
from services.ingest.limits import tenant_limit_error
from services.ingest.submission import plan_job
from shared.api import ApiError, Job, ResultLine
from shared.ids import new_file_id
from shared.jobstore import NO_LIMIT, AdmissionRejected, JobStore, StopRefused, TenantLimitReached
from shared.keys import Keys
from shared.models_config import ModelsConfig
from shared.openai_batch import (Batch, BatchCreate, BatchError, BatchErrors, BatchList, BatchRequestCounts, BatchUsage,
                                 FileDeleted, FileObject, LineError, OutputLine, ResponseBody)
from shared.settings import Settings

_enc = msgspec.json.Encoder()
_batch_dec = msgspec.json.Decoder(Batch)
_file_dec = msgspec.json.Decoder(FileObject)
_create_dec = msgspec.json.Decoder(BatchCreate)
_line_dec = msgspec.json.Decoder(ResultLine)
FileId = Annotated[str, Path(pattern=r"^file-[0-9a-z]{26}(-output|-errors)?$", description="A file id")]
BatchId = Annotated[str, Path(pattern=r"^batch_[0-9a-z]{26}$", description="A batch id")]
_STATUS = {"queued": "in_progress", "in_progress": "in_progress", "expiring": "in_progress", "completed": "completed",
           "cancelling": "cancelling", "cancelled": "cancelled", "expired": "expired", "failed": "failed"}
_BATCH_CODES = {"job_cancelled": "batch_cancelled", "job_expired": "batch_expired"}  # OpenAI's names
_TERMINAL = {"completed", "cancelled", "expired"}
_ERRORS = {
    400: openapi.json_response(ApiError, "Malformed request"),
    404: openapi.json_response(ApiError, "Not found"),
    413: openapi.json_response(ApiError, "Too large"),
    422: openapi.json_response(ApiError, "Invalid field; `error.field` names it"),
    429: openapi.json_response(ApiError, "Over capacity; retry after `Retry-After` seconds"),
    503: openapi.json_response(ApiError, "Redis unavailable; nothing was written"),
}


def _json(obj, status: int = 200) -> Response:
    return Response(_enc.encode(obj), status_code=status, media_type="application/json")


def job_id_of(batch_id: str) -> str:
    return "job_" + batch_id.removeprefix("batch_")


def batch_id_of(job_id: str) -> str:
    return "batch_" + job_id.removeprefix("job_")


def batch_view(record: Batch, job: Job | None, now: int) -> Batch:
    """The batch as OpenAI shows it: the stored record, with state from the job it runs as."""
    if record.status == "failed" or record.job_id is None:
        return record
    view = msgspec.structs.replace(record)
    if job is None:  # the job's record is gone: past its retention, or the submission was cut short
        if now - record.created_at < 60:
            view.status = "validating"
        else:
            view.status, view.failed_at = "failed", record.created_at
            view.errors = BatchErrors(data=[BatchError(code="job_not_found", message=f"job {record.job_id} no longer exists")])
        return view
    c = job.request_counts
    view.status = _STATUS[job.status]
    view.in_progress_at = job.created_at
    view.expires_at = job.expires_at
    view.request_counts = BatchRequestCounts(total=c.total, completed=c.succeeded, failed=c.failed)
    view.usage = BatchUsage(input_tokens=job.usage.prompt_tokens, output_tokens=job.usage.completion_tokens,
                            total_tokens=job.usage.prompt_tokens + job.usage.completion_tokens)
    if job.status in ("cancelling", "cancelled"):
        view.cancelling_at = job.cancelled_at
    if job.status == "cancelled":
        view.cancelled_at = job.completed_at
    if job.status == "expired":
        view.expired_at = job.expired_at or job.completed_at
    if job.status in _TERMINAL:
        view.finalizing_at = view.completed_at = job.completed_at if job.status == "completed" else None
        suffix = record.id.removeprefix("batch_")
        if c.succeeded:
            view.output_file_id = f"file-{suffix}-output"
        if c.failed + c.cancelled + c.expired:
            view.error_file_id = f"file-{suffix}-errors"
    return view


def output_line(line: ResultLine, endpoint: str, created: int) -> OutputLine:
    """One result as an OpenAI batch output (or error) line."""
    if line.status != "succeeded":
        code = line.error.code if line.error else line.status
        code = _BATCH_CODES.get(code, code)
        message = line.error.message if line.error else f"the request was {line.status} before it ran"
        return OutputLine(id=f"batch_req_{line.request_id}", custom_id=line.custom_id, response=None,
                          error=LineError(code=code, message=message))
    text = line.output.text if line.output else ""
    finish = line.output.finish_reason if line.output else "stop"
    usage = {"prompt_tokens": line.usage.prompt_tokens, "completion_tokens": line.usage.completion_tokens,
             "total_tokens": line.usage.prompt_tokens + line.usage.completion_tokens}
    if endpoint == "/v1/chat/completions":
        body = {"id": f"chatcmpl-{line.request_id}", "object": "chat.completion", "created": created, "model": line.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                             "logprobs": None}], "usage": usage}
    else:
        body = {"id": f"cmpl-{line.request_id}", "object": "text_completion", "created": created, "model": line.model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], "usage": usage}
    return OutputLine(id=f"batch_req_{line.request_id}", custom_id=line.custom_id,
                      response=ResponseBody(status_code=200, request_id=line.request_id, body=body), error=None)


def install(app: FastAPI, settings: Settings, models: ModelsConfig, keys: Keys, tenant_of: Callable[[Request], str],
            model_limits: dict[str, int]) -> None:
    def not_found(what: str, ident: str, field: str) -> ApiException:
        return ApiException(404, f"{what} {ident} not found", type="not_found", field=field)

    async def owns(request: Request, index: str, ident: str) -> bool:
        return await request.app.state.redis.zscore(index, ident) is not None

    async def owned_file(request: Request, file_id: str) -> None:
        """404 for a file of another tenant: it is indistinguishable from a missing one."""
        if not await owns(request, keys.files_index(tenant_of(request)), file_id):
            raise not_found("file", file_id, "file_id")

    async def load_batch(request: Request, batch_id: str) -> Batch:
        raw = await request.app.state.redis.get(keys.batch(batch_id))
        if raw is None or not await owns(request, keys.batches_index(tenant_of(request)), batch_id):
            raise not_found("batch", batch_id, "batch_id")
        return _batch_dec.decode(raw)

    async def view(request: Request, record: Batch) -> Batch:
        job = await request.app.state.jobs.get(record.job_id) if record.job_id else None
        return batch_view(record, job, int(time.time()))

    @app.post("/v1/files", response_class=Response, summary="Upload a batch input file (OpenAI Files API)",
              responses={200: openapi.json_response(FileObject, "The stored file"), **_ERRORS})
    async def upload_file(request: Request, file: Annotated[UploadFile, File(description="JSONL, one request per line")],
                          purpose: Annotated[str, Form(description="must be `batch`")]) -> Response:
        if purpose != "batch":
            raise ApiException(422, f"purpose: {purpose!r} is not supported; use 'batch'", field="purpose")
        content = await file.read(settings.max_body_bytes + 1)
        if len(content) > settings.max_body_bytes:
            raise ApiException(413, f"file: larger than the limit of {settings.max_body_bytes} bytes", type="request_too_large", field="file")
        meta = FileObject(id=new_file_id(), bytes=len(content), created_at=int(time.time()),
                          filename=file.filename or "input.jsonl", purpose="batch")
        r = request.app.state.redis
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(keys.file(meta.id), mapping={"meta": _enc.encode(meta), "content": content})
            pipe.expire(keys.file(meta.id), settings.job_ttl_s)
            pipe.zadd(keys.files_index(tenant_of(request)), {meta.id: meta.created_at})
            await pipe.execute()
        return _json(meta)

    async def output_file(request: Request, file_id: str) -> tuple[Batch, Batch, bool]:
        batch_id = "batch_" + file_id.removeprefix("file-").rsplit("-", 1)[0]
        record = await load_batch(request, batch_id)
        shown = await view(request, record)
        wanted = file_id.endswith("-output")
        if (shown.output_file_id if wanted else shown.error_file_id) != file_id:
            raise not_found("file", file_id, "file_id")
        return record, shown, wanted

    async def render(request: Request, record: Batch, errors: bool) -> AsyncIterator[bytes]:
        jobs: JobStore = request.app.state.jobs
        cursor = None
        while True:
            page = await jobs.read_results(record.job_id, cursor, 1000)
            if not page:
                return
            out = bytearray()
            for entry_id, raw in page:
                line = _line_dec.decode(raw)
                if (line.status != "succeeded") == errors:
                    out += _enc.encode(output_line(line, record.endpoint, record.created_at)) + b"\n"
            cursor = page[-1][0].decode()
            if out:
                yield bytes(out)

    @app.get("/v1/files/{file_id}", response_class=Response, summary="A file's metadata",
             responses={200: openapi.json_response(FileObject, "The file"), **_ERRORS})
    async def get_file(request: Request, file_id: FileId) -> Response:
        if file_id.endswith(("-output", "-errors")):
            record, shown, wanted = await output_file(request, file_id)
            size = 0
            async for chunk in render(request, record, errors=not wanted):
                size += len(chunk)
            return _json(FileObject(id=file_id, bytes=size, created_at=shown.completed_at or shown.created_at,
                                    filename=f"{record.id}_{'output' if wanted else 'errors'}.jsonl", purpose="batch_output"))
        await owned_file(request, file_id)
        raw = await request.app.state.redis.hget(keys.file(file_id), "meta")
        if raw is None:
            raise not_found("file", file_id, "file_id")
        return _json(_file_dec.decode(raw))

    @app.get("/v1/files/{file_id}/content", summary="A file's content (batch input, output or errors, JSONL)",
             responses={200: {"description": "JSONL", "content": {"application/jsonl": {}}}, **_ERRORS})
    async def get_file_content(request: Request, file_id: FileId):
        if file_id.endswith(("-output", "-errors")):
            record, _, wanted = await output_file(request, file_id)
            return StreamingResponse(render(request, record, errors=not wanted), media_type="application/jsonl")
        await owned_file(request, file_id)
        content = await request.app.state.redis.hget(keys.file(file_id), "content")
        if content is None:
            raise not_found("file", file_id, "file_id")
        return Response(content, media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}", response_class=Response, summary="Delete an uploaded file",
                responses={200: openapi.json_response(FileDeleted, "Deleted"), **_ERRORS})
    async def delete_file(request: Request, file_id: FileId) -> Response:
        await owned_file(request, file_id)
        r = request.app.state.redis
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(keys.file(file_id))
            pipe.zrem(keys.files_index(tenant_of(request)), file_id)
            deleted, _ = await pipe.execute()
        if not deleted:
            raise not_found("file", file_id, "file_id")
        return _json(FileDeleted(id=file_id))

    @app.post("/v1/batches", response_class=Response, summary="Create a batch from an uploaded file (OpenAI Batch API)",
              description="Valid files start at once as a job (`in_progress`); a file with invalid lines gives a `failed` "
                          "batch whose `errors` name each line, as OpenAI does.",
              openapi_extra=openapi.json_body(BatchCreate),
              responses={200: openapi.json_response(Batch, "The batch"), **_ERRORS})
    async def create_batch(request: Request) -> Response:
        try:
            create = _create_dec.decode(await request.body())
        except msgspec.ValidationError as exc:
            msg, _, path = str(exc).rpartition(" - at `")
            field = path.rstrip("`").removeprefix("$.") or None
            raise ApiException(422, f"{field}: {msg}" if field else str(exc), field=field) from None
        except msgspec.DecodeError as exc:
            raise ApiException(400, f"malformed JSON: {exc}", field="body") from None
        r = request.app.state.redis
        tenant = tenant_of(request)
        content = await r.hget(keys.file(create.input_file_id), "content")
        if content is None or not await owns(request, keys.files_index(tenant), create.input_file_id):
            raise not_found("file", create.input_file_id, "input_file_id")
        now = int(time.time())
        requests, line_of, errors = parse_batch_file(content, create.endpoint, models)
        job_body = msgspec.json.encode({"requests": requests, "completion_window": create.completion_window,
                                        "metadata": create.metadata or {}})
        plan = None
        if not errors:
            try:
                plan = plan_job(job_body, models, settings.max_requests_per_job, settings.max_prompt_chars)
            except ApiException as exc:
                line = line_of[exc.body.index] if exc.body.index is not None else None
                message = exc.body.message.replace(f"requests[{exc.body.index}]", f"line {line}") if line else exc.body.message
                errors = [BatchError(code=exc.body.type, message=message, line=line)]
        if plan is None:
            record = Batch(id=batch_id_of("job_" + new_file_id()[5:]), endpoint=create.endpoint, input_file_id=create.input_file_id,
                           completion_window=create.completion_window, status="failed", created_at=now, failed_at=now,
                           errors=BatchErrors(data=errors), metadata=create.metadata)
        else:
            record = Batch(id=batch_id_of(plan.job_id), endpoint=create.endpoint, input_file_id=create.input_file_id,
                           completion_window=create.completion_window, status="validating", created_at=now,
                           metadata=create.metadata, job_id=plan.job_id,
                           request_counts=BatchRequestCounts(total=len(requests)))
        if plan is not None:
            await request.app.state.limits.admit(tenant, len(requests))
        async with r.pipeline(transaction=True) as pipe:  # the record first: a crash before the job shows as failed
            pipe.set(keys.batch(record.id), _enc.encode(record), ex=settings.job_ttl_s)
            pipe.zadd(keys.batches_index(tenant), {record.id: now})
            await pipe.execute()
        if plan is not None:
            try:
                await request.app.state.jobs.create(
                    plan.job_id, plan.created_ms, plan.model_totals, plan.metadata, plan.chunks, priority=plan.priority,
                    expires_ms=plan.expires_ms, model_limits=model_limits, global_limit=settings.max_backlog,
                    tenant=tenant, tenant_limit=settings.tenant_max_queued or NO_LIMIT)
            except (AdmissionRejected, TenantLimitReached) as exc:
                await r.delete(keys.batch(record.id))
                await r.zrem(keys.batches_index(tenant), record.id)
                if isinstance(exc, TenantLimitReached):
                    raise tenant_limit_error(exc, settings.retry_after_s) from None
                raise over_capacity(exc, settings.retry_after_s) from None
        return _json(await view(request, record))

    @app.get("/v1/batches/{batch_id}", response_class=Response, summary="A batch",
             responses={200: openapi.json_response(Batch, "The batch"), **_ERRORS})
    async def get_batch(request: Request, batch_id: BatchId) -> Response:
        return _json(await view(request, await load_batch(request, batch_id)))

    @app.post("/v1/batches/{batch_id}/cancel", response_class=Response, summary="Cancel a batch",
              responses={200: openapi.json_response(Batch, "The batch, cancelling"), 409: openapi.json_response(ApiError, "Finished"), **_ERRORS})
    async def cancel_batch(request: Request, batch_id: BatchId) -> Response:
        record = await load_batch(request, batch_id)
        if record.job_id is None or record.status == "failed":
            raise ApiException(409, f"batch {batch_id} failed validation; there is nothing to cancel", type="batch_finished")
        try:
            await request.app.state.jobs.stop(record.job_id, "cancelled")
        except StopRefused as exc:
            if exc.status not in ("cancelled", None):
                raise ApiException(409, f"batch {batch_id} is already {_STATUS.get(exc.status, exc.status)}",
                                   type="batch_finished") from None
        return _json(await view(request, record))

    @app.get("/v1/batches", response_class=Response, summary="Batches, newest first",
             responses={200: openapi.json_response(BatchList, "A page of batches"), **_ERRORS})
    async def list_batches(request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           after: Annotated[str | None, Query(pattern=r"^batch_[0-9a-z]{26}$")] = None) -> Response:
        r = request.app.state.redis
        index = keys.batches_index(tenant_of(request))
        start = 0
        if after is not None:
            rank = await r.zrevrank(index, after)
            if rank is None:
                raise ApiException(422, f"after: batch {after} not found", field="after")
            start = rank + 1
        ids = [i.decode() for i in await r.zrevrange(index, start, start + limit)]
        page, more = ids[:limit], len(ids) > limit
        raws = await r.mget([keys.batch(i) for i in page]) if page else []
        data = [await view(request, _batch_dec.decode(raw)) for raw in raws if raw is not None]
        return _json(BatchList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                               has_more=more))
