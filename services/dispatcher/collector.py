"""Collector: applies results from the results stream to job records, exactly once per request."""

from __future__ import annotations

import logging

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from shared.jobstore import JobStore, ResultRecord
from shared.keys import COLLECTOR_GROUP, PAYLOAD_FIELD, Keys
from shared.messages import result_decoder
from shared.streams import dead_letter

log = logging.getLogger("inferq.collector")
_line_encoder = msgspec.json.Encoder()


class Collector(BatchConsumer):
    role = "collector"

    def __init__(self, r: aioredis.Redis, keys: Keys, jobs: JobStore, *, count: int = 1000, **kw) -> None:
        super().__init__(r, keys.results_stream, COLLECTOR_GROUP, count=count, **kw)
        self.keys = keys
        self.jobs = jobs
        self.applied = 0

    async def handle(self, entries) -> None:
        ack: list[bytes] = []
        records: list[ResultRecord] = []
        field = PAYLOAD_FIELD.encode()
        for entry_id, fields in entries:
            raw = fields.get(field, b"")
            try:
                env = result_decoder.decode(raw)
            except msgspec.DecodeError:
                await self._dead_letter(entry_id, raw)
                continue
            line = env.line
            ack.append(entry_id)
            records.append(
                ResultRecord(
                    env.job_id, line.request_id, line.model, line.status,
                    line.usage.prompt_tokens, line.usage.completion_tokens, _line_encoder.encode(line),
                )
            )
        if not ack:
            return
        applied, completed = await self.jobs.record_results(COLLECTOR_GROUP, ack, records)
        self.applied += applied
        for job_id in completed:
            log.info("job completed", extra={"job_id": job_id})

    async def _dead_letter(self, entry_id: bytes, raw: bytes) -> None:
        log.error("undecodable result entry %s moved to the dead-letter stream", entry_id)
        await dead_letter(self.r, self.stream, self.group, entry_id, raw, self.keys.dead_letter_stream, PAYLOAD_FIELD)
