"""Whether each model serves its requests now: serving, cold-starting, degraded or unavailable.

Judged each second by the dispatcher from what Redis shows: work waiting (staged or routed and
unread), whether the worker group's read position moves, its consumers, and the scaling
backend's failing starts. The verdicts live in one hash (`Keys.model_health`) that
`GET /v1/models`, `/metrics` and the fallback mover read.

- unavailable: work waits and no worker has read the model's streams for `unavailable_after_s`;
  or the backend's last `FAILED_STARTS` starts failed and no worker is there. It stays so until a
  worker joins, so later work moves at once instead of waiting out that time again.
- cold-starting: work waits, no worker yet, for less than that.
- degraded: workers read, but starts are failing, or reads stalled for half that time.
- serving: otherwise (including idle at zero replicas: the first request starts one).
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from shared.catalog.models import ModelConfig
from shared.models.flow import StreamMarks
from shared.wire.api import HealthState, ModelHealth, ModelQueue, ScalingFailures

FAILED_STARTS = 3  # consecutive failed worker starts that make a model without workers unavailable
RATE_SMOOTHING = 0.2  # weight of the newest read-rate sample


class HealthRecord(Struct, kw_only=True):
    """What one judgement keeps for the next: the verdict, the read marks it saw, when reads last
    moved (or nothing waited), and the smoothed read rate (requests per second)."""

    health: ModelHealth
    marks: list[str]
    entries_read: int | None
    progress_ms: int
    at_ms: int
    read_rate: float = 0.0
    waiting: int = 0


_record_decoder = msgspec.json.Decoder(HealthRecord)


def decode_record(raw: bytes | None) -> HealthRecord | None:
    if not raw:
        return None
    try:
        return _record_decoder.decode(raw)
    except msgspec.DecodeError:  # written by another version: judged afresh
        return None


def assess(
    cfg: ModelConfig,
    prev: HealthRecord | None,
    now_ms: int,
    queue: ModelQueue,
    marks: StreamMarks,
    failures: ScalingFailures | None,
) -> HealthRecord:
    waiting = queue.queued + queue.routed_unread
    moved = prev is None or marks.last_delivered != prev.marks
    progress_ms = now_ms if moved or waiting == 0 or prev is None else prev.progress_ms
    stalled_s = (now_ms - progress_ms) / 1000
    rate = _read_rate(prev, now_ms, marks)
    failing = failures is not None and failures.count >= FAILED_STARTS
    starts = _failed_starts(failures)  # why its workers do not come, when the backend knows
    state: HealthState
    if prev is not None and prev.health.state == "unavailable" and queue.consumers == 0:
        # no worker came since: new work moves at once instead of waiting out the time again
        state, reason = "unavailable", starts or prev.health.reason
    elif waiting > 0 and stalled_s >= cfg.unavailable_after_s:
        state = "unavailable"
        reason = f"no worker has read its streams for {stalled_s:.0f} s while {_n(waiting, 'request')} wait"
        if starts and queue.consumers == 0:
            reason = f"{reason}; {starts}"
    elif failing and queue.consumers == 0:
        assert starts is not None
        state, reason = "unavailable", starts
    elif waiting > 0 and queue.consumers == 0:
        state = "cold-starting"
        reason = f"{_n(waiting, 'request')} wait for a worker (for {stalled_s:.0f} s)"
    elif failures is not None and queue.consumers == 0:
        state = "cold-starting"
        reason = f"{_n(failures.count, 'worker start')} failed in a row; retrying"
    elif failures is not None:
        state = "degraded"
        reason = f"{_n(queue.consumers, 'worker')} read, but {_n(failures.count, 'worker start')} failed in a row"
    elif waiting > 0 and stalled_s >= cfg.unavailable_after_s / 2:
        state = "degraded"
        reason = f"no worker has read its streams for {stalled_s:.0f} s while {_n(waiting, 'request')} wait"
    else:
        state = "serving"
        if queue.consumers:
            reason = f"{_n(queue.consumers, 'worker')} reading"
        elif cfg.scaling.backend == "static":
            reason = "idle: no worker reading (its workers are started by the operator)"
        else:
            reason = "idle: the first request starts a worker"
    since = prev.health.since if prev is not None and prev.health.state == state else now_ms / 1000
    return HealthRecord(
        health=ModelHealth(state=state, reason=reason, since=since),
        marks=marks.last_delivered,
        entries_read=marks.entries_read,
        progress_ms=progress_ms,
        at_ms=now_ms,
        read_rate=rate,
        waiting=waiting,
    )


def _read_rate(prev: HealthRecord | None, now_ms: int, marks: StreamMarks) -> float:
    """The smoothed read rate (requests per second), updated with the reads since the last judgement."""
    rate = prev.read_rate if prev else 0.0
    if prev is not None and now_ms > prev.at_ms and marks.entries_read is not None and prev.entries_read is not None:
        sample = max(0, marks.entries_read - prev.entries_read) * 1000 / (now_ms - prev.at_ms)
        rate = (1 - RATE_SMOOTHING) * rate + RATE_SMOOTHING * sample
    return rate


def _failed_starts(failures: ScalingFailures | None) -> str | None:
    """The cause a user needs first when workers do not come: the backend's failing starts."""
    if failures is None:
        return None
    text = f"its last {_n(failures.count, 'worker start')} failed"
    return f"{text}: {failures.last_error}" if failures.last_error else text


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def unknown_health(now_s: float) -> ModelHealth:
    """Before the dispatcher's first judgement (or while none runs)."""
    return ModelHealth(state="serving", reason="not judged yet: no dispatcher has reported", since=now_s)
