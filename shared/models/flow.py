"""Reading a model's flow state: where its accepted-but-unfinished requests are right now."""

from __future__ import annotations

import redis.asyncio as aioredis
from msgspec import Struct
from redis.exceptions import ResponseError

from shared.catalog.models import ModelConfig
from shared.core.errors import TRANSIENT_REDIS_ERRORS
from shared.redis.keys import LANES, WORKER_GROUP, FlowField, Keys, staged_field
from shared.wire.api import LaneQueue, ModelQueue, ModelScaling, ScalingChange, ScalingFailures


class StreamMarks(Struct, kw_only=True):
    """How far the worker group has read a model's lane streams: the last-delivered ids (they move
    whenever a worker reads) and the entries read in all (None when Redis cannot say)."""

    last_delivered: list[str]
    entries_read: int | None


async def model_queue(r: aioredis.Redis, keys: Keys, model: ModelConfig) -> ModelQueue:
    """One round trip: the flow hash plus XINFO GROUPS and XLEN of each lane's stream."""
    return (await model_queues(r, keys, [model]))[model.name][0]


async def model_queues(
    r: aioredis.Redis, keys: Keys, models: list[ModelConfig]
) -> dict[str, tuple[ModelQueue, StreamMarks]]:
    """Every model's queue and read marks, in one round trip."""
    async with r.pipeline(transaction=False) as pipe:
        for model in models:
            pipe.hgetall(keys.flow(model.name))
            for lane in LANES:
                pipe.xinfo_groups(keys.model_stream(model.name, lane))
                pipe.xlen(keys.model_stream(model.name, lane))
        replies = await pipe.execute(raise_on_error=False)
    for reply in replies:  # a missing stream is an answer (below); Redis briefly unable is not
        if isinstance(reply, TRANSIENT_REDIS_ERRORS):
            raise reply
    width = 1 + 2 * len(LANES)
    return {model.name: _queue_from(model, replies[i * width : (i + 1) * width]) for i, model in enumerate(models)}


def _queue_from(model: ModelConfig, replies: list) -> tuple[ModelQueue, StreamMarks]:
    flow = {k.decode(): int(v) for k, v in (replies[0] or {}).items()}
    lanes: dict[str, LaneQueue] = {}
    consumers = 0
    marks: list[str] = []
    read_total: int | None = 0
    for n, lane in enumerate(LANES):
        groups, length = replies[1 + 2 * n], replies[2 + 2 * n]
        unread = pending = 0
        mark = "0-0"
        if not isinstance(groups, ResponseError):  # a missing stream means nothing routed yet
            for g in groups:
                if g["name"] in (WORKER_GROUP, WORKER_GROUP.encode()):
                    pending = int(g["pending"])
                    lag = g.get("lag")
                    # the lag is unknown, or too high, after unread entries were deleted (moved to
                    # a fallback model); the router trims read and acknowledged entries, so the
                    # stream's length less the pending ones is never below the unread ones
                    unread = max(0, int(length or 0) - pending)
                    if lag is not None:
                        unread = min(unread, int(lag))
                    consumers = max(consumers, int(g["consumers"]))
                    ld = g["last-delivered-id"]
                    mark = ld.decode() if isinstance(ld, bytes) else str(ld)
                    read = g.get("entries-read")
                    read_total = None if read is None or read_total is None else read_total + int(read)
        marks.append(mark)
        lanes[lane] = LaneQueue(queued=flow.get(staged_field(lane), 0), routed_unread=unread, pending=pending)
    queue = ModelQueue(
        unfinished=flow.get(FlowField.UNFINISHED, 0),
        queued=sum(q.queued for q in lanes.values()),
        routed_unread=sum(q.routed_unread for q in lanes.values()),
        pending=sum(q.pending for q in lanes.values()),
        consumers=consumers,
        flow="paused" if flow.get("paused") else "flowing",
        high_watermark=model.high_watermark,
        low_watermark=model.low_watermark,
        max_backlog=model.flow.max_backlog,
        lanes=lanes,
    )
    return queue, StreamMarks(last_delivered=marks, entries_read=read_total)


async def model_scaling(r: aioredis.Redis, keys: Keys, model: ModelConfig) -> ModelScaling:
    """The autoscaler's last decision for a model, and its backend's failing starts, as recorded."""
    c = model.scaling
    assert c.backend is not None  # resolved when the models file is loaded
    scaling = ModelScaling(backend=c.backend, min_replicas=c.min_replicas, max_replicas=c.max_replicas)
    if c.backend == "static":
        return scaling
    async with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.scaling_state(model.name))
        pipe.hgetall(keys.scaling_failures(model.name))
        h, failures = [{k.decode(): v.decode() for k, v in reply.items()} for reply in await pipe.execute()]
    scaling.failures = failures_from(failures)
    if not h:
        return scaling
    scaling.current, scaling.desired, scaling.backlog = int(h["current"]), int(h["desired"]), int(h["backlog"])
    scaling.reason, scaling.decided_at = h["reason"], int(h["decided_ms"]) / 1000
    if "change_ms" in h:
        scaling.last_change = ScalingChange(
            from_replicas=int(h["change_from"]),
            to_replicas=int(h["change_to"]),
            reason=h["change_reason"],
            at=int(h["change_ms"]) / 1000,
        )
    return scaling


def failures_from(h: dict[str, str]) -> ScalingFailures | None:
    """A backend's failing calls for a model as `Keys.scaling_failures` holds them (None: none)."""
    if not h:
        return None
    return ScalingFailures(
        count=int(h["count"]),
        last_error=h.get("error") or None,
        last_at=int(h["at_ms"]) / 1000,
        last_exit_status=int(h["exit_status"]) if h.get("exit_status") else None,
        next_attempt_at=int(h["retry_ms"]) / 1000 if h.get("retry_ms") else None,
    )
