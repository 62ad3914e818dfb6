"""A backend's calls for a model that keep failing (a Modal spawn, cancel or status check without
an answer, a local worker that exits at once) are retried after growing delays, not at every
half-second tick, and recorded in Redis so `GET /v1/models` shows them. One record per model,
deleted once the failing call succeeds again."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.core.backoff import exponential_delay
from shared.redis.keys import Keys

log = logging.getLogger("inferq.scaling")


@dataclass
class _State:
    count: int = 0
    until: float = 0.0  # no new attempt before this (clock seconds)
    op: str = ""  # what failed last: only its next success clears the record
    error: str = ""


class BackendFailures:
    """Exponential backoff per model: `first_s`, doubling, capped at `cap_s`. The clock is wall time
    (unix seconds) so the record's retry time needs no conversion; tests pass a fake one."""

    def __init__(self, keys: Keys, *, first_s: float = 1.0, cap_s: float = 30.0, clock=time.time) -> None:
        self.keys = keys
        self.first_s = first_s
        self.cap_s = cap_s
        self.clock = clock
        self._state: dict[str, _State] = {}

    async def waiting(self, r: aioredis.Redis, model: str) -> bool:
        """Still inside the backoff after a failure: make no attempt of any kind for this model."""
        state = await self._load(r, model)
        return state.count > 0 and self.clock() < state.until

    async def _load(self, r: aioredis.Redis, model: str) -> _State:
        """A new leader continues the previous one's backoff instead of retrying at once."""
        if model not in self._state:
            h = {k.decode(): v.decode() for k, v in (await r.hgetall(self.keys.scaling_failures(model))).items()}  # type: ignore[misc]
            self._state[model] = (
                _State(int(h["count"]), int(h["retry_ms"]) / 1000, h.get("op", ""), h.get("error", ""))
                if h
                else _State()
            )
        return self._state[model]

    async def failed(self, r: aioredis.Redis, model: str, op: str, error: str, exit_status: int | None = None) -> float:
        """Count a failure of `op` and start the next delay; returns the delay. Logged when the
        error changes, not at every retry of the same one."""
        state = await self._load(r, model)
        state.count += 1
        delay = exponential_delay(state.count, self.first_s, self.cap_s)
        now = self.clock()
        state.until, state.op = now + delay, op
        error = error[:500]
        if error != state.error:
            log.warning(
                "%s failed (%s); retrying in %.0fs, then less often while it keeps failing",
                op,
                error,
                delay,
                extra={"model": model, "failures": state.count},
            )
        state.error = error
        record = {
            "count": state.count,
            "op": op,
            "error": error,
            "at_ms": int(now * 1000),
            "retry_ms": int(state.until * 1000),
            "exit_status": "" if exit_status is None else exit_status,
        }
        await r.hset(self.keys.scaling_failures(model), mapping=record)  # type: ignore[misc]
        return delay

    async def succeeded(self, r: aioredis.Redis, model: str, op: str) -> None:
        """`op` worked: if it is what was failing, the model is healthy again."""
        state = await self._load(r, model)
        if state.count == 0 or state.op != op:
            return
        self._state[model] = _State()
        await r.delete(self.keys.scaling_failures(model))
        log.info("%s works again after %d failures", op, state.count, extra={"model": model})
