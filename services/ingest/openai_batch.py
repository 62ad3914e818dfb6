"""OpenAI Batch API objects (files, batches, input and output lines), as the official SDK expects
them; a batch is an inferq job underneath."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.core import states
from shared.core.pages import OpenAIPage
from shared.wire.api import Deadline, DeadlineRisk

# Built at run time from shared/core/states.py; the type checker sees a plain string.
if TYPE_CHECKING:
    BatchStatus = str
else:
    BatchStatus = Literal[tuple(s.value for s in states.BatchStatus)]
Endpoint = Literal["/v1/chat/completions", "/v1/completions"]


class FileObject(Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["uploaded", "processed", "error"] = "processed"


class FileList(OpenAIPage[FileObject], kw_only=True):
    """GET /v1/files: the tenant's uploaded files, newest first."""


class FileDeleted(Struct, kw_only=True):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchError(Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    line: int | None = None  # 1-based line of the input file
    param: str | None = None


class BatchErrors(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchRequestCounts(Struct, kw_only=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchUsage(Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class Batch(Struct, kw_only=True):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    errors: BatchErrors | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = msgspec.field(default_factory=BatchRequestCounts)
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None
    # the inferq job that runs it (an extension); absent for a batch that failed validation, never
    # null: an id a client follows always exists
    job_id: str | msgspec.UnsetType = msgspec.UNSET


class BatchList(OpenAIPage[Batch], kw_only=True):
    """GET /v1/batches: the tenant's batches, newest first."""


class BatchCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    input_file_id: Annotated[str, Meta(min_length=1, max_length=128)]
    endpoint: Endpoint
    completion_window: Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,5}[smhd]$")] = "24h"
    metadata: (
        Annotated[dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]
        | None
    ) = None
    output_expires_after: dict[str, Any] | None = None  # accepted for compatibility; outputs follow the job TTL
    # inferq's own (the OpenAI SDK sends them with `extra_body`; or as `metadata` keys of the same names)
    deadline: Deadline | None = None
    on_deadline_risk: DeadlineRisk | None = None


class InputLine(Struct, kw_only=True):
    """One line of a batch input file."""

    custom_id: Annotated[str, Meta(min_length=1, max_length=512)]
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class ResponseBody(Struct, kw_only=True):
    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(Struct, kw_only=True):
    code: str
    message: str


class OutputLine(Struct, kw_only=True):
    """One line of a batch output or error file."""

    id: str
    custom_id: str
    response: ResponseBody | None
    error: LineError | None
