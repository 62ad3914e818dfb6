"""A job's output while it runs and after: result lines by cursor (NDJSON), and live events (SSE)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from services.ingest import job_events, patterns, result_stream
from services.ingest.access import owned_job
from services.ingest.cursors import valid_cursor
from services.ingest.deps import JobsDep, KeysDep, RedisDep
from services.ingest.errors.client import ApiException
from services.ingest.openapi import describe
from services.ingest.paths import JobId
from shared.core.states import FINAL_JOB_STATES
from shared.wire.api import ResultLine
from shared.wire.events import JobEvent, RequestEvent

router = APIRouter()


ResultsAfter = Annotated[
    str | None,
    Query(pattern=patterns.STREAM_ID, description="Only lines after this cursor (a page's Inferq-Next-Cursor header)"),
]
ResultsLimit = Annotated[int | None, Query(ge=1, le=10_000, description="Return one page of at most this many lines")]
ResultsWait = Annotated[
    bool,
    Query(
        description="Keep the body open until the job has ended, sending lines as they finish; with `limit`, "
        "answer once the page has a line or the job has ended"
    ),
]


@router.get(
    "/v1/jobs/{job_id}/results",
    response_class=Response,
    summary="Stream finished results as NDJSON",
    description=(
        "One JSON line per finished request, in the order they finished. Works while the job runs. Without "
        "`limit`, the body holds every line there is (chunked: the download of a large job starts at once and "
        "the server's memory stays flat). With `wait=true` it stays open until the job has ended, sending lines "
        "as they finish, and then closes. With `limit`, one page: the `Inferq-Next-Cursor` response header holds "
        "the cursor of its last line (pass it as `after` to continue) and `Inferq-Result-Count` its number of "
        "lines; with `wait=true` too, the page is answered once it has a line, or empty once the job has ended "
        "(a long poll). `after` also skips the lines up to that cursor in a full read. `Inferq-Job-Status` "
        "carries the job's status as read just before the first line: when it is final, no line is missing."
    ),
    responses={
        200: {"description": "Result lines", "content": {"application/x-ndjson": {"schema": describe.ref(ResultLine)}}},
        **describe.ERRORS,
    },
)
async def get_results(
    request: Request,
    job_id: JobId,
    jobs: JobsDep,
    r: RedisDep,
    keys: KeysDep,
    after: ResultsAfter = None,
    limit: ResultsLimit = None,
    wait: ResultsWait = False,
) -> Response:
    if after is not None and not valid_cursor(after):
        raise ApiException(
            422, f"after: {after!r} is not a results cursor (use the Inferq-Next-Cursor header)", field="after"
        )
    status = await owned_job(request, job_id)
    if limit is not None and wait:
        rows, now = await result_stream.page_when_ready(request, r, keys, jobs, job_id, after, limit)
        status = now or status
    else:
        rows = await jobs.read_results(job_id, after, limit or result_stream.PAGE)
    if limit is None:
        lines = result_stream.result_lines(request, r, keys, jobs, job_id, rows, after, wait)
        return StreamingResponse(
            lines,
            media_type="application/x-ndjson",
            headers={"Inferq-Job-Status": status, "X-Accel-Buffering": "no"},
        )
    cursor = rows[-1][0].decode() if rows else (after or "")
    return Response(
        result_stream.chunk(rows),
        media_type="application/x-ndjson",
        headers={"Inferq-Next-Cursor": cursor, "Inferq-Job-Status": status, "Inferq-Result-Count": str(len(rows))},
    )


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    summary="Follow a job's events live (Server-Sent Events)",
    description=(
        "One `request.completed` event per finished request (a CloudEvents 1.0 document, its id a results cursor), "
        "then the job's own event (`job.completed`, `job.cancelled`, `job.expired`) with id `end`, then the stream "
        "closes. Reconnect with `Last-Event-ID` to continue where it stopped."
    ),
    responses={
        200: describe.sse_response(
            "Events until the job's own, then the stream closes",
            {"request.completed": [RequestEvent], **{f"job.{s.value}": [JobEvent] for s in sorted(FINAL_JOB_STATES)}},
            patterns.LAST_EVENT_ID,
        ),
        **describe.ERRORS,
    },
)
async def follow_job(
    request: Request,
    job_id: JobId,
    jobs: JobsDep,
    r: RedisDep,
    keys: KeysDep,
    last_event_id: Annotated[
        str | None,
        Header(pattern=patterns.LAST_EVENT_ID, description="Id of the last event received, to resume after it"),
    ] = None,
) -> StreamingResponse:
    if not job_events.valid_last_event_id(last_event_id):
        raise ApiException(
            422, f"Last-Event-ID: {last_event_id!r} is not an event id of this stream", field="Last-Event-ID"
        )
    await owned_job(request, job_id)
    stream = job_events.job_events(request, r, keys, jobs, job_id, last_event_id)
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
