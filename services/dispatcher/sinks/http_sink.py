"""The CloudEvents HTTP protocol binding: structured mode (`application/cloudevents+json`), binary
mode (`ce-*` headers) and batched mode (`application/cloudevents-batch+json`, a JSON array of
structured events), each message written by the CloudEvents SDK.

In structured and binary mode a job's events go one after another, in stream order (the next only
once the previous was acknowledged), different jobs' side by side up to `concurrency`. The URL
passes the webhooks' SSRF guard before every send, and the request goes to the address it checked.
A receiver that answers a batch with 415 does not take batches: the sink sends single structured
events from then on. One answering 400/413/422 to a batch gets its events one by one, so only the
event it refuses is skipped."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time

import httpx
from cloudevents.core.bindings.http import to_binary, to_structured

from services.dispatcher.sinks.events import DELIVERED, FORMAT, Outcome, SinkEvent
from services.dispatcher.webhooks.http_client import WebhookHttp
from shared.catalog.sinks import HttpSink
from shared.core.errors import ConfigError, UnsafeURL
from shared.core.settings import Settings
from shared.webhooks.url_guard import Target, check_url

log = logging.getLogger("inferq.sinks")
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REFUSED_AS_MALFORMED = {400, 413, 422}
MAX_RETRY_AFTER_S = 300.0


class HttpSinkClient:
    def __init__(self, name: str, cfg: HttpSink, settings: Settings, http: WebhookHttp) -> None:
        self.name, self.cfg, self.http = name, cfg, http
        self.mode = cfg.mode
        self.allow_http = settings.webhook_allow_http if cfg.allow_http is None else cfg.allow_http
        self.allow_private = settings.webhook_allow_private if cfg.allow_private is None else cfg.allow_private
        self.headers = _headers_from_env(name, cfg)

    async def start(self) -> None:
        """Nothing to open: connections are pooled per host by the shared HTTP client."""

    async def close(self) -> None:
        """The shared HTTP client is closed with the dispatcher."""

    async def send(self, events: list[SinkEvent]) -> list[Outcome]:
        try:
            target = await check_url(self.cfg.url, allow_private=self.allow_private, allow_http=self.allow_http)
        except UnsafeURL as exc:
            return [Outcome("failed", f"url refused: {exc}")] * len(events)
        if self.mode == "batch":
            return await self._send_batch(target, events)
        return await self._send_each(target, events)

    async def _send_batch(self, target: Target, events: list[SinkEvent]) -> list[Outcome]:
        body = b"[" + b",".join(FORMAT.write(e.cloudevent) for e in events) + b"]"
        outcome, status = await self._post(target, {"content-type": BATCH_CONTENT_TYPE}, body)
        if status == 415:
            log.error("sink %s: the receiver refuses batches (415); sending single structured events", self.name)
            self.mode = "structured"
            return await self._send_each(target, events)
        if outcome.kind == "rejected":  # find the event it refuses
            return await self._send_each(target, events, mode="structured")
        return [outcome] * len(events)

    async def _send_each(self, target: Target, events: list[SinkEvent], mode: str | None = None) -> list[Outcome]:
        mode = mode or self.mode
        outcomes: dict[int, Outcome] = {}
        by_job: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_job.setdefault(event.job_id, []).append(i)
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one_job(indexes: list[int]) -> None:
            async with gate:
                for n, i in enumerate(indexes):
                    message = (to_binary if mode == "binary" else to_structured)(events[i].cloudevent, FORMAT)
                    outcome, _ = await self._post(target, message.headers, message.body)
                    outcomes[i] = outcome
                    if outcome.kind == "failed":  # the job's later events wait: they stay in order
                        for later in indexes[n + 1 :]:
                            outcomes[later] = Outcome("failed", "not sent: an earlier event of its job failed")
                        return

        await asyncio.gather(*(one_job(ix) for ix in by_job.values()))
        return [outcomes[i] for i in range(len(events))]

    async def _post(self, target: Target, headers: dict[str, str], body: bytes) -> tuple[Outcome, int | None]:
        try:
            resp = await self.http.post(
                target, content=body, headers={**self.headers, **headers}, timeout=self.cfg.timeout_s
            )
        except httpx.HTTPError as exc:
            return Outcome("failed", f"{type(exc).__name__}: {exc}".rstrip(": ")), None
        if 200 <= resp.status_code < 300:
            return DELIVERED, resp.status_code
        detail = f"HTTP {resp.status_code} from the receiver"
        if resp.status_code in REFUSED_AS_MALFORMED:
            return Outcome("rejected", detail), resp.status_code
        return Outcome("failed", detail, _retry_after(resp)), resp.status_code


def _retry_after(resp: httpx.Response) -> float:
    """Retry-After, in seconds or as an HTTP date; 0 when absent or unreadable."""
    value = resp.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0
    return min(MAX_RETRY_AFTER_S, max(0.0, when - time.time()))


def _headers_from_env(name: str, cfg: HttpSink) -> dict[str, str]:
    headers = {}
    for header, var in cfg.headers_env.items():
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"sink {name!r}: headers_env.{header} names {var}, which is not set")
        headers[header] = value
    return headers
