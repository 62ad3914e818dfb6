"""The worker loop: read a model's stream, keep up to `max_inflight` requests inside the engine,
publish results in batches. The same loop runs locally and on GPU containers."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.inference.engines import Engine, EngineError
from services.inference.publisher import ResultPublisher
from shared.api import ErrorInfo, Output, ResultLine, Timings, Usage
from shared.jobstore import JobStore
from shared.keys import PAYLOAD_FIELD, WORKER_GROUP, Keys
from shared.messages import InferenceRequest, ResultEnvelope, request_decoder
from shared.models_config import ModelConfig
from shared.streams import claim_idle, consumer_name, ensure_group, read_new

log = logging.getLogger("inferq.worker")
_encoder = msgspec.msgpack.Encoder()
PUBLISH_BATCH = 1000


class InferenceWorker:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        model: ModelConfig,
        engine: Engine,
        *,
        consumer: str | None = None,
        grace_s: float = 30.0,
        block_ms: int = 1000,
    ) -> None:
        self.r = r
        self.model = model
        self.engine = engine
        self.stream = keys.model_stream(model.name)
        self.consumer = consumer or consumer_name(f"worker-{model.name}")
        self.grace_s = grace_s
        self.block_ms = block_ms
        self.jobs = JobStore(r, keys)
        self.publisher = ResultPublisher(r, keys, model.name)
        self.inflight: dict[bytes, asyncio.Task] = {}
        self.outbox: list[tuple[bytes, bytes]] = []
        self.completed = 0
        self._slot_free = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._closing = False

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_group(self.r, self.stream, WORKER_GROUP)
        await self.engine.start()
        flusher = asyncio.create_task(self._flush_loop(), name="publisher")
        log.info("worker started", extra={"model": self.model.name, "consumer": self.consumer})
        try:
            await self._read_loop(stop)
        finally:
            await self._drain()
            self._closing = True
            self._outbox_ready.set()
            await flusher
            await self.engine.stop()
            log.info("worker stopped", extra={"model": self.model.name, "completed": self.completed})

    async def _read_loop(self, stop: asyncio.Event) -> None:
        idle_ms = int(self.model.reclaim_idle_s * 1000)
        next_upkeep = 0.0
        backoff = 0.1
        while not stop.is_set():
            free = self.model.max_inflight - len(self.inflight)
            if free <= 0:
                self._slot_free.clear()
                await _wait_either(self._slot_free, stop, timeout=1.0)
                continue
            try:
                if time.monotonic() >= next_upkeep:
                    next_upkeep = time.monotonic() + self.model.reclaim_idle_s / 3
                    await self._refresh_claims()
                    stale = await claim_idle(self.r, self.stream, WORKER_GROUP, self.consumer, idle_ms, free)
                    if stale:
                        log.warning("reclaimed %d requests from a stalled worker", len(stale), extra={"model": self.model.name})
                        await self._start(stale)
                        continue
                entries = await read_new(self.r, self.stream, WORKER_GROUP, self.consumer, free, self.block_ms)
                if entries:
                    await self._start(entries)
                backoff = 0.1
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _start(self, entries) -> None:
        field = PAYLOAD_FIELD.encode()
        batch: list[tuple[bytes, InferenceRequest]] = []
        for entry_id, fields in entries:
            if entry_id in self.inflight:
                continue
            raw = fields.get(field, b"")
            try:
                batch.append((entry_id, request_decoder.decode(raw)))
            except msgspec.DecodeError:
                log.error("undecodable request entry %s moved to the dead-letter stream", entry_id)
                await self.publisher.dead_letter(entry_id, raw)
        try:
            await self.jobs.mark_started([(q.job_id, q.request_id, q.model) for _, q in batch])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # Only the `running` figure depends on this; final counts stay exact without it.
            log.warning("could not mark %d requests running: %s", len(batch), exc)
        for entry_id, req in batch:
            self.inflight[entry_id] = asyncio.create_task(self._run_one(entry_id, req))

    async def _run_one(self, entry_id: bytes, req: InferenceRequest) -> None:
        started = time.time()
        queued_ms = max(0.0, started * 1000 - req.accepted_ms)
        output = error = None
        usage = Usage()
        try:
            gen = await self.engine.generate(req)
            output = Output(text=gen.text, finish_reason=gen.finish_reason)
            usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens)
        except EngineError as exc:
            error = ErrorInfo(code=exc.code, message=exc.message)
        except asyncio.CancelledError:
            self.inflight.pop(entry_id, None)
            raise  # shutting down: the entry stays pending and another worker reclaims it
        except Exception as exc:  # an engine bug must fail the request, not the worker
            log.exception("engine failed", extra={"request_id": req.request_id, "job_id": req.job_id})
            error = ErrorInfo(code="engine_error", message=f"{type(exc).__name__}: {exc}")
        line = ResultLine(
            custom_id=req.custom_id,
            request_id=req.request_id,
            model=req.model,
            status="failed" if error else "succeeded",
            output=output,
            usage=usage,
            error=error,
            timings=Timings(queued_ms=round(queued_ms, 3), inference_ms=round((time.time() - started) * 1000, 3)),
        )
        self.outbox.append((entry_id, _encoder.encode(ResultEnvelope(req.job_id, line))))
        self._outbox_ready.set()
        self.inflight.pop(entry_id, None)
        self._slot_free.set()

    async def _flush_loop(self) -> None:
        backoff = 0.1
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self.outbox:
                batch = self.outbox[:PUBLISH_BATCH]
                try:
                    await self.publisher.publish(batch)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("could not publish %d results (%s); retrying", len(batch), exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
                del self.outbox[: len(batch)]
                self.completed += len(batch)
            if self._closing:
                return

    async def _refresh_claims(self) -> None:
        """Reset the idle time of entries still generating, so a long request is not reclaimed."""
        if self.inflight:
            await self.r.xclaim(self.stream, WORKER_GROUP, self.consumer, min_idle_time=0,
                                message_ids=list(self.inflight), justid=True)

    async def _drain(self) -> None:
        """Let in-flight requests finish within the grace period; the rest are handed back (left
        pending, unacknowledged) for another worker to reclaim."""
        if not self.inflight:
            return
        log.info("draining %d in-flight requests", len(self.inflight), extra={"model": self.model.name})
        _, pending = await asyncio.wait(list(self.inflight.values()), timeout=self.grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            log.warning("handed back %d unfinished requests", len(pending), extra={"model": self.model.name})


async def _wait_either(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
