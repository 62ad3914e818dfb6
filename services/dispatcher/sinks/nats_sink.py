"""NATS JetStream: each event published to a subject named by its type, in structured mode (the
CloudEvents SDK's JSON, content type `application/cloudevents+json`), with the CloudEvent `id`
as JetStream's message id (`Nats-Msg-Id`), so a publish repeated after a crash or a lost
acknowledgement is dropped by the server as a duplicate within the stream's duplicate window.
An event counts as delivered only once JetStream acknowledged storing it (nats-py). A job's events
are published one after another, each after the previous one's acknowledgement, so JetStream
stores them in stream order; different jobs' go side by side."""

from __future__ import annotations

import asyncio
import logging
import os

import nats
import nats.errors
import nats.js.errors
from cloudevents.core.bindings.http import to_structured
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.dispatcher.sinks.events import DELIVERED, FORMAT, Outcome, SinkEvent, error_text
from services.dispatcher.sinks.ordered import in_job_order
from shared.catalog.sinks import NatsSink
from shared.core.errors import ConfigError

log = logging.getLogger("inferq.sinks")
MSG_ID = "Nats-Msg-Id"
UNAVAILABLE = "NATS unavailable"  # how a failure to connect or to get an acknowledgement begins
CONCURRENCY = 32  # jobs whose events are in flight at once
# While disconnected, nats-py buffers what is published for the reconnect; a small buffer bounds
# what a dead connection holds (each job has at most one event in flight).
PENDING_BYTES = 4 * 1024 * 1024


class NatsSinkClient:
    def __init__(self, name: str, cfg: NatsSink) -> None:
        self.name, self.cfg = name, cfg
        self._login = _login(name, cfg)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = cfg.stream is None

    async def start(self) -> None:
        """Connected lazily by `send`: a server that is down at start is one more failure to retry."""

    async def _connected(self) -> JetStreamContext:
        if self._js is None or self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                servers=self.cfg.servers,
                connect_timeout=self.cfg.timeout_s,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                pending_size=PENDING_BYTES,
                error_cb=self._quiet,
                disconnected_cb=self._disconnected,
                **self._login,
            )
            self._js = self._nc.jetstream(timeout=self.cfg.timeout_s)
        if not self._stream_ready:
            await self._ensure_stream(self._js)
        return self._js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        assert self.cfg.stream is not None
        try:
            await js.stream_info(self.cfg.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.cfg.stream, subjects=self.cfg.subjects())
            log.info("sink %s: created JetStream stream %s for %s", self.name, self.cfg.stream, self.cfg.subjects())
        self._stream_ready = True

    async def _quiet(self, exc: Exception) -> None:
        log.debug("sink %s: nats: %s", self.name, exc)

    async def _disconnected(self) -> None:
        log.info("sink %s: disconnected from NATS; reconnecting", self.name)

    async def send(self, events: list[SinkEvent]) -> list[Outcome]:
        try:
            js = await asyncio.wait_for(self._connected(), self.cfg.timeout_s * 2)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await self._drop_connection()
            return [Outcome("failed", f"{UNAVAILABLE}: cannot connect ({error_text(exc)})")] * len(events)

        async def publish(event: SinkEvent) -> Outcome:
            message = to_structured(event.cloudevent, FORMAT)
            try:
                await js.publish(
                    self.cfg.subject_for(event.type),
                    message.body,
                    timeout=self.cfg.timeout_s,
                    headers={**message.headers, MSG_ID: event.id},
                )
            except nats.errors.MaxPayloadError:
                return Outcome("rejected", f"larger than the server's max_payload ({len(message.body)} bytes)")
            except nats.js.errors.APIError as exc:
                if exc.code == 400:  # JetStream refuses this message as it is (and would again)
                    return Outcome("rejected", f"JetStream refused it: {exc.description}")
                return Outcome("failed", f"JetStream refused it: {error_text(exc)}")
            except nats.js.errors.NoStreamResponseError:
                return Outcome("failed", f"no JetStream stream takes subject {self.cfg.subject_for(event.type)}")
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                return Outcome("failed", f"{UNAVAILABLE}: no acknowledgement from JetStream ({error_text(exc)})")
            return DELIVERED

        return await in_job_order(events, publish, concurrency=CONCURRENCY, deadline_s=self.cfg.timeout_s * 3)

    async def _drop_connection(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), self.cfg.timeout_s)
            except Exception as exc:  # closing a broken connection may fail in many ways; it is dropped anyway
                log.debug("sink %s: closing the NATS connection: %s", self.name, exc)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), self.cfg.timeout_s)
            except Exception as exc:  # a server that is gone cannot be drained
                log.debug("sink %s: draining the NATS connection: %s", self.name, exc)


def _login(name: str, cfg: NatsSink) -> dict:
    def env(var: str | None, what: str) -> str | None:
        if var is None:
            return None
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"sink {name!r}: {what} names {var}, which is not set")
        return value

    login: dict = {}
    if cfg.user_env:
        login.update(user=env(cfg.user_env, "user_env"), password=env(cfg.password_env, "password_env"))
    if cfg.token_env:
        login["token"] = env(cfg.token_env, "token_env")
    if cfg.creds_file:
        if not os.path.isfile(cfg.creds_file):
            raise ConfigError(f"sink {name!r}: creds_file {cfg.creds_file} is not a file")
        login["user_credentials"] = cfg.creds_file
    return login
