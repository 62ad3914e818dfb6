"""The worker loop: read a model's lane streams (interactive first), keep up to `max_inflight`
requests inside the engine, publish results in batches. The same loop runs locally and on GPU
containers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.inference.busy_clock import BusyClock, micros
from services.inference.deadlines import Deadlines
from services.inference.engines import Engine, EngineDead, EngineError, Generation
from services.inference.output_contracts import ContractMissing, OutputContracts
from services.inference.publisher import Outcome, ResultPublisher
from services.inference.start_clock import StartClock, start_engine
from shared.catalog.models import ModelConfig
from shared.catalog.money import usd
from shared.catalog.pricing import cost_micros
from shared.core.backoff import Backoff, exponential_delay
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.core.states import RequestStatus
from shared.core.tasks import cancel_and_wait
from shared.jobs.store import JobStore
from shared.lanes.dead_letters import meta
from shared.lanes.liveness import Liveness, TakeoverClock
from shared.models.health import decode_record
from shared.ops import metrics
from shared.redis.keys import DELIVERED_FIELD, LANES, WORKER_GROUP, Keys, lane_entry_payloads
from shared.redis.outage import OUTAGE
from shared.redis.streams import claim_idle, consumer_name, delivery_counts, ensure_group, read_new, read_own_pending
from shared.wire.api import DeadLetter, ErrorInfo, FallbackReason, Output, ResultLine, Timings, Usage
from shared.wire.contract import Contract
from shared.wire.messages import (
    InferenceRequest,
    decode_routed,
    dropped_line,
    ended_line,
    prompt_chars,
    result_record,
)

log = logging.getLogger("inferq.worker")
_encoder = msgspec.msgpack.Encoder()
PUBLISH_BATCH = 1000
_MovedReason = FallbackReason | None  # built once: `X | None` costs a typing call each time
STOP_CHECK_S = 0.5  # how often in-flight requests' jobs are checked for a cancel or an expiry
_DELIVERED = DELIVERED_FIELD.encode()

_AGAIN = object()  # an attempt failed retryably and its backoff is over: run it again
# A request held here: (lane, entry id, its index in the entry).
Key = tuple[int, bytes, int]


class HeldEntry:
    """A lane-stream entry this worker holds: its requests, and the outcomes of those settled so far.
    The entry is published, in one publish call, once all of its requests are settled."""

    __slots__ = ("payloads", "left", "done")

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.left = len(payloads)
        self.done: list[Outcome] = []


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
        owns_engine: bool = True,
        heartbeat_ttl_s: float = 10.0,
        start_clock: StartClock | None = None,
    ) -> None:
        self.r = r
        self.model = model
        self.engine = engine
        self.keys = keys
        self.streams = keys.model_streams(model.name)  # highest priority first
        self.consumer = consumer or consumer_name(f"worker-{model.name}")
        self.grace_s = grace_s
        self.block_ms = block_ms
        self.owns_engine = owns_engine  # False: the engine outlives this loop (a GPU container reuses it)
        self.liveness = Liveness(r, keys, heartbeat_ttl_s)
        self.heartbeat = self.liveness.heartbeat(self.consumer)
        self.jobs = JobStore(r, keys)
        self.publisher = ResultPublisher(r, keys, model.name)
        self.inflight: dict[Key, asyncio.Task] = {}  # request -> its generation
        self._entries: dict[tuple[int, bytes], HeldEntry] = {}  # (lane, entry id) -> held here
        self._held = 0  # outcomes waiting for the rest of their entry (each still holds its slot)
        self._job_of: dict[Key, str] = {}  # request -> job id, while in flight
        self._stopped: dict[Key, str] = {}  # in flight, aborted because its job stopped
        self.outbox: list[Outcome] = []  # finished, not yet published (still holds its slot)
        # requests per batch-lane entry (flow.batch_bundle): that lane is read with this many slots free
        self._batch_per = model.flow.batch_bundle
        self.completed = 0
        self._slot_free = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._closing = False
        self._stop: asyncio.Event | None = None
        self.fatal: EngineDead | None = None  # set when the engine died: the process must exit non-zero
        self.stats = metrics.worker_stats(model.name)
        # Each request's share of this worker's busy time (docs/architecture.md, "Cost accounting").
        self.busy = BusyClock()
        self.deadlines = Deadlines(model.request_timeout_s)
        self.start_clock = start_clock or StartClock()  # a container's clock outlives its runs
        self._recording: asyncio.Task | None = None
        self.contracts = OutputContracts(r, keys)
        self._used: dict[Key, Usage] = {}  # tokens of a running request's attempts so far

    @property
    def free_slots(self) -> int:
        limit = self.model.max_inflight
        assert limit is not None  # resolved when the models file is loaded
        return limit - len(self.inflight) - self._held - len(self.outbox)

    def _per_entry(self, lane: int) -> int:
        return self._batch_per if LANES[lane] == "batch" else 1

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        backoff = Backoff(0.1, 5.0)
        while not stop.is_set():  # Redis may be briefly unable at start too
            try:
                await self._ensure_groups()
                break
            except TRANSIENT_REDIS_ERRORS as exc:
                OUTAGE.failed("worker", exc)
                await _wait_either(asyncio.Event(), stop, timeout=backoff.next())
        if self.owns_engine:
            await start_engine(self.engine, self.start_clock)
        beating = asyncio.create_task(self.heartbeat.run(), name="heartbeat")
        flusher = asyncio.create_task(self._flush_loop(), name="publisher")
        keeper = asyncio.create_task(self._keep_claims(), name="claims")
        aborter = asyncio.create_task(self._abort_stopped_jobs(), name="aborter")
        watchdog = asyncio.create_task(self.deadlines.run(), name="deadlines")
        log.info("worker started", extra={"model": self.model.name, "consumer": self.consumer})
        try:
            await self._read_loop(stop)
        finally:
            await self._drain()
            keeper.cancel()
            aborter.cancel()
            watchdog.cancel()
            self._closing = True
            self._outbox_ready.set()
            try:
                await asyncio.wait_for(flusher, timeout=self.grace_s)
            except TimeoutError:
                # Unpublished means unacknowledged: the requests stay pending and are redone elsewhere.
                log.error("could not publish %d results before the grace period ended", len(self.outbox))
            if self.owns_engine:
                await self.engine.stop()
            # and its key deleted: what is still unpublished is taken over at once
            await cancel_and_wait(beating)
            log.info("worker stopped", extra={"model": self.model.name, "served": self.completed})

    async def _ensure_groups(self) -> None:
        for stream in self.streams:
            await ensure_group(self.r, stream, WORKER_GROUP)

    async def _read_loop(self, stop: asyncio.Event) -> None:
        idle_ms = int(self.model.reclaim_idle_s * 1000)
        next_reclaim = 0.0
        takeover = TakeoverClock()
        backoff = Backoff(0.1, 5.0)
        lost_reads = False  # a read failed: its reply may have been lost with entries in it
        drained = False  # the last blocking read took everything there was
        while not stop.is_set():
            free = self.free_slots
            if free <= 0:
                drained = False
                self._slot_free.clear()
                await _wait_either(self._slot_free, stop, timeout=1.0)
                continue
            try:
                if lost_reads:
                    await self._start_own_pending()
                    lost_reads = False
                if takeover.due():
                    taken = await self._take_over(free)
                    takeover.checked(taken, free)
                    if taken:
                        continue
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self.model.reclaim_idle_s / 3
                    if await self._reclaim(idle_ms, free):
                        continue
                if free < self._batch_per:  # room for interactive work only
                    drained = False
                    self._slot_free.clear()  # before the read: a slot freed meanwhile ends the wait
                    if not await self._read(free):
                        await _wait_either(self._slot_free, stop, timeout=self.block_ms / 1000)
                elif drained:  # the last read emptied every lane: wait for more at once
                    drained = await self._wait_for_work(free)
                elif not await self._read(free):
                    drained = await self._wait_for_work(free)
                backoff.reset()
                OUTAGE.recovered("worker")
            except TRANSIENT_REDIS_ERRORS as exc:  # before ResponseError: OOM, READONLY... are ones
                OUTAGE.failed("worker", exc)  # logged once per outage, by shared/redis/outage.py
                lost_reads = True
                drained = False
                await _wait_either(asyncio.Event(), stop, timeout=backoff.next())
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group missing (stream deleted?); recreating it")
                await self._ensure_groups()

    async def _start_own_pending(self) -> None:
        """Start the requests pending for this worker that it does not hold (running, or finished
        and not yet published): those of a read whose reply was lost with its connection, which
        would otherwise wait for a reclaim (`reclaim_idle_s`)."""
        held = set(self._entries) | {(o.lane, o.entry_id) for o in self.outbox}
        for lane, stream in enumerate(self.streams):
            after: bytes | str | None = "0"
            while after is not None:
                entries, after = await read_own_pending(self.r, stream, WORKER_GROUP, self.consumer, 1000, after)
                lost = [e for e in entries if (lane, e[0]) not in held]
                if lost:
                    log.warning("resuming %d requests read before the connection was lost", len(lost))
                    await self._start(lane, lost)

    async def _read(self, free: int) -> int:
        """Take new work, interactive lane first: batch work is read only with the slots left.
        Returns how many requests were taken."""
        taken = 0
        reads = []
        for lane, stream in enumerate(self.streams):
            count = (free - taken) // self._per_entry(lane)
            if count <= 0:
                break
            entries = await read_new(self.r, stream, WORKER_GROUP, self.consumer, count, None)
            reads.append((lane, entries))
            taken += _requests_in(entries)
        await self._start_lanes(reads)
        return taken

    async def _wait_for_work(self, free: int) -> bool:
        """Block on every lane at once and take what arrives, up to an equal share of the free
        slots per lane (COUNT applies to each stream), so a burst starts in one read and one
        mark-started call instead of one entry first and the rest a round later. Returns whether
        every lane came back short of its share: nothing was left behind, so the next read may
        block at once. A lane that filled its share may hold more: the next round reads by priority.
        COUNT counts entries: with bundled batch-lane entries the share is what both lanes'
        replies together may carry."""
        share = max(1, free // (len(self.streams) - 1 + self._batch_per))
        reply = await self.r.xreadgroup(
            WORKER_GROUP, self.consumer, {s: ">" for s in self.streams}, count=share, block=self.block_ms
        )
        taken = sorted(((self._lane_of(stream), entries) for stream, entries in reply or ()), key=lambda t: t[0])
        await self._start_lanes(taken)  # interactive first
        return all(len(entries) < share for _, entries in taken)

    async def _take_over(self, free: int) -> int:
        """Take the requests of this model's workers that died (no heartbeat): they run here with
        their delivery counts, so a request that keeps killing workers is still dead-lettered."""
        taken = 0
        for lane, stream in enumerate(self.streams):
            count = (free - taken) // self._per_entry(lane)
            if count <= 0:
                break
            entries, deliveries = await self.liveness.take_over(stream, WORKER_GROUP, self.consumer, count)
            if entries:
                await self._start(lane, entries, deliveries)
                taken += _requests_in(entries)
        return taken

    async def _reclaim(self, idle_ms: int, free: int) -> int:
        """Backstop: take over requests pending for `reclaim_idle_s` that no live worker refreshes,
        such as those of a read whose reply was lost with its connection (the worker lives on)."""
        taken = 0
        for lane, stream in enumerate(self.streams):
            count = (free - taken) // self._per_entry(lane)
            if count <= 0:
                break
            stale = await claim_idle(self.r, stream, WORKER_GROUP, self.consumer, idle_ms, count)
            if stale:
                log.warning("reclaimed %d entries from a stalled worker", len(stale), extra={"model": self.model.name})
                counts = await delivery_counts(self.r, stream, WORKER_GROUP, self.consumer, [e[0] for e in stale])
                await self._start(lane, stale, counts)
                taken += _requests_in(stale)
        return taken

    def _lane_of(self, stream: bytes | str) -> int:
        return self.streams.index(stream.decode() if isinstance(stream, bytes) else stream)

    async def _start(self, lane: int, entries, deliveries: dict[bytes, int] | None = None) -> None:
        await self._start_lanes([(lane, entries)], deliveries)

    async def _start_lanes(self, taken: list, deliveries: dict[bytes, int] | None = None) -> None:
        """Decide what becomes of each request of each entry of each (lane, entries) read, in one
        mark-started call: run it, or end it without running (unreadable, delivered too often, or
        its job is being cancelled or expired). A bundle delivered before is split up instead:
        its requests go back to the lane one per entry, each carrying the deliveries so far, so a
        request that keeps killing workers is dead-lettered alone."""
        batch: list[tuple[Key, bytes, InferenceRequest, FallbackReason | None]] = []
        split: dict[int, list[tuple[bytes, list[bytes]]]] = {}
        split_times: dict[bytes, int] = {}
        for lane, entry_id, fields in ((lane, e, f) for lane, entries in taken for e, f in entries):
            if (lane, entry_id) in self._entries:
                continue
            payloads = lane_entry_payloads(fields) or [b""]
            times = (deliveries or {}).get(entry_id, 1) + _carried(fields)
            if len(payloads) > 1 and times > 1:
                split.setdefault(lane, []).append((entry_id, payloads))
                split_times[entry_id] = times
                continue
            self._entries[(lane, entry_id)] = HeldEntry(payloads)
            for i, raw in enumerate(payloads):
                key = (lane, entry_id, i)
                try:
                    req, reason = decode_routed(raw)
                    moved = cast(_MovedReason, reason)  # why it came here along a fallback chain
                except msgspec.DecodeError as exc:
                    self._reject(key, raw, exc)
                    continue
                if times > self.model.max_deliveries:
                    why = f"delivered {times} times; each worker that took it stopped before finishing"
                    self._give_up(key, raw, req, times, why)
                    continue
                batch.append((key, raw, req, moved))
        for lane, entries in split.items():
            n = await self.publisher.hand_back(lane, entries, split_times)
            log.info("split %d bundles delivered again into single requests", n, extra={"model": self.model.name})
        if not batch:
            return
        try:
            verdicts = await self.jobs.mark_started([(q.job_id, q.request_id, q.model) for _, _, q, _ in batch])
        except TRANSIENT_REDIS_ERRORS as exc:
            # Only the `running` figure depends on this; final counts stay exact without it. Not an
            # outage report: this call happens only when work arrives, so it could not end one.
            log.debug("could not mark %d requests running: %s", len(batch), exc)
            verdicts = ["run"] * len(batch)
        for (key, raw, req, moved), verdict in zip(batch, verdicts):
            if verdict == "run":
                self.busy.start(key)  # in flight from now: charged a share of busy time
                self.inflight[key] = asyncio.create_task(self._run_one(key, raw, req, moved))
                self._job_of[key] = req.job_id
            elif verdict == "gone":  # its job is finished or expired from Redis: nothing to record
                self._settle(key, Outcome(key[0], key[1]))
            else:  # its job is being cancelled or expired: never reaches the engine
                self._settle(key, Outcome(key[0], key[1], dropped=raw, reason=verdict))

    async def _run_one(self, key: Key, raw: bytes, req: InferenceRequest, moved: FallbackReason | None = None) -> None:
        try:
            await self._generate(key, raw, req, moved)
        finally:  # every way out ends its share of the busy time (a no-op once charged)
            self.busy.stop(key)
            self._used.pop(key, None)

    def _charged(self, key: Key, req: InferenceRequest, line: ResultLine) -> bytes:
        """The encoded result of a request that ran here, with its charge: its share of the busy
        time until now, at the model's prices. `line.usage` shows the amounts; the envelope
        carries them as integers (µs, micro-dollars), from which those amounts are derived."""
        busy_us = micros(self.busy.stop(key))
        usage = line.usage
        cost = cost_micros(self.model, busy_us, usage.prompt_tokens + usage.completion_tokens)
        usage.gpu_seconds = usd(busy_us)  # µs as seconds, rounded like micro-dollars as USD
        usage.cost = usd(cost)
        line.served_by = self.model.name
        record = result_record(req.job_id, line, busy_us, cost)
        record.prompt_chars = prompt_chars(req)  # what the planner learns tokens per character from
        record.max_tokens = req.params.max_tokens
        return _encoder.encode(record)

    async def _generate(self, key: Key, raw: bytes, req: InferenceRequest, moved: FallbackReason | None) -> None:
        started = time.time()
        queued_ms = max(0.0, started * 1000 - req.accepted_ms)
        output = error = None
        usage = Usage()
        try:
            ran = await self._attempts(key, raw, req)
            if ran is None:
                return  # moved on, given up or the engine died: settled (or left) where that happened
            output, usage, error = ran
        except asyncio.CancelledError:
            if not self._settle_stopped(key, req, moved):
                raise  # shutting down, or another worker owns it now: not acknowledged here
            return
        except Exception as exc:  # an engine bug must fail the request, not the worker
            log.exception("engine failed", extra={"request_id": req.request_id, "job_id": req.job_id})
            error = ErrorInfo(code="engine_error", message=f"{type(exc).__name__}: {exc}")
        self._finish(key, req, moved, started, queued_ms, output, usage, error)

    async def _attempts(
        self, key: Key, raw: bytes, req: InferenceRequest
    ) -> tuple[Output | None, Usage, ErrorInfo | None] | None:
        """Run the request, retrying retryable engine errors with backoff, and outputs that miss
        their contract (at once): (output, usage, error), or None when it left this worker's hands
        (moved along its fallback chain, given up into the dead letters, or not acknowledged
        because the engine died). Usage counts every attempt's tokens."""
        try:
            contract = await self.contracts.of(req)
        except ContractMissing as exc:
            return None, Usage(), ErrorInfo(code="contract_not_found", message=str(exc))
        usage = self._used[key] = Usage()  # what its attempts so far generated, should it be stopped
        attempt = 0
        while True:
            attempt += 1
            gen = await self._attempt(key, raw, req, contract, attempt)
            if isinstance(gen, ErrorInfo):
                return None, usage, gen
            if not isinstance(gen, Generation):
                if gen is _AGAIN:
                    continue
                return None
            usage.prompt_tokens += gen.prompt_tokens
            usage.completion_tokens += gen.completion_tokens
            output = Output(text=gen.text, finish_reason=gen.finish_reason)
            missed = None if contract is None else self._held_to(req, contract, gen, output)
            if missed is None or attempt >= self.model.retry.max_attempts or _repeats_itself(req):
                return output, usage, missed
            log.info(
                "output misses its contract; running it again",
                extra={"request_id": req.request_id, "job_id": req.job_id, "attempt": attempt},
            )

    async def _attempt(
        self, key: Key, raw: bytes, req: InferenceRequest, contract: Contract | None, attempt: int
    ) -> Generation | ErrorInfo | object | None:
        """One engine call: its generation; or the error that ends the request; or _AGAIN after
        the backoff of a retryable error; or None when the request left this worker's hands."""
        retry = self.model.retry
        try:
            self.deadlines.start(key, self.inflight.get(key) or asyncio.current_task())  # type: ignore[arg-type]
            try:
                if contract is None:
                    return await self.engine.generate(req, LANES[key[0]])
                return await self.engine.generate(req, LANES[key[0]], contract)
            finally:
                self.deadlines.end(key)
        except asyncio.CancelledError:
            if not self.deadlines.expired(key):
                raise  # a stop, or shutting down
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return ErrorInfo(code="request_timeout", message=f"no answer within {self.model.request_timeout_s:g}s")
        except EngineDead as exc:
            self._engine_died(exc)
            self.inflight.pop(key, None)
            return None  # not acknowledged: reclaimed elsewhere, its delivery count growing
        except EngineError as exc:
            if not exc.retryable:
                return ErrorInfo(code=exc.code, message=exc.message)
            if attempt >= retry.max_attempts:
                await self._exhausted(key, raw, req, attempt, exc)
                return None
            delay = exponential_delay(attempt, retry.backoff_s, retry.backoff_max_s)
            log.info(
                "retrying in %.1fs after %s",
                delay,
                exc.code,
                extra={"request_id": req.request_id, "job_id": req.job_id, "attempt": attempt},
            )
            await asyncio.sleep(delay)
            return _AGAIN

    def _held_to(self, req: InferenceRequest, contract: Contract, gen: Generation, output: Output) -> ErrorInfo | None:
        """None when the output keeps its contract (its decoded JSON then in `output.parsed`),
        else the `output_invalid` error: the validator's first message."""
        verdict = self.contracts.judge(req, contract, gen.text)
        if verdict.valid:
            output.parsed = verdict.parsed
            return None
        cut = " (the output ended at max_tokens)" if gen.finish_reason == "length" else ""
        return ErrorInfo(code="output_invalid", message=verdict.message + cut)

    async def _exhausted(self, key: Key, raw: bytes, req: InferenceRequest, attempt: int, exc: EngineError) -> None:
        """Every attempt failed retryably: on to the next model of the chain, else the dead letters."""
        to = await self._next_model()
        if to is not None:
            self._move_on(key, req, to, attempt, exc)
            return
        self._give_up(key, raw, req, attempt, f"gave up after {attempt} attempts; last error {exc.code}: {exc.message}")

    def _settle_stopped(self, key: Key, req: InferenceRequest, moved: FallbackReason | None) -> bool:
        """A request cancelled while it ran: whether it was its job's cancel or expiry (then the
        engine has aborted it and it ends like a queued one, but charged for the time it ran)."""
        self.inflight.pop(key, None)
        reason = self._stopped.pop(key, None)
        if reason is None:
            return False
        line = dropped_line(req, reason)
        line.fallback_reason = moved
        line.usage = self._used.pop(key, line.usage)  # earlier attempts' tokens (a missed contract)
        self._settle(key, Outcome(key[0], key[1], result=self._charged(key, req, line)))
        return True

    def _finish(
        self,
        key: Key,
        req: InferenceRequest,
        moved: FallbackReason | None,
        started: float,
        queued_ms: float,
        output: Output | None,
        usage: Usage,
        error: ErrorInfo | None,
    ) -> None:
        """The request's result line, counted in the model's stats (and, for the first result of
        this process, its start phases), settled for publishing."""
        inference_s = time.time() - started
        status = RequestStatus.FAILED if error else RequestStatus.SUCCEEDED
        if error is None and self._recording is None and not self.start_clock.recorded:
            self.start_clock.first_result(inference_s, getattr(self.engine, "first_token_after_s", None))
            self._recording = asyncio.create_task(self.start_clock.record(self.r, self.keys, self.model.name))
        self.stats.record(
            queued_ms / 1000, inference_s, usage.prompt_tokens, usage.completion_tokens, error is not None
        )
        line = ResultLine(
            custom_id=req.custom_id,
            request_id=req.request_id,
            model=req.model,
            status=status,
            output=output,
            usage=usage,
            error=error,
            timings=Timings(queued_ms=round(queued_ms, 3), inference_ms=round(inference_s * 1000, 3)),
            fallback_reason=moved,
        )
        self._settle(key, Outcome(key[0], key[1], result=self._charged(key, req, line)))

    def _engine_died(self, exc: EngineDead) -> None:
        if self.fatal is None:
            self.fatal = exc
            log.critical(
                "the engine died (%s); stopping without acknowledging held requests",
                exc,
                extra={"model": self.model.name},
            )
            if self._stop is not None:
                self._stop.set()

    async def _next_model(self) -> str | None:
        """The first model of this model's fallback chain not judged unavailable, or None."""
        chain = self.model.fallback
        if not chain:
            return None
        try:
            raw = await self.r.hmget(self.keys.model_health, chain)  # type: ignore[misc]
        except TRANSIENT_REDIS_ERRORS:
            return chain[0]  # the publish that follows waits for Redis anyway
        for name, rec in zip(chain, raw):
            found = decode_record(rec)
            if found is None or found.health.state != "unavailable":
                return name
        return None

    def _move_on(self, key: Key, req: InferenceRequest, to: str, attempts: int, exc) -> None:
        """Every attempt failed with a retryable error: the request moves to `to`, the next model
        of the chain, acknowledged here in the same step. Its failed attempts are not charged
        (as for a request that is dead-lettered)."""
        log.warning(
            "moved to %s after %d attempts; last error %s: %s",
            to,
            attempts,
            exc.code,
            exc.message,
            extra={"request_id": req.request_id, "job_id": req.job_id},
        )
        moved = _encoder.encode(("retries_exhausted", req))
        self._settle(key, Outcome(key[0], key[1], moved=moved, moved_to=(to, LANES[key[0]], req.job_id)))

    def _give_up(self, key: Key, raw: bytes, req: InferenceRequest, attempts: int, why: str) -> None:
        """Dead-letter the request and fail it with `max_attempts_exceeded`, in one step."""
        log.warning("dead-lettered: %s", why, extra={"request_id": req.request_id, "job_id": req.job_id})
        line = ended_line(req, "max_attempts_exceeded", why)
        lane = key[0]
        info = DeadLetter(
            source=self.streams[lane],
            reason="max_attempts_exceeded",
            attempts=attempts,
            error=why,
            job_id=req.job_id,
            request_id=req.request_id,
            custom_id=req.custom_id,
            model=req.model,
            lane=LANES[lane],
            requeueable=True,
        )
        result = _encoder.encode(result_record(req.job_id, line))
        self._settle(key, Outcome(lane, key[1], result=result, dead=raw, dead_meta=meta(info)))

    def _settle(self, key: Key, outcome: Outcome) -> None:
        """A request is settled: its outcome waits for the rest of its entry, and the whole entry
        goes to the outbox, contiguous, once all are settled (one publish acknowledges it)."""
        self.inflight.pop(key, None)
        entry = self._entries.get(key[:2])
        if entry is None:  # the entry was lost to another worker meanwhile: it publishes it
            return
        entry.done.append(outcome)
        entry.left -= 1
        if entry.left > 0:
            self._held += 1
            return
        del self._entries[key[:2]]
        self._held -= len(entry.done) - 1
        self.outbox.extend(entry.done)
        self._outbox_ready.set()

    def _forget(self, lane: int, entry_id: bytes) -> None:
        """Drop an entry another worker took over: its outcomes here are never published."""
        entry = self._entries.pop((lane, entry_id), None)
        if entry is not None:
            self._held -= len(entry.done)

    def _reject(self, key: Key, raw: bytes, exc: Exception) -> None:
        """A request this worker cannot decode: fail it visibly if it can be attributed to its job
        (so the job still completes), or else move it to the dead-letter stream."""
        lane, entry_id = key[0], key[1]
        info = DeadLetter(source=self.streams[lane], reason="undecodable", attempts=1, error=str(exc), lane=LANES[lane])
        try:
            doc = msgspec.msgpack.decode(raw)
            if isinstance(doc, list) and len(doc) == 2:  # a request moved along a fallback chain
                doc = doc[1]
            job_id, request_id = str(doc["job_id"]), str(doc["request_id"])
        except Exception:
            log.error("unattributable request entry %s moved to the dead-letter stream", entry_id)
            self._settle(key, Outcome(lane, entry_id, dead=raw, dead_meta=meta(info)))
            return
        line = ResultLine(
            custom_id=str(doc.get("custom_id", request_id)),
            request_id=request_id,
            model=self.model.name,
            status=RequestStatus.FAILED,
            output=None,
            usage=Usage(),
            timings=Timings(queued_ms=0.0, inference_ms=0.0),
            error=ErrorInfo(code="invalid_request", message=f"the worker could not read this request: {exc}"),
        )
        self._settle(key, Outcome(lane, entry_id, result=_encoder.encode(result_record(job_id, line))))

    async def _flush_loop(self) -> None:
        """Publish finished results in batches; a result keeps its slot until published, so a
        worker that cannot publish stops taking work instead of piling results up."""
        backoff = Backoff(0.1, 5.0)
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self.outbox:
                batch = self.outbox[: _entry_boundary(self.outbox, PUBLISH_BATCH)]
                try:
                    await self.publisher.publish(batch)
                except TRANSIENT_REDIS_ERRORS as exc:  # the outbox is kept and published once Redis accepts writes
                    OUTAGE.failed("publisher", exc)  # logged once per outage, by shared/redis/outage.py
                    await asyncio.sleep(backoff.next())
                    continue
                except Exception as exc:  # anything else may pass too: keep the results, retry
                    delay = backoff.next()
                    log.warning("could not publish %d results (%s); retrying in %.1fs", len(batch), exc, delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                OUTAGE.recovered("publisher")
                del self.outbox[: len(batch)]
                self.completed += len(batch)
                self._slot_free.set()
            if self._closing:
                return

    async def _abort_stopped_jobs(self) -> None:
        """Requests of a job being cancelled or expired stop generating within STOP_CHECK_S: the
        engine aborts them (freeing its GPU slots) and they are recorded cancelled / expired."""
        while True:
            await asyncio.sleep(STOP_CHECK_S)
            for held in (self._job_of, self._stopped):  # forget what has finished meanwhile
                for key in [k for k in held if k not in self.inflight]:
                    del held[key]
            if not self._job_of:
                continue
            try:
                stopping = await self.jobs.stopping(list(set(self._job_of.values())))
            except TRANSIENT_REDIS_ERRORS as exc:  # only while requests run: the read loop reports outages
                log.debug("could not check for stopped jobs: %s", exc)
                continue
            for key, job_id in list(self._job_of.items()):
                task = self.inflight.get(key)
                if job_id in stopping and task is not None and key not in self._stopped:
                    self._stopped[key] = stopping[job_id]
                    task.cancel()

    async def _keep_claims(self) -> None:
        """Reset the idle time of requests still generating, so a long request is not reclaimed;
        stop generating any that another worker has taken over (its result would be dropped): at
        once when this worker comes back from being presumed dead (its heartbeat had expired)."""
        while True:
            try:
                await asyncio.wait_for(self.heartbeat.revived.wait(), self.model.reclaim_idle_s / 3)
            except TimeoutError:
                pass
            self.heartbeat.revived.clear()
            try:
                await self._refresh_claims()
            except TRANSIENT_REDIS_ERRORS as exc:  # runs too rarely to tell when an outage ends: the read loop reports
                log.debug("could not refresh claims: %s", exc)

    async def _refresh_claims(self) -> None:
        for lane, stream in enumerate(self.streams):
            mine = {entry_id for (entry_lane, entry_id, _) in self.inflight if entry_lane == lane}
            if not mine:
                continue
            rows = await self.r.xpending_range(
                stream, WORKER_GROUP, min="-", max="+", count=len(mine) + 1000, consumername=self.consumer
            )
            still_mine = mine & {row["message_id"] for row in rows}
            if still_mine:
                await self.r.xclaim(
                    stream, WORKER_GROUP, self.consumer, min_idle_time=0, message_ids=list(still_mine), justid=True
                )
            for entry_id in mine - still_mine:
                self._forget(lane, entry_id)
                for key in [k for k in self.inflight if k[0] == lane and k[1] == entry_id]:
                    self.inflight[key].cancel()

    async def _drain(self) -> None:
        """Let in-flight requests finish within the grace period; hand the rest back to their
        stream as unread entries, so another worker takes them at once. An entry some of whose
        requests did finish is left pending instead (its finished results cannot be published
        without the others): a peer takes it over once this worker's heartbeat key is gone, and
        runs it whole."""
        if not self.inflight:
            return
        if self.fatal is not None:
            # A dead engine finishes nothing. Handing requests back would reset their delivery
            # counts, so a request that kills engines could do so forever: leave them pending.
            for task in self.inflight.values():
                task.cancel()
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
            return
        log.info("draining %d in-flight requests", len(self.inflight), extra={"model": self.model.name})
        _, pending = await asyncio.wait(list(self.inflight.values()), timeout=self.grace_s)
        for task in pending:
            task.cancel()
        if not pending:
            return
        await asyncio.gather(*pending, return_exceptions=True)
        handed = 0
        untouched = [(lane_id, e) for lane_id, e in self._entries.items() if e.left == len(e.payloads)]
        left_pending = len(self._entries) - len(untouched)
        if left_pending:
            log.warning("left %d partly finished entries for a peer to take over", left_pending)
        for lane in range(len(self.streams)):
            mine = [(entry_id, e.payloads) for (entry_lane, entry_id), e in untouched if entry_lane == lane]
            if mine:
                try:
                    handed += await self.publisher.hand_back(lane, mine)
                except TRANSIENT_REDIS_ERRORS as exc:  # they stay pending and are reclaimed after reclaim_idle_s
                    log.warning("could not hand back %d requests: %s", len(mine), exc)
        log.warning("handed back %d unfinished requests", handed, extra={"model": self.model.name})


def _repeats_itself(req: InferenceRequest) -> bool:
    """Whether running the request again gives the same output: greedy, or sampled with a seed
    (so an output that missed its contract is not run again for nothing)."""
    p = req.params
    return p.temperature == 0 or p.seed is not None


def _requests_in(entries: list) -> int:
    """How many requests lane-stream entries carry."""
    return sum(len(lane_entry_payloads(fields)) or 1 for _, fields in entries)


def _carried(fields: dict[bytes, bytes]) -> int:
    """Deliveries a request split out of a bundle had before (0 for any other entry)."""
    try:
        return int(fields.get(_DELIVERED, b"0"))
    except ValueError:
        return 0


def _entry_boundary(outbox: list[Outcome], most: int) -> int:
    """How many outcomes of the outbox to publish at once: `most`, or more so that the rows of an
    entry are never split between two calls (the first would acknowledge it for all)."""
    n = min(most, len(outbox))
    while n < len(outbox) and outbox[n].entry_id == outbox[n - 1].entry_id and outbox[n].lane == outbox[n - 1].lane:
        n += 1
    return n


async def _wait_either(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
