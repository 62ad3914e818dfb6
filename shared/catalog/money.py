"""Money as inferq counts it: integer micro-dollars wherever amounts are added up (so a job's total
equals the sum of its result lines exactly), USD with 6 decimals wherever they are shown."""

from __future__ import annotations

MICROS_PER_USD = 1_000_000


def usd(micros: int) -> float:
    """Micro-dollars as the USD amount the API shows (6 decimals)."""
    return round(micros / MICROS_PER_USD, 6)
