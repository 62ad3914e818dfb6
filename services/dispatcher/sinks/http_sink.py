"""The CloudEvents HTTP protocol binding: structured mode (`application/cloudevents+json`), binary
mode (`ce-*` headers) and batched mode (`application/cloudevents-batch+json`, a JSON array of
structured events), each message written by the CloudEvents SDK.

In structured and binary mode a job's events go one after another, in stream order (the next only
once the previous was acknowledged), different jobs' side by side up to `concurrency`. The URL
passes the webhooks' SSRF guard before every send, and the request goes to the address it checked
(the name kept for Host, SNI and the certificate check). The client is aiohttp, one session per
sink: a single-event send costs it about a quarter of the CPU httpx takes (~140 against ~540 µs
measured here), and single-event modes are bound by that CPU. Redirects are not followed, proxies
from the environment not used.

A receiver that answers a batch with 415 does not take batches: the sink sends single structured
events from then on. One answering 400/413/422 to a batch gets its events one by one, so only the
event it refuses is skipped."""

from __future__ import annotations

import email.utils
import logging
import os
import ssl
import time

import aiohttp
from cloudevents.core.bindings.http import to_binary, to_structured

from services.dispatcher.sinks.events import DELIVERED, FORMAT, Outcome, SinkEvent, error_text
from services.dispatcher.sinks.ordered import in_job_order
from shared.catalog.sinks import HttpSink
from shared.core.errors import ConfigError, UnsafeURL
from shared.core.settings import Settings
from shared.webhooks.url_guard import Target, check_url

log = logging.getLogger("inferq.sinks")
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
REFUSED_AS_MALFORMED = {400, 413, 422}
MAX_RETRY_AFTER_S = 300.0
BATCH_DEADLINES = 3  # one send of a batch ends within this many request timeouts; the rest is retried


class HttpSinkClient:
    def __init__(self, name: str, cfg: HttpSink, settings: Settings) -> None:
        self.name, self.cfg = name, cfg
        self.mode = cfg.mode
        self._ssl = ssl.create_default_context(cafile=settings.webhook_ca_bundle or None)
        self._session: aiohttp.ClientSession | None = None
        self.allow_http = settings.webhook_allow_http if cfg.allow_http is None else cfg.allow_http
        self.allow_private = settings.webhook_allow_private if cfg.allow_private is None else cfg.allow_private
        self.headers = _headers_from_env(name, cfg)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.cfg.concurrency, ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
            trust_env=False,
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        encode = to_binary if (mode or self.mode) == "binary" else to_structured

        async def one(event: SinkEvent) -> Outcome:
            message = encode(event.cloudevent, FORMAT)
            return (await self._post(target, message.headers, message.body))[0]

        return await in_job_order(
            events, one, concurrency=self.cfg.concurrency, deadline_s=self.cfg.timeout_s * BATCH_DEADLINES
        )

    async def _post(self, target: Target, headers: dict[str, str], body: bytes) -> tuple[Outcome, int | None]:
        assert self._session is not None, "start() first"
        if target.host_header:
            headers = {**headers, "host": target.host_header}
        try:
            async with self._session.post(
                target.url,
                data=body,
                headers={**self.headers, **headers},
                allow_redirects=False,
                server_hostname=target.sni_hostname,
            ) as resp:  # the body is not read: leaving the block releases (or closes) the connection
                status, retry_after = resp.status, resp.headers.get("retry-after", "")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return Outcome("failed", error_text(exc)), None
        if 200 <= status < 300:
            return DELIVERED, status
        detail = f"HTTP {status} from the receiver"
        if status in REFUSED_AS_MALFORMED:
            return Outcome("rejected", detail), status
        return Outcome("failed", detail, _retry_after(retry_after)), status


def _retry_after(header: str) -> float:
    """Retry-After, in seconds or as an HTTP date; 0 when absent or unreadable."""
    value = header.strip()
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(MAX_RETRY_AFTER_S, max(0.0, seconds)) if seconds == seconds else 0.0  # NaN: unreadable
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return 0.0
    return min(MAX_RETRY_AFTER_S, max(0.0, when - time.time()))


def _headers_from_env(name: str, cfg: HttpSink) -> dict[str, str]:
    headers = {}
    for header, var in cfg.headers_env.items():
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"sink {name!r}: headers_env.{header} names {var}, which is not set")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ConfigError(f"sink {name!r}: headers_env.{header}: {var} holds a character a header cannot carry")
        headers[header] = value
    return headers
