"""Collector: applies results from the results stream to job records, exactly once per request."""

from __future__ import annotations

import logging
import time
from typing import cast

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from shared.api import DeadLetter, FallbackReason
from shared.deadletters import dead_letter
from shared.jobstore import JobStore, ResultRecord
from shared.keys import COLLECTOR_GROUP, DROP_FIELD, PAYLOAD_FIELD, REASON_FIELD, Keys
from shared.messages import ResultEnvelope, decode_routed, dropped_line, result_decoder
from shared.model_stats import ResultTally

log = logging.getLogger("inferq.collector")
STATS_FLUSH_S = 0.5  # how often the per-model figures are written (GET /v1/model-stats buckets are 5 s)
_line_encoder = msgspec.json.Encoder()
_PAYLOAD, _DROP, _REASON = PAYLOAD_FIELD.encode(), DROP_FIELD.encode(), REASON_FIELD.encode()


class Collector(BatchConsumer):
    role = "collector"

    def __init__(self, r: aioredis.Redis, keys: Keys, jobs: JobStore, *, count: int = 1000, **kw) -> None:
        super().__init__(r, keys.results_stream, COLLECTOR_GROUP, count=count, **kw)
        self.keys = keys
        self.jobs = jobs
        self.applied = 0
        self._tally = ResultTally()  # per-model figures not yet written
        self._next_stats = 0.0  # monotonic time of the next write of them

    async def handle(self, entries) -> None:
        ack: list[bytes] = []
        records: list[ResultRecord] = []
        tally = ResultTally()
        for entry_id, fields in entries:
            try:
                env = _envelope(fields)
            except (msgspec.DecodeError, KeyError) as exc:
                await self._dead_letter(entry_id, fields, "undecodable", 1, str(exc))
                continue
            ack.append(entry_id)
            records.append(_record(env))
            tally.add(env.line)
        if not ack:
            return
        applied, finished = await self.jobs.record_results(COLLECTOR_GROUP, ack, records)
        self.applied += applied
        for job_id, status in finished:
            log.info("job %s", status, extra={"job_id": job_id})
        self._tally.merge(tally)  # written by the next tick that is due

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

    async def handle_poison(self, entries, deliveries: dict[bytes, int]) -> None:
        """Results that failed to apply `max_deliveries` times: keep them for an operator, and
        record the request as failed so its job can still finish.

        The failure is recorded first (idempotent: a request already done is left alone), then the
        entry moves to the dead-letter stream atomically with its XACK. A crash in between means
        the entry is delivered again and both steps are repeated to the same end state."""
        for entry_id, fields in entries:
            times = deliveries.get(entry_id, 0)
            why = f"result could not be applied after {times} deliveries"
            try:
                env = _envelope(fields)
            except (msgspec.DecodeError, KeyError):
                env = None
            if env is not None:
                line = dropped_line(_request_of(env), "max_attempts_exceeded")
                await self.jobs.record_results(COLLECTOR_GROUP, [], [_record(ResultEnvelope(env.job_id, line))])
            await self._dead_letter(entry_id, fields, "max_attempts_exceeded", times, why, env)

    async def _dead_letter(
        self, entry_id: bytes, fields, reason: str, attempts: int, error: str, env: ResultEnvelope | None = None
    ) -> None:
        log.error("result entry %s moved to the dead-letter stream: %s", entry_id, error)
        raw = fields.get(_PAYLOAD) or fields.get(_DROP) or b""
        info = DeadLetter(
            source=self.stream,
            reason=reason,
            attempts=attempts,
            error=error,
            job_id=env.job_id if env else None,
            request_id=env.line.request_id if env else None,
            custom_id=env.line.custom_id if env else None,
            model=env.line.model if env else None,
        )
        await dead_letter(self.r, self.keys, self.stream, self.group, entry_id, raw, info)


def _envelope(fields: dict[bytes, bytes]) -> ResultEnvelope:
    """A result, or a drop notice (a request that ended without running) turned into one."""
    if _PAYLOAD in fields:
        return result_decoder.decode(fields[_PAYLOAD])
    req, moved = decode_routed(fields[_DROP])
    line = dropped_line(req, fields.get(_REASON, b"").decode())
    line.fallback_reason = cast(FallbackReason | None, moved)  # it never ran: served by none
    return ResultEnvelope(req.job_id, line)


def _record(env: ResultEnvelope) -> ResultRecord:
    line = env.line
    return ResultRecord(
        env.job_id,
        line.request_id,
        line.model,
        line.status,
        line.usage.prompt_tokens,
        line.usage.completion_tokens,
        _line_encoder.encode(line),
        line.error.code if line.error else "",
        line.served_by or "",
        env.busy_us,
        env.cost_micros,
    )


class _Req(msgspec.Struct):
    job_id: str
    request_id: str
    custom_id: str
    model: str


def _request_of(env: ResultEnvelope) -> _Req:
    return _Req(env.job_id, env.line.request_id, env.line.custom_id, env.line.model)
