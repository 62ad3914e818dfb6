"""Spend limits: per model (every tenant together) and per tenant (optionally only some models),
per UTC day and per UTC month, in USD.

```toml
[models.llama-8b.budget]          # the model, whoever uses it
monthly_usd = 30.0
[tenants.my-team.budget]          # one tenant, every model (or only `models`)
daily_usd = 5.0
models = ["llama-8b"]
```
Spend is counted when results are recorded, in micro-dollars, per (tenant, serving model) in one
hash per day and one per month (`Keys.spend`). A limit is reached when the spend in its scope is
at or over it; until the period ends, new work in its scope is refused (429 `budget_exceeded`) or,
for a model with a fallback chain, moved to the next model outside the scope.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from msgspec import Meta, Struct

from shared.catalog.money import MICROS_PER_USD

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
# How long a period's spend hash outlives its period (a little, for late readers).
PERIOD_TTL_S: dict[Period, int] = {"day": 3 * 86_400, "month": 40 * 86_400}


class Budget(Struct, forbid_unknown_fields=True, kw_only=True):
    daily_usd: Annotated[float, Meta(ge=0)] | None = None
    monthly_usd: Annotated[float, Meta(ge=0)] | None = None
    models: list[str] = []  # a tenant budget: only these models count (empty: every model)

    def limit(self, period: Period) -> float | None:
        return self.daily_usd if period == "day" else self.monthly_usd


class TenantConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    budget: Budget | None = None


class Limit(Struct, frozen=True, kw_only=True):
    """One spend limit: whose spend it counts (a tenant or every tenant; some models or every
    model), over which period, and how much."""

    tenant: str | None  # None: every tenant
    models: tuple[str, ...]  # empty: every model
    period: Period
    usd: float

    def covers(self, tenant: str, model: str) -> bool:
        return (self.tenant is None or self.tenant == tenant) and (not self.models or model in self.models)

    @property
    def name(self) -> str:
        """How a refusal names it: `tenant my-team daily`, `model llama-8b monthly`."""
        when = "daily" if self.period == "day" else "monthly"
        if self.tenant is None:
            return f"model {','.join(self.models)} {when}"
        scope = f" on {','.join(self.models)}" if self.models else ""
        return f"tenant {self.tenant}{scope} {when}"

    def spent_micros(self, spend: dict[tuple[str, str], int]) -> int:
        """This limit's spend out of a period's (tenant, model) -> micro-dollars."""
        return sum(v for (t, m), v in spend.items() if self.covers(t, m))

    def reached(self, spend: dict[tuple[str, str], int]) -> bool:
        return self.spent_micros(spend) >= round(self.usd * MICROS_PER_USD)


def period_id(period: Period, now: dt.datetime) -> str:
    """The UTC day (2026-12-01) or month (2026-12) `now` falls in."""
    return now.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def period_end(period: Period, now: dt.datetime) -> dt.datetime:
    """When the period `now` falls in ends (UTC): the next midnight, or the next month's first."""
    day = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC)
    if period == "day":
        return day + dt.timedelta(days=1)
    return dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.UTC)
