"""One percentile definition for the benchmark's table and its latency plot, so the two agree."""

from __future__ import annotations


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) of already sorted values, interpolated linearly between the two
    nearest ranks (numpy's default): p50 of [1, 2] is 1.5."""
    if not sorted_values:
        raise ValueError("no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def curve(sorted_values: list[float], points: int = 1000) -> tuple[list[float], list[float]]:
    """The CDF as (latency, share) pairs drawn from `percentile` itself."""
    shares = [k / points for k in range(points + 1)]
    return [percentile(sorted_values, s) for s in shares], shares
