"""The schedule model: what a model serves before a job's last request, and wall time from work."""

from __future__ import annotations

import random

import pytest

from shared.planning.schedule import Backlog, QueuedWork, replicas_for, seconds_to_do, work_within


def w(job: str, requests: int, deadline_ms: int = 0, lane: str = "batch") -> QueuedWork:
    return QueuedWork(job, lane, deadline_ms, requests)


def test_jobs_without_a_deadline_share_equally():
    backlog = Backlog([w("a", 50), w("b", 300)], per_request_s=1.0)
    # a's 50 all go before the new job's 100th request, b's only as many as the new job's
    assert backlog.before(w("new", 100), 100.0) == 50 + 100 + 100


def test_an_earlier_deadline_goes_first_and_work_without_one_keeps_a_fourth():
    backlog = Backlog([w("early", 200, deadline_ms=1000), w("late", 500, deadline_ms=9000), w("plain", 600)], 1.0)
    # early's 200 and its own 100 at three turns in four: a third as much plain work meanwhile
    assert backlog.before(w("new", 100, deadline_ms=2000), 100.0) == pytest.approx(300 + 100)
    # without a deadline: an equal share with `plain` (100 each), and deadline work at three times
    # that pace (600 of its 700)
    assert backlog.before(w("new", 100), 100.0) == pytest.approx(100 + 100 + 600)


def test_interactive_work_is_ahead_of_batch_work_and_batch_work_is_never_ahead_of_interactive():
    backlog = Backlog([w("i", 400, lane="interactive"), w("b", 1000)], 1.0)
    assert backlog.before(w("new", 10), 10.0) == 400 + 10 + 10
    assert backlog.before(w("new", 10, lane="interactive"), 10.0) == 10 + 10


def test_a_job_already_in_the_backlog_is_not_counted_twice():
    backlog = Backlog([w("me", 100), w("other", 100)], 1.0)
    assert backlog.before(w("me", 100), 100.0) == Backlog([w("other", 100)], 1.0).before(w("me", 100), 100.0)


def test_wall_time_from_work_and_back():
    rng = random.Random(3)
    for _ in range(500):
        current, replicas, boot = rng.randint(0, 4), rng.randint(1, 8), rng.uniform(0, 20)
        work = rng.uniform(0.1, 500)
        t = seconds_to_do(work, current, replicas, boot)
        assert work_within(t, current, replicas, boot) == pytest.approx(work)


def test_the_first_replica_serves_after_its_start_and_extra_ones_join_when_ready():
    assert seconds_to_do(100, 0, 2, boot_s=10) == pytest.approx(10 + 50)
    assert seconds_to_do(100, 1, 2, boot_s=10) == pytest.approx(10 + 45)  # 10 done by the running one
    assert seconds_to_do(5, 1, 2, boot_s=10) == pytest.approx(5)  # done before the others are up
    assert seconds_to_do(100, 0, 0, boot_s=10) == float("inf")


def test_the_fewest_replicas_that_meet_a_deadline():
    assert replicas_for(100, within_s=30, current=1, boot_s=0, most=8) == 4  # 100/4 = 25 <= 30, 100/3 > 30
    assert replicas_for(100, within_s=5, current=1, boot_s=0, most=8) is None
