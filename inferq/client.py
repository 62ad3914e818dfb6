"""Python clients for the inferq API: `Client` (blocking) and `AsyncClient`.

with Client("http://127.0.0.1:8000") as client:
    job = client.submit([{"model": "echo-small", "prompt": "Hello"}])
    job = client.wait(job.id, on_progress=lambda j: print(j.request_counts))
    for line in client.results(job.id):
        print(line.custom_id, line.output.text if line.output else line.error.message)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import httpx
import msgspec

from shared.core.states import FINAL_JOB_STATES
from shared.wire.api import ApiError, Job, JobList, ModelInfo, ModelList, Quote, ResultLine

T = TypeVar("T")
TERMINAL = FINAL_JOB_STATES
_results_decoder = msgspec.json.Decoder(ResultLine)


class InferqError(Exception):
    """The API answered with an error; `status` is the HTTP status, `error` the body's error."""

    def __init__(self, status: int, message: str, error=None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.error = error


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _job_body(requests, body, priority, completion_window, metadata) -> bytes:
    doc = dict(body or {})
    if requests is not None:
        doc["requests"] = list(requests)
    for name, value in (("priority", priority), ("completion_window", completion_window), ("metadata", metadata)):
        if value is not None:
            doc[name] = value
    return msgspec.json.encode(doc)


def raise_api_error(resp: httpx.Response) -> None:
    """InferqError for an error answer (4xx/5xx), with the body's `error` when it has one
    (a 409 deadline_infeasible carries its `quote` there)."""
    if resp.status_code >= 400:
        try:
            err = msgspec.json.decode(resp.content, type=ApiError).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise InferqError(resp.status_code, resp.text[:500] or resp.reason_phrase) from None
        raise InferqError(resp.status_code, err.message, err)


def _decode(resp: httpx.Response, type_: type[T]) -> T:
    raise_api_error(resp)
    return msgspec.json.decode(resp.content, type=type_)


def _results_params(after: str | None, wait: bool) -> dict[str, str]:
    return {**({"after": after} if after else {}), **({"wait": "true"} if wait else {})}


def _jobs_params(status, metadata, limit, after) -> dict[str, str | int]:
    params: dict[str, str | int] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if metadata is not None:
        key, value = metadata
        params[f"metadata[{key}]"] = value
    if after is not None:
        params["after"] = after
    return params


def _line(raw: str) -> ResultLine | None:
    return _results_decoder.decode(raw) if raw.strip() else None


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        requests=None,
        *,
        body: dict | None = None,
        priority: str | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job: a list of requests, or a whole body (`{"requests": ...}` or `{"prompts": ...}`)."""
        headers = {
            "Content-Type": "application/json",
            **({"Idempotency-Key": idempotency_key} if idempotency_key else {}),
        }
        content = _job_body(requests, body, priority, completion_window, metadata)
        return _decode(self._http.post("/v1/jobs", content=content, headers=headers), Job)

    def quote(
        self,
        requests=None,
        *,
        body: dict | None = None,
        priority: str | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Quote:
        """What a job would take and cost if submitted now (nothing is written): the body of
        `submit`, or `{"input_file_id": ...}` for an uploaded OpenAI batch input file."""
        content = _job_body(requests, body, priority, completion_window, metadata)
        resp = self._http.post("/v1/jobs/quote", content=content, headers={"Content-Type": "application/json"})
        return _decode(resp, Quote)

    def get(self, job_id: str) -> Job:
        return _decode(self._http.get(f"/v1/jobs/{job_id}"), Job)

    def cancel(self, job_id: str) -> Job:
        return _decode(self._http.post(f"/v1/jobs/{job_id}/cancel"), Job)

    def models(self) -> list[ModelInfo]:
        return _decode(self._http.get("/v1/models"), ModelList).data

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job is finished (completed, cancelled or expired); TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout}s")
            time.sleep(poll_s)

    def jobs(
        self,
        *,
        status: str | None = None,
        metadata: tuple[str, str] | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobList:
        """One page of your jobs, newest first; pass its `next_cursor` as `after` while `has_more`."""
        return _decode(self._http.get("/v1/jobs", params=_jobs_params(status, metadata, limit, after)), JobList)

    def results(self, job_id: str, *, after: str | None = None, wait: bool = False) -> Iterator[ResultLine]:
        """Every result line, in the order they finished, read as one stream (after cursor `after`
        if given); with `wait`, also the lines still to come, until the job has ended."""
        timeout = httpx.Timeout(self._timeout, read=None) if wait else self._timeout
        url = f"/v1/jobs/{job_id}/results"
        with self._http.stream("GET", url, params=_results_params(after, wait), timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                _decode(resp, dict)
            for raw in resp.iter_lines():
                line = _line(raw)
                if line is not None:
                    yield line

    def results_page(
        self,
        job_id: str,
        *,
        after: str | None = None,
        limit: int = 1000,
        wait: bool = False,
        timeout: float | httpx.Timeout | None = None,
    ) -> ResultsPage:
        """One page of result lines after cursor `after`; with `wait`, a long poll: answered once
        there is a line, or empty once the job has ended (httpx.ReadTimeout past `timeout`)."""
        params = {"limit": str(limit), **_results_params(after, wait)}
        resp = self._http.get(f"/v1/jobs/{job_id}/results", params=params, timeout=timeout or self._timeout)
        if resp.status_code >= 400:
            _decode(resp, dict)
        lines = [line for raw in resp.text.splitlines() if (line := _line(raw)) is not None]
        return ResultsPage(
            lines=lines,
            cursor=resp.headers.get("Inferq-Next-Cursor") or after,
            job_status=resp.headers.get("Inferq-Job-Status", ""),
        )


class ResultsPage(msgspec.Struct, kw_only=True):
    lines: list[ResultLine]
    cursor: str | None  # pass as `after` for the next page
    job_status: str  # as read just before the first line


class AsyncClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._timeout = timeout

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        requests=None,
        *,
        body: dict | None = None,
        priority: str | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        headers = {
            "Content-Type": "application/json",
            **({"Idempotency-Key": idempotency_key} if idempotency_key else {}),
        }
        content = _job_body(requests, body, priority, completion_window, metadata)
        return _decode(await self._http.post("/v1/jobs", content=content, headers=headers), Job)

    async def quote(
        self,
        requests=None,
        *,
        body: dict | None = None,
        priority: str | None = None,
        completion_window: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Quote:
        content = _job_body(requests, body, priority, completion_window, metadata)
        resp = await self._http.post("/v1/jobs/quote", content=content, headers={"Content-Type": "application/json"})
        return _decode(resp, Quote)

    async def get(self, job_id: str) -> Job:
        return _decode(await self._http.get(f"/v1/jobs/{job_id}"), Job)

    async def cancel(self, job_id: str) -> Job:
        return _decode(await self._http.post(f"/v1/jobs/{job_id}/cancel"), Job)

    async def models(self) -> list[ModelInfo]:
        return _decode(await self._http.get("/v1/models"), ModelList).data

    async def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Job], None] | None = None,
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout}s")
            await asyncio.sleep(poll_s)

    async def jobs(
        self,
        *,
        status: str | None = None,
        metadata: tuple[str, str] | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> JobList:
        resp = await self._http.get("/v1/jobs", params=_jobs_params(status, metadata, limit, after))
        return _decode(resp, JobList)

    async def results(self, job_id: str, *, after: str | None = None, wait: bool = False) -> AsyncIterator[ResultLine]:
        timeout = httpx.Timeout(self._timeout, read=None) if wait else self._timeout
        url = f"/v1/jobs/{job_id}/results"
        async with self._http.stream("GET", url, params=_results_params(after, wait), timeout=timeout) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _decode(resp, dict)
            async for raw in resp.aiter_lines():
                line = _line(raw)
                if line is not None:
                    yield line
