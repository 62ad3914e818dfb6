"""What a model costs to run: its price per busy hour, or per million tokens for hosted APIs.

A model's `price_per_hour` wins; a Modal model without one is priced from its GPU spec with
`MODAL_GPU_PRICE_PER_HOUR` (the list prices the table in docs/modal.md gives); a model with neither costs
nothing. Costs are counted in integer micro-dollars everywhere they are added up, so a job's total
equals the sum of its result lines exactly.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.catalog.models import ModelConfig

# USD per GPU-hour, Modal list prices (the table in docs/modal.md; check modal.com/pricing before planning).
MODAL_GPU_PRICE_PER_HOUR: dict[str, float] = {
    "T4": 0.59,
    "L4": 0.80,
    "A10G": 1.10,
    "L40S": 1.95,
    "A100": 2.10,
    "A100-40GB": 2.10,
    "A100-80GB": 2.50,
    "H100": 3.95,
}


def modal_gpu_price(gpu: str) -> float | None:
    """USD per hour of a Modal GPU spec such as `L4` or `H100:2` (count x unit price); None when
    the type is not in the table."""
    m = re.fullmatch(r"([A-Za-z0-9-]+?)(?::(\d+))?", gpu.strip())
    if m is None:
        return None
    unit = MODAL_GPU_PRICE_PER_HOUR.get(m.group(1).upper())
    return None if unit is None else unit * int(m.group(2) or 1)


def hourly_price(cfg: ModelConfig) -> float | None:
    """USD per busy hour of one replica of the model, or None when it is not priced by time."""
    if cfg.price_per_hour is not None:
        return cfg.price_per_hour
    if cfg.modal is not None and cfg.price_per_million_tokens is None:
        return modal_gpu_price(cfg.modal.gpu)
    return None


def exact_micros(cfg: ModelConfig, busy_us: float, tokens: float) -> float:
    """What busy time (µs) and tokens cost at the model's prices, in micro-dollars, unrounded."""
    total = 0.0
    per_hour = hourly_price(cfg)
    if per_hour is not None:
        total += per_hour * busy_us / 3600.0
    if cfg.price_per_million_tokens is not None:
        total += cfg.price_per_million_tokens * tokens
    return total


def cost_micros(cfg: ModelConfig, busy_us: int, tokens: int) -> int:
    """What one request cost, in micro-dollars: its busy time at the hourly price, plus its
    tokens at the per-million price."""
    return round(exact_micros(cfg, busy_us, tokens))
