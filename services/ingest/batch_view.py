"""An inferq job seen as an OpenAI batch: its status, counts and output files, and each result as
an OpenAI batch output line. A batch runs as the job with the same id suffix."""

from __future__ import annotations

import msgspec

from services.ingest.openai_batch import (
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchUsage,
    LineError,
    OutputLine,
    ResponseBody,
)
from shared.core.states import FINAL_JOB_STATES, BatchStatus, JobStatus, RequestStatus
from shared.wire.api import Job, ResultLine

# A job's status -> the batch's (OpenAI's names).
_STATUS: dict[str, BatchStatus] = {
    JobStatus.QUEUED: BatchStatus.IN_PROGRESS,
    JobStatus.IN_PROGRESS: BatchStatus.IN_PROGRESS,
    JobStatus.EXPIRING: BatchStatus.IN_PROGRESS,
    JobStatus.COMPLETED: BatchStatus.COMPLETED,
    JobStatus.CANCELLING: BatchStatus.CANCELLING,
    JobStatus.CANCELLED: BatchStatus.CANCELLED,
    JobStatus.EXPIRED: BatchStatus.EXPIRED,
    JobStatus.FAILED: BatchStatus.FAILED,
}
_BATCH_CODES = {"job_cancelled": "batch_cancelled", "job_expired": "batch_expired"}  # OpenAI's names
# A failed job never ran: it has no output files to show.
_WITH_FILES = FINAL_JOB_STATES - {JobStatus.FAILED}


def job_id_of(batch_id: str) -> str:
    return "job_" + batch_id.removeprefix("batch_")


def batch_id_of(job_id: str) -> str:
    return "batch_" + job_id.removeprefix("job_")


def batch_status(job_status: str) -> str:
    return _STATUS.get(job_status, job_status)


def batch_view(record: Batch, job: Job | None, now: int) -> Batch:
    """The batch as OpenAI shows it: the stored record, with state from the job it runs as."""
    if record.status == BatchStatus.FAILED or not record.job_id:
        return record
    view = msgspec.structs.replace(record)
    if job is None:  # the job's record is gone: past its retention, or the submission was cut short
        if now - record.created_at < 60:
            view.status = BatchStatus.VALIDATING
        else:
            view.status, view.failed_at = BatchStatus.FAILED, record.created_at
            view.errors = BatchErrors(
                data=[BatchError(code="job_not_found", message=f"job {record.job_id} no longer exists")]
            )
        return view
    c = job.request_counts
    view.status = _STATUS[job.status]
    view.in_progress_at = job.created_at
    view.expires_at = job.expires_at
    view.request_counts = BatchRequestCounts(total=c.total, completed=c.succeeded, failed=c.failed)
    view.usage = BatchUsage(
        input_tokens=job.usage.prompt_tokens,
        output_tokens=job.usage.completion_tokens,
        total_tokens=job.usage.prompt_tokens + job.usage.completion_tokens,
    )
    if job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        view.cancelling_at = job.cancelled_at
    if job.status == JobStatus.CANCELLED:
        view.cancelled_at = job.completed_at
    if job.status == JobStatus.EXPIRED:
        view.expired_at = job.expired_at or job.completed_at
    if job.status in _WITH_FILES:
        view.finalizing_at = view.completed_at = job.completed_at if job.status == JobStatus.COMPLETED else None
        suffix = record.id.removeprefix("batch_")
        if c.succeeded:
            view.output_file_id = f"file-{suffix}-output"
        if c.failed + c.cancelled + c.expired:
            view.error_file_id = f"file-{suffix}-errors"
    return view


def output_line(line: ResultLine, endpoint: str, created: int) -> OutputLine:
    """One result as an OpenAI batch output (or error) line."""
    if line.status != RequestStatus.SUCCEEDED:
        code = line.error.code if line.error else line.status
        code = _BATCH_CODES.get(code, code)
        message = line.error.message if line.error else f"the request was {line.status} before it ran"
        return OutputLine(
            id=f"batch_req_{line.request_id}",
            custom_id=line.custom_id,
            response=None,
            error=LineError(code=code, message=message),
        )
    text = line.output.text if line.output else ""
    # OpenAI's vocabulary has no `repetition`: the model stopped on its own there too
    finish = "length" if line.output and line.output.finish_reason == "length" else "stop"
    usage = {
        "prompt_tokens": line.usage.prompt_tokens,
        "completion_tokens": line.usage.completion_tokens,
        "total_tokens": line.usage.prompt_tokens + line.usage.completion_tokens,
    }
    if endpoint == "/v1/chat/completions":
        body = {
            "id": f"chatcmpl-{line.request_id}",
            "object": "chat.completion",
            "created": created,
            "model": line.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
    else:
        body = {
            "id": f"cmpl-{line.request_id}",
            "object": "text_completion",
            "created": created,
            "model": line.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }
    return OutputLine(
        id=f"batch_req_{line.request_id}",
        custom_id=line.custom_id,
        response=ResponseBody(status_code=200, request_id=line.request_id, body=body),
        error=None,
    )
