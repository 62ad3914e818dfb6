"""The `openai` engine: forward requests to any OpenAI-compatible HTTP endpoint (vllm serve,
Ollama, llama.cpp server, a hosted API) so existing servers can be fed from inferq's queues.

Up to `max_concurrency` requests are in flight at once. 408, 409, 429 and 5xx answers and
connection errors are retried inside the engine with exponential backoff, waiting at least what
`Retry-After` asks; when those retries run out the error is reported as retryable, so the worker's
own retry policy and dead-lettering apply. Any other 4xx fails the request at once with the
upstream's message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from typing import Any

import httpx
import msgspec

from services.inference.engines.base import EngineError, Generation
from shared.catalog.models import OpenAIOptions
from shared.core.backoff import exponential_delay
from shared.wire.contract import Contract
from shared.wire.messages import InferenceRequest

log = logging.getLogger("inferq.engine.openai")
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    text: str | None = None
    message: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


_decode = msgspec.json.Decoder(_Completion).decode


class OpenAIEngine:
    def __init__(self, options: OpenAIOptions, public_name: str) -> None:
        self.options = options
        self.upstream_model = options.model or public_name
        self.client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(options.max_concurrency)

    async def start(self) -> None:
        o = self.options
        headers = {"User-Agent": "inferq", **o.headers}
        if o.api_key_env:
            key = os.environ.get(o.api_key_env)
            if not key:
                raise RuntimeError(f"environment variable {o.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(
            base_url=o.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(o.timeout_s, connect=o.connect_timeout_s),
            limits=httpx.Limits(max_connections=o.max_concurrency, max_keepalive_connections=o.max_concurrency),
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def generate(
        self, request: InferenceRequest, lane: str = "batch", contract: Contract | None = None
    ) -> Generation:
        path, body = self._request_body(request)
        if contract is not None:
            body.update(contract_fields(contract))
        async with self._slots:
            data = await self._post(path, body, request.request_id)
        try:
            completion = _decode(data)
            choice = completion.choices[0]
        except (msgspec.DecodeError, IndexError) as exc:
            raise EngineError(
                "upstream_bad_response", f"the upstream answer is not a completion: {exc}", retryable=True
            ) from None
        text = (choice.message.content if choice.message is not None else choice.text) or ""
        usage = completion.usage or _Usage()
        return Generation(
            text=text,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def _request_body(self, request: InferenceRequest) -> tuple[str, dict]:
        api = self.options.api
        if api == "auto":
            api = "chat" if request.messages is not None else "completions"
        p = request.params
        body: dict = {"model": self.upstream_model, "max_tokens": p.max_tokens}
        for name in ("temperature", "top_p", "stop", "seed"):
            if (value := getattr(p, name)) is not None:
                body[name] = value
        if api == "chat":
            body["messages"] = (
                [{"role": m.role, "content": m.content} for m in request.messages]
                if request.messages is not None
                else [{"role": "user", "content": request.prompt or ""}]
            )
            return "chat/completions", body
        if request.messages is not None:
            raise EngineError(
                "invalid_request",
                "this model takes `prompt`, not `messages` (its endpoint is completions)",
                retryable=False,
            )
        body["prompt"] = request.prompt or ""
        return "completions", body

    async def _post(self, path: str, body: dict, request_id: str) -> bytes:
        o = self.options
        assert self.client is not None, "generate() before start()"
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await self.client.post(
                    path,
                    content=msgspec.json.encode(body),
                    headers={"Content-Type": "application/json", "X-Request-Id": request_id},
                )
            except httpx.TimeoutException as exc:
                error = EngineError("upstream_timeout", f"{type(exc).__name__} calling {o.base_url}", retryable=True)
                wait = None
            except httpx.TransportError as exc:
                error = EngineError("upstream_unavailable", f"{type(exc).__name__}: {exc}", retryable=True)
                wait = None
            else:
                if resp.status_code < 300:
                    return resp.content
                message = _error_message(resp)
                if resp.status_code not in RETRY_STATUSES:
                    raise EngineError(f"upstream_{resp.status_code}", message, retryable=False)
                error = EngineError(f"upstream_{resp.status_code}", message, retryable=True)
                wait = _retry_after(resp.headers.get("retry-after"))
            if attempt > o.max_retries:
                raise error
            delay = exponential_delay(attempt, o.backoff_s, o.backoff_max_s, jitter=True)
            if wait is not None:
                delay = max(delay, min(wait, o.backoff_max_s))
            log.info(
                "upstream answered %s; retrying in %.2fs",
                error.code,
                delay,
                extra={"request_id": request_id, "attempt": attempt},
            )
            await asyncio.sleep(delay)


def contract_fields(contract: Contract) -> dict[str, Any]:
    """The body fields that ask an OpenAI-compatible endpoint for a contract's shape: OpenAI's
    `response_format`, as the caller wrote it (its name, and `strict` only if given). Only the JSON
    kinds reach this engine (shared/catalog/models.py CONTRACT_KINDS)."""
    if contract.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    spec: dict[str, Any] = {"name": contract.name or "output", "schema": contract.schema}
    if contract.strict is not None:
        spec["strict"] = contract.strict
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


def _error_message(resp: httpx.Response) -> str:
    """The upstream's own words: OpenAI-style `{"error": {"message"}}`, else the start of the body."""
    try:
        doc = resp.json()
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return f"{resp.status_code}: {err['message']}"
        if isinstance(err, str):
            return f"{resp.status_code}: {err}"
        if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
            return f"{resp.status_code}: {doc['detail']}"
    except ValueError:
        pass
    return f"{resp.status_code}: {resp.text[:500] or resp.reason_phrase}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
