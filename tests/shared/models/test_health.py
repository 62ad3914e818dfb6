"""Health verdicts from what Redis shows: the four states and what moves a model between them."""

from __future__ import annotations

from shared.catalog.models import parse_models
from shared.models.flow import StreamMarks
from shared.models.health import assess
from shared.wire.api import LaneQueue, ModelQueue, ScalingFailures

CFG = parse_models('[models.m]\nengine = "dummy"\nunavailable_after_s = 10\n').models["m"]


def _queue(waiting: int = 0, consumers: int = 0) -> ModelQueue:
    lane = LaneQueue(queued=waiting, routed_unread=0, pending=0)
    return ModelQueue(
        unfinished=waiting,
        queued=waiting,
        routed_unread=0,
        pending=0,
        consumers=consumers,
        flow="flowing",
        high_watermark=64,
        low_watermark=32,
        max_backlog=100,
        lanes={"interactive": LaneQueue(queued=0, routed_unread=0, pending=0), "batch": lane},
    )


def _marks(mark: str = "0-0", read: int = 0) -> StreamMarks:
    return StreamMarks(last_delivered=[mark, "0-0"], entries_read=read)


def test_waiting_work_without_reads_goes_cold_starting_then_unavailable_and_stays_until_a_worker_joins():
    rec = assess(CFG, None, 0, _queue(5), _marks(), None)
    assert rec.health.state == "cold-starting"
    rec = assess(CFG, rec, 9_000, _queue(5), _marks(), None)
    assert rec.health.state == "cold-starting"
    rec = assess(CFG, rec, 10_000, _queue(5), _marks(), None)
    assert rec.health.state == "unavailable" and "10 s while 5 requests wait" in rec.health.reason
    assert rec.health.since == 10.0
    # everything moved away: still unavailable, with no worker
    rec = assess(CFG, rec, 11_000, _queue(0), _marks(), None)
    assert rec.health.state == "unavailable" and rec.health.since == 10.0
    # a worker joins and reads
    rec = assess(CFG, rec, 12_000, _queue(0, consumers=1), _marks("5-0", 5), None)
    assert rec.health.state == "serving" and rec.health.since == 12.0


def test_failed_starts_make_a_model_without_workers_unavailable_and_one_with_workers_degraded():
    two = ScalingFailures(count=2, last_error="exit 1", last_at=0.0)
    three = ScalingFailures(count=3, last_error="exit 1", last_at=0.0)
    assert assess(CFG, None, 0, _queue(0), _marks(), two).health.state == "cold-starting"
    rec = assess(CFG, None, 0, _queue(0), _marks(), three)
    assert rec.health.state == "unavailable" and rec.health.reason == "its last 3 worker starts failed: exit 1"
    assert assess(CFG, None, 0, _queue(3, consumers=2), _marks(), three).health.state == "degraded"


def test_reads_that_move_keep_a_busy_model_serving_and_measure_its_rate():
    rec = assess(CFG, None, 0, _queue(100, consumers=1), _marks("1-0", 0), None)
    for t in range(1, 30):
        rec = assess(CFG, rec, t * 1000, _queue(100, consumers=1), _marks(f"{t}-1", 20 * t), None)
        assert rec.health.state == "serving"
    assert 19 < rec.read_rate < 21  # 20 reads a second
    # reads stop while work waits: degraded at half the time, unavailable at the time
    stalled = [
        assess(CFG, rec, 29_000 + s * 1000, _queue(100, consumers=1), _marks("29-1", 580), None) for s in (5, 10)
    ]
    assert [r.health.state for r in stalled] == ["degraded", "unavailable"]
