"""Ids sort by creation time, and within one process in creation order even when many are made in
the same millisecond (lists are ordered by id: a page must not swap two files uploaded together)."""

from __future__ import annotations

import time

from shared.core import ids


def test_ids_made_in_one_burst_sort_in_creation_order_and_carry_their_time():
    t0 = int(time.time() * 1000)
    made = [ids.new_job_id() for _ in range(20_000)]
    t1 = int(time.time() * 1000)
    assert made == sorted(made) and len(set(made)) == len(made)
    assert t0 <= ids.created_ms(made[0]) and ids.created_ms(made[-1]) <= t1 + 1
    files = [ids.new_file_id() for _ in range(100)]
    assert files == sorted(files)


def test_a_clock_that_steps_back_does_not_reorder_ids(monkeypatch):
    first = ids.new_job_id()
    now = time.time
    monkeypatch.setattr(ids.time, "time", lambda: now() - 5.0)
    later = [ids.new_job_id() for _ in range(100)]
    assert [first, *later] == sorted([first, *later])
    assert all(ids.created_ms(i) == ids.created_ms(first) for i in later)
