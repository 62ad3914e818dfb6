"""Collector: applies results from the results stream to job records, exactly once per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import cast

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from services.dispatcher.planning.calibration import Calibration, CalibrationTally
from shared.core.states import JobStatus
from shared.jobs.store import JobStore
from shared.lanes.dead_letters import dead_letter
from shared.lanes.publish import HandBack
from shared.models.stats import ResultTally
from shared.planning import accuracy
from shared.redis.keys import (
    BUNDLE_FIELD,
    COLLECTOR_GROUP,
    DROP_FIELD,
    PAYLOAD_FIELD,
    REASON_FIELD,
    JobField,
    Keys,
    UsageField,
)
from shared.wire.api import DeadLetter, FallbackReason, QuoteSample
from shared.wire.messages import (
    ResultRecord,
    bundle_decoder,
    decode_routed,
    dropped_line,
    result_decoder,
    result_record,
)

log = logging.getLogger("inferq.collector")
STATS_FLUSH_S = 0.5  # how often the per-model figures are written (GET /v1/model-stats buckets are 5 s)
# Results applied by one script call, at most (or one results-stream entry, if it holds more):
# Redis runs nothing else while the script runs (~20 µs a result), and the collector holds them
# all decoded. A read after a backlog built up can return 1,000 entries of up to 1,000 results.
RESULTS_PER_CALL = 5000
_BUNDLE, _PAYLOAD, _DROP, _REASON = (f.encode() for f in (BUNDLE_FIELD, PAYLOAD_FIELD, DROP_FIELD, REASON_FIELD))


class Collector(BatchConsumer):
    role = "collector"

    def __init__(self, r: aioredis.Redis, keys: Keys, jobs: JobStore, *, count: int = 1000, **kw) -> None:
        super().__init__(r, keys.results_stream, COLLECTOR_GROUP, count=count, **kw)
        self.keys = keys
        self.jobs = jobs
        self.applied = 0
        self._tally = ResultTally()  # per-model figures not yet written
        self._calibration = Calibration(r, keys)
        self._measured = CalibrationTally()  # per-model speed sums not yet written
        self._next_stats = 0.0  # monotonic time of the next write of them
        self._split = HandBack(r)

    async def handle(self, entries) -> None:
        """Apply the entries' results, in script calls of at most RESULTS_PER_CALL results, each
        acknowledging the whole entries whose results it applies (never part of one)."""
        ack: list[bytes] = []
        records: list[ResultRecord] = []
        tally = ResultTally()
        measured = self._measured
        for entry_id, fields in entries:
            try:
                found = _records(fields)
            except (msgspec.DecodeError, KeyError) as exc:
                await self._dead_letter(entry_id, fields, "undecodable", 1, str(exc))
                continue
            if ack and len(records) + len(found) > RESULTS_PER_CALL:
                await self._apply(ack, records, tally)
                ack, records, tally = [], [], ResultTally()
            ack.append(entry_id)
            records += found
            for rec in found:
                tally.add(rec)
                measured.add(rec)
        if ack:
            await self._apply(ack, records, tally)

    async def _apply(self, ack: list[bytes], records: list[ResultRecord], tally: ResultTally) -> None:
        applied, finished = await self.jobs.record_results(COLLECTOR_GROUP, ack, records)
        self.applied += applied
        for job_id, status in finished:
            log.info("job %s", status, extra={"job_id": job_id})
        self._tally.merge(tally)  # written by the next tick that is due
        done = [job_id for job_id, status in finished if status == JobStatus.COMPLETED]
        if done:
            try:
                await self._record_quote_errors(done)
            except Exception as exc:  # statistics: never in the way of a result
                log.debug("quote errors not recorded: %s", exc)

    async def _record_quote_errors(self, job_ids: list[str]) -> None:
        """Each completed job's quote (made when it was accepted) against what happened."""
        fields = [
            JobField.QUOTED_END_MS,
            JobField.QUOTED_COST_MICROS,
            JobField.CREATED_MS,
            JobField.ENDED_MS,
            UsageField.COST_MICROS,
            JobField.MODELS,
        ]
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), fields)
            rows = await pipe.execute()
        samples = []
        for q_end, q_cost, created, ended, cost, models in rows:
            if q_end is None or created is None or ended is None:
                continue
            sample = QuoteSample(
                at=int(ended) // 1000,
                quoted_s=(int(q_end) - int(created)) / 1000,
                actual_s=(int(ended) - int(created)) / 1000,
                quoted_cost=int(q_cost or 0) / 1e6,
                actual_cost=int(cost or 0) / 1e6,
            )
            samples.append((msgspec.json.decode(models or b"[]", type=list[str]), sample))
        await accuracy.record(self.r, self.keys, samples)

    async def tick(self) -> None:
        """Write the per-model figures for GET /v1/model-stats summed since the last write: one
        round trip each STATS_FLUSH_S, not one per batch; a failure loses only these statistics,
        never a result."""
        if time.monotonic() < self._next_stats:
            return
        self._next_stats = time.monotonic() + STATS_FLUSH_S
        try:
            await self._tally.flush(self.r, self.keys)
        except Exception as exc:
            self._tally = ResultTally()
            log.debug("model stats not recorded: %s", exc)
        try:
            await self._calibration.add(self._measured)
        except Exception as exc:
            self._measured = CalibrationTally()
            log.debug("model speeds not recorded: %s", exc)

    async def handle_poison(self, entries, deliveries: dict[bytes, int]) -> None:
        """Results that failed to apply `max_deliveries` times: keep them for an operator, and
        record the request as failed so its job can still finish.

        A worker's batch of several results is first split, in the step that acknowledges it, into
        one entry per result, each delivered afresh: only the result that fails is failed, not the
        batch it came with. Otherwise the failure is recorded first (idempotent: a request already
        done is left alone), then the entry moves to the dead-letter stream atomically with its
        XACK. A crash in between means the entry is delivered again and both steps are repeated to
        the same end state."""
        for entry_id, fields in entries:
            times = deliveries.get(entry_id, 0)
            why = f"result could not be applied after {times} deliveries"
            try:
                found = _records(fields)
            except (msgspec.DecodeError, KeyError):
                found = []
            if len(found) > 1:
                singles = [_one_result.encode([rec]) for rec in found]
                split = await self._split(
                    stream=self.stream, entries=[(entry_id, singles)], group=self.group, field=BUNDLE_FIELD
                )
                log.warning(
                    "result batch %s split into %d entries after %d deliveries", entry_id, split and len(found), times
                )
                continue
            if found:
                failed = [
                    result_record(rec.job_id, dropped_line(_request_of(rec), "max_attempts_exceeded")) for rec in found
                ]
                await self.jobs.record_results(COLLECTOR_GROUP, [], failed)
            await self._dead_letter(entry_id, fields, "max_attempts_exceeded", times, why, found)

    async def _dead_letter(
        self, entry_id: bytes, fields, reason: str, attempts: int, error: str, found: Sequence[ResultRecord] = ()
    ) -> None:
        """Keep an entry for an operator. An entry of one result names its request; a worker's
        batch names the job only when all its results are of one job."""
        log.error("result entry %s moved to the dead-letter stream: %s", entry_id, error)
        raw = fields.get(_BUNDLE) or fields.get(_PAYLOAD) or fields.get(_DROP) or b""
        one = found[0] if len(found) == 1 else None
        jobs = {rec.job_id for rec in found}
        info = DeadLetter(
            source=self.stream,
            reason=reason,
            attempts=attempts,
            error=error,
            job_id=jobs.pop() if len(jobs) == 1 else None,
            request_id=one.request_id if one else None,
            custom_id=_request_of(one).custom_id if one else None,
            model=one.model if one else None,
        )
        await dead_letter(self.r, self.keys, self.stream, self.group, entry_id, raw, info)


def _records(fields: dict[bytes, bytes]) -> list[ResultRecord]:
    """The results of one results-stream entry: a worker's batch, one result (a request the
    router could not route), or a drop notice (a request that ended without running)."""
    if _BUNDLE in fields:
        return bundle_decoder.decode(fields[_BUNDLE])
    if _PAYLOAD in fields:
        env = result_decoder.decode(fields[_PAYLOAD])
        return [result_record(env.job_id, env.line, env.busy_us, env.cost_micros)]
    req, moved = decode_routed(fields[_DROP])
    line = dropped_line(req, fields.get(_REASON, b"").decode())
    line.fallback_reason = cast(FallbackReason | None, moved)  # it never ran: served by none
    return [result_record(req.job_id, line)]


_one_result = msgspec.msgpack.Encoder()


class _LineNames(msgspec.Struct):
    custom_id: str


_names_decoder = msgspec.json.Decoder(_LineNames)


class _Req(msgspec.Struct):
    job_id: str
    request_id: str
    custom_id: str
    model: str


def _request_of(rec: ResultRecord) -> _Req:
    return _Req(rec.job_id, rec.request_id, _names_decoder.decode(rec.line).custom_id, rec.model)
