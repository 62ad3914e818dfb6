"""Each model's speed, measured on its finished results (shared/planning/plan.py `Speed`).

The collector sums, per serving model, each batch's results that ran: their busy time (the
share of worker time they were charged), completion tokens, prompt characters and tokens, and
max_tokens; one script call adds them to decayed sums in Redis (`Keys.calibration`, half-life
HALF_LIFE results), wrapped by services/dispatcher/planning/lua/add_results.lua. The planner
fits busy seconds per request as a line in completion tokens on those sums: time and cost of a
job follow from the same figure.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.planning.plan import Speed
from shared.redis import scripts
from shared.redis.keys import Keys
from shared.wire.messages import ResultRecord

HALF_LIFE = 5000  # results: older results weigh half as much after this many newer ones
# the sums, in the order the script stores them (fields `<model>:1`...): results, completion
# tokens, busy seconds, their squares and products, prompt characters and tokens, max_tokens and
# the completion tokens of those that reported it, micro-dollars billed, all tokens
N, X, Y, XX, XY, CHARS, PROMPT, MAXT, COMPL, BILLED, TOKENS = range(11)
WIDTH = 11
# fields `<model>:<name>` the planner writes: utilization, and busy seconds per result while full
UTILIZATION, FULL_REQUEST_S = "utilization", "full_request_s"


class CalibrationTally:
    """Sums of the results of collector batches, per serving model, until written."""

    def __init__(self) -> None:
        self.models: dict[str, list[float]] = {}

    def add(self, rec: ResultRecord) -> None:
        if not rec.served_by or rec.busy_us <= 0:
            return  # it never ran here: nothing measured
        s = self.models.get(rec.served_by)
        if s is None:
            s = self.models[rec.served_by] = [0.0] * WIDTH
        x, y = float(rec.completion_tokens), rec.busy_us / 1e6
        s[N] += 1
        s[X] += x
        s[Y] += y
        s[XX] += x * x
        s[XY] += x * y
        if rec.prompt_chars > 0 and rec.prompt_tokens > 0:
            s[CHARS] += rec.prompt_chars
            s[PROMPT] += rec.prompt_tokens
        if rec.max_tokens > 0:
            s[MAXT] += rec.max_tokens
            s[COMPL] += x
        s[BILLED] += rec.cost_micros
        s[TOKENS] += rec.prompt_tokens + rec.completion_tokens

    def merge(self, other: CalibrationTally) -> None:
        for model, sums in other.models.items():
            mine = self.models.setdefault(model, [0.0] * WIDTH)
            for i, v in enumerate(sums):
                mine[i] += v


class Calibration:
    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._add = scripts.register(r, __name__, "add_results")

    async def add(self, tally: CalibrationTally) -> None:
        if not tally.models:
            return
        args: list = [HALF_LIFE, WIDTH, Y + 1]
        for model, sums in tally.models.items():
            args += [model, sums[N], *sums]
        await self._add(keys=[self.keys.calibration], args=args)
        tally.models.clear()

    async def speeds(self, models: list[str]) -> tuple[dict[str, Speed], dict[str, tuple[float, int]]]:
        """Every model's fitted speed (a model with nothing measured gets an empty Speed), and
        the busy seconds its results were charged and their number, ever."""
        if not models:
            return {}, {}
        extra = ("count", "busy", UTILIZATION, FULL_REQUEST_S)
        width = WIDTH + len(extra)
        fields = [f for m in models for f in (*(f"{m}:{i + 1}" for i in range(WIDTH)), *(f"{m}:{e}" for e in extra))]
        raw = await self.r.hmget(self.keys.calibration, fields)  # type: ignore[misc]
        speeds: dict[str, Speed] = {}
        totals: dict[str, tuple[float, int]] = {}
        for n, model in enumerate(models):
            row = raw[n * width : (n + 1) * width]
            speed = fit([float(v) if v is not None else 0.0 for v in row[:WIDTH]])
            count, spent, utilization, full = row[WIDTH:]
            if speed.calibrated_from:
                speed.calibrated_from = int(count or 0)
            if utilization is not None:
                speed.utilization = float(utilization)
            if full is not None:
                speed.full_request_s = float(full)
            speeds[model] = speed
            totals[model] = (float(spent or 0), int(count or 0))
        return speeds, totals

    async def save(self, values: dict[str, dict[str, float]]) -> None:
        """The planner's measurements: `{model: {UTILIZATION: .., FULL_REQUEST_S: ..}}`."""
        mapping = {f"{m}:{name}": v for m, named in values.items() for name, v in named.items()}
        if mapping:
            await self.r.hset(self.keys.calibration, mapping=mapping)  # type: ignore[misc]


def fit(s: list[float]) -> Speed:
    """Least squares of busy seconds on completion tokens (never a negative base or slope), and
    the token ratios, from one model's sums."""
    n = s[N]
    if n < 1:
        return Speed()
    mx, my = s[X] / n, s[Y] / n
    var = s[XX] / n - mx * mx
    cov = s[XY] / n - mx * my
    slope = cov / var if var > 1e-9 * max(1.0, mx * mx) and cov > 0 else 0.0
    base = my - slope * mx
    if base < 0:  # through the origin instead
        base, slope = 0.0, (s[XY] / s[XX] if s[XX] > 0 else 0.0)
    return Speed(
        busy_base_s=base,
        busy_per_token_s=slope,
        calibrated_from=max(1, round(n)),  # the caller puts the undecayed count here
        chars_per_token=s[CHARS] / s[PROMPT] if s[PROMPT] > 0 else None,
        completion_ratio=min(1.0, s[COMPL] / s[MAXT]) if s[MAXT] > 0 else None,
        mean_completion_tokens=mx,
        billed_micros=s[BILLED] / n,
        billed_busy_s=my,
        billed_tokens=s[TOKENS] / n,
    )
