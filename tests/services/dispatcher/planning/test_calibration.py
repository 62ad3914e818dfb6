"""A model's speed fitted on its results, through the calibration script on a real Redis."""

from __future__ import annotations

import random

import pytest

from services.dispatcher.planning.calibration import HALF_LIFE, Calibration, CalibrationTally, fit
from shared.wire.messages import ResultRecord


def rec(busy_s: float, completion: int, prompt_chars: int = 40, prompt_tokens: int = 10, max_tokens: int = 64):
    return ResultRecord(
        "job",
        "r",
        "m",
        "succeeded",
        prompt_tokens,
        completion,
        b"{}",
        served_by="m",
        busy_us=round(busy_s * 1e6),
        cost_micros=7,
        prompt_chars=prompt_chars,
        max_tokens=max_tokens,
    )


async def test_busy_time_per_request_is_a_line_in_completion_tokens(r, keys):
    rng = random.Random(1)
    tally = CalibrationTally()
    for _ in range(2000):
        tokens = rng.randint(1, 64)
        tally.add(rec(0.02 + 0.003 * tokens + rng.uniform(-0.001, 0.001), tokens))
    tally.add(ResultRecord("job", "x", "m", "failed", 0, 0, b"{}"))  # never ran: not measured
    cal = Calibration(r, keys)
    await cal.add(tally)
    speeds, totals = await cal.speeds(["m", "other"])
    s = speeds["m"]
    assert s.calibrated_from == 2000 and speeds["other"].calibrated_from == 0
    assert s.busy_base_s == pytest.approx(0.02, abs=0.001) and s.busy_per_token_s == pytest.approx(0.003, rel=0.02)
    assert s.chars_per_token == pytest.approx(4.0) and s.billed_micros == pytest.approx(7.0)
    assert s.completion_ratio == pytest.approx(32.5 / 64, rel=0.05)
    busy, count = totals["m"]
    assert count == 2000 and busy == pytest.approx(sum(0.02 + 0.003 * t for t in range(1, 65)) * 2000 / 64, rel=0.05)


async def test_old_results_weigh_less_as_new_ones_come(r, keys):
    cal = Calibration(r, keys)
    for busy, n in ((1.0, HALF_LIFE * 4), (0.1, HALF_LIFE * 4)):
        tally = CalibrationTally()
        for _ in range(n):
            tally.add(rec(busy, 8))
        await cal.add(tally)
    speeds, _ = await cal.speeds(["m"])
    # after four half-lives of the new speed, the old one weighs 1/16 as much
    # (a batch is added whole after the decay: the new 4 half-lives of results weigh 1 each)
    assert speeds["m"].busy_base_s == pytest.approx((0.1 * 4 + 1.0 * 4 / 16) / (4 + 4 / 16), rel=0.01)
    assert speeds["m"].calibrated_from == HALF_LIFE * 8


def test_no_negative_base_and_no_slope_from_a_single_length():
    tally = CalibrationTally()
    for _ in range(10):
        tally.add(rec(0.5, 16))
    sums = tally.models["m"]
    s = fit(sums)
    assert s.busy_per_token_s == 0.0 and s.busy_base_s == pytest.approx(0.5)
