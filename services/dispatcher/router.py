"""Router: admits requests from the ingest stream into per-job staging queues, and feeds each
model's streams from those queues under flow control.

Admit: one Lua call per read batch acknowledges each ingest chunk and appends its requests to the
staging queue of (model, lane, job), but only if the XACK removed the entry from the pending list,
so a chunk delivered twice (after a reclaim) is admitted once. Requests of a job being cancelled or
expired become drop notices instead, so they never reach a model stream.

Feed: one Lua call per model moves requests from staging queues into the model's lane streams.
- Interactive lane first, limited only by its own stream's backlog, so it never waits for batch work.
- Batch lane with hysteresis: paused when the model's stream backlog (unread + unacknowledged, both
  lanes) reaches the high watermark, resumed below the low watermark.
- Within a lane, jobs take turns: each non-empty staging queue gives up to `quantum` requests per
  round-robin turn, so a small job is never held behind a big one.
Requests never pass through the router's memory while staged: its memory is bounded by one read
batch, whatever the backlog.
"""

from __future__ import annotations

import logging
import time

import msgspec
import redis.asyncio as aioredis

from services.dispatcher.consumer import BatchConsumer
from services.dispatcher.staging import Admit, AdmitBatch, Feed
from shared.catalog.models import ModelConfig, ModelsConfig
from shared.lanes.dead_letters import META_FIELD, meta
from shared.redis.keys import LANES, PAYLOAD_FIELD, ROUTER_GROUP, SKIP_FIELD, WORKER_GROUP, Keys
from shared.redis.streams import ensure_group
from shared.wire.api import DeadLetter
from shared.wire.messages import ResultEnvelope, chunk_decoder, ended_line, request_decoder

log = logging.getLogger("inferq.router")
FULL_FEED_S = 0.1  # how often every model is fed, staged to by this router or not

_results_encoder = msgspec.msgpack.Encoder()
_SKIP = SKIP_FIELD.encode()


class Router(BatchConsumer):
    role = "router"

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        models: ModelsConfig,
        *,
        count: int = 8,
        max_move: int = 2000,
        direct: bool = False,
        **kw,
    ) -> None:
        super().__init__(r, keys.ingest_stream, ROUTER_GROUP, count=count, **kw)
        self.keys = keys
        self.models = models
        self.max_move = max_move
        self.direct = direct  # admit sends what flow control allows straight to the lane streams
        self.admitted = 0
        self.routed = 0
        self._waiting = False  # some model has staged requests
        self._moving = False  # the last feed round moved something and left some staged
        self._due: set[str] = set()  # models staged to, or still waiting, since their last feed
        self._next_full = 0.0  # monotonic time of the next feed of every model
        self._admit = Admit(r)
        self._feed = Feed(r, keys)

    async def prepare(self) -> None:
        for name in self.models.names():
            for stream in self.keys.model_streams(name):
                await ensure_group(self.r, stream, WORKER_GROUP)

    def idle_block_ms(self) -> int | None:
        """Read the ingest stream without waiting while requests are moving, briefly while some are
        waiting for room below a watermark, and for the full block time otherwise."""
        if self._moving:
            return None
        return 20 if self._waiting else self.block_ms

    async def handle(self, entries) -> None:
        await self.admit(entries)

    async def handle_poison(self, entries, deliveries: dict[bytes, int]) -> None:
        await self.admit(entries, deliveries)

    async def tick(self) -> None:
        await self.feed_due()

    async def admit(self, entries, deliveries: dict[bytes, int] | None = None) -> int:
        """Stage each chunk's requests (or, for a chunk delivered more than `max_deliveries`
        times, dead-letter it and fail its requests), acknowledging it in the same script."""
        batch = AdmitBatch(self.keys)
        touched: set[str] = set()  # models with requests in this batch
        for entry_id, fields in entries:
            times = (deliveries or {}).get(entry_id, 1)
            batch.entry(entry_id, self._entry_ops(batch, entry_id, fields, times, touched))
        n, staged = await self._admit(batch)
        self.admitted += n
        self.routed += n - staged  # sent straight to their lane streams
        if staged:  # something waits in a staging queue: the feed takes it from there
            self._due |= touched
            self._waiting = True
        return n

    def _entry_ops(self, batch: AdmitBatch, entry_id: bytes, fields: dict, times: int, touched: set[str]) -> list:
        """What admitting one ingest entry does: its requests staged per (model, lane), or the
        entry dead-lettered (undecodable, or delivered more than `max_deliveries` times)."""
        raw = fields.get(PAYLOAD_FIELD.encode(), b"")
        try:
            chunk = chunk_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            log.error("undecodable ingest entry %s moved to the dead-letter stream", entry_id)
            info = DeadLetter(source=self.stream, reason="undecodable", attempts=times, error=str(exc))
            return [self._dead(batch, raw, info)]
        skip = int(fields.get(_SKIP, 0))  # the first ones went straight to their lane stream at creation
        if times > self.max_deliveries:
            why = f"ingest chunk delivered {times} times; each router that took it stopped before finishing"
            log.error(why, extra={"job_id": chunk.job_id})
            info = DeadLetter(
                source=self.stream, reason="max_attempts_exceeded", attempts=times, error=why, job_id=chunk.job_id
            )
            return [
                self._dead(batch, raw, info),
                *(batch.drop(p, "max_attempts_exceeded") for _, _, p in chunk.items[skip:]),
            ]
        groups: dict[tuple[str, str], list[bytes]] = {}
        ops: list[list] = []
        for model, lane, payload in chunk.items[skip:]:
            if model in self.models.models and lane in LANES:
                groups.setdefault((model, lane), []).append(payload)
                continue
            failed = _unroutable_result(chunk.job_id, payload)
            if failed is not None:
                ops.append(batch.result(failed))
            else:
                info = DeadLetter(source=self.stream, reason="undecodable", attempts=times, job_id=chunk.job_id)
                ops.append(self._dead(batch, payload, info))
        for (model, lane), payloads in groups.items():
            ops.append(batch.stage(model, lane, chunk.job_id, payloads, self._direct(model), chunk.deadline_ms))
            touched.add(model)
        return ops

    def _direct(self, model: str) -> tuple[int, int, int] | None:
        if not self.direct:
            return None
        config = self.models.models[model]
        return config.high_watermark, config.low_watermark, config.flow.batch_bundle

    def _dead(self, batch: AdmitBatch, payload: bytes, info: DeadLetter) -> list:
        return batch.append(self.keys.dead_letter_stream, {PAYLOAD_FIELD: payload, META_FIELD: meta(info)})

    def _feed_model(self, model: ModelConfig, client=None):
        return self._feed(
            model=model.name,
            high_watermark=model.high_watermark,
            low_watermark=model.low_watermark,
            max_move=self.max_move,
            quantum=model.flow.quantum,
            batch_bundle=model.flow.batch_bundle,
            client=client,
        )

    async def feed(self, model: ModelConfig) -> tuple[int, int, bool, int]:
        """Move what flow control allows for one model: (interactive moved, batch moved, paused, queues waiting)."""
        moved_i, moved_b, paused, waiting = await self._feed_model(model)
        self.routed += moved_i + moved_b
        return int(moved_i), int(moved_b), bool(paused), int(waiting)

    async def feed_all(self) -> None:
        """Feed every model in one round trip (one script call per model, pipelined)."""
        await self._feed_models(list(self.models.models.values()))

    async def feed_due(self) -> None:
        """Feed the models this router staged requests for, or left requests waiting for, since
        their last feed; every model each FULL_FEED_S (requests staged by other scripts: moves
        along fallback chains, requeues). A model whose requests all went straight to its
        streams, or that is idle, costs no script call per ingest batch."""
        now = time.monotonic()
        if now >= self._next_full:
            self._next_full = now + FULL_FEED_S
            await self.feed_all()
        elif self._due:
            await self._feed_models([self.models.models[name] for name in self._due if name in self.models.models])

    async def _feed_models(self, models: list[ModelConfig]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for model in models:
            await self._feed_model(model, client=pipe)
        moving = waiting = False
        due: set[str] = set()
        for model, (moved_i, moved_b, _, queues) in zip(models, await pipe.execute()):
            self.routed += moved_i + moved_b
            moving = moving or moved_i + moved_b > 0
            if queues > 0:
                waiting = True
                due.add(model.name)
        self._due = due
        # feeding again at once is useful only while something is left behind
        self._moving, self._waiting = moving and waiting, waiting


def _unroutable_result(job_id: str, payload: bytes) -> bytes | None:
    """A model removed from the models file after its job was accepted: fail the request visibly
    instead of leaving it in a queue nobody reads. None if the request cannot even be read."""
    try:
        req = request_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    line = ended_line(req, "model_not_found", f"model {req.model!r} is no longer configured")
    return _results_encoder.encode(ResultEnvelope(job_id, line))
