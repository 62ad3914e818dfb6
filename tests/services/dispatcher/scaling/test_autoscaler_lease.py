"""The scaling lease against the real Redis: a tick slower than the lease keeps it (renewed while it
runs), so a second dispatcher cannot take over and scale the same model; a tick that loses the lease
stops; a hung backend call is cut off without stalling the other models."""

from __future__ import annotations

import asyncio

from services.dispatcher.scaling.autoscaler import Autoscaler
from shared.catalog.models import parse_models
from shared.redis.keys import staged_field

MODELS = parse_models("""
[models.slow]
engine = "dummy"
scaling = {backend = "local", max_replicas = 4, target_per_replica = 10}

[models.quick]
engine = "dummy"
scaling = {backend = "local", max_replicas = 4, target_per_replica = 10}
""")
LEASE_S = 0.3


class SlowBackend:
    """Scaling `slow` takes `delay_s` (a Modal call that hangs); `quick` answers at once."""

    name = "local"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.counts: dict[str, int] = {}
        self.scaled: list[tuple[str, int]] = []

    async def replicas(self, model: str) -> int:
        return self.counts.get(model, 0)

    async def scale(self, model: str, desired: int) -> int:
        if model == "slow":
            await asyncio.sleep(self.delay_s)
        self.scaled.append((model, desired))
        self.counts[model] = desired
        return desired


def _autoscaler(r, keys, backend, **kw) -> Autoscaler:
    return Autoscaler(r, keys, MODELS, {"local": backend}, lease_s=LEASE_S, **kw)


async def _busy(r, keys) -> None:
    for model in ("slow", "quick"):
        await r.hset(keys.flow(model), staged_field("batch"), 25)  # 25 requests staged


async def test_a_tick_longer_than_the_lease_keeps_it(r, keys):
    await _busy(r, keys)
    first_backend, second_backend = SlowBackend(delay_s=4 * LEASE_S), SlowBackend(delay_s=0)
    first, second = _autoscaler(r, keys, first_backend), _autoscaler(r, keys, second_backend)

    tick = asyncio.create_task(first.tick())
    while not first.leading:
        await asyncio.sleep(0.01)
    while not tick.done():  # the other dispatcher ticks all along
        await second.tick()
        assert not second.leading
        await asyncio.sleep(0.02)
    await tick
    assert first.leading and second_backend.scaled == []
    assert first_backend.scaled == [("slow", 3), ("quick", 3)]
    assert (await r.get(keys.scaler_leader)).decode() == first.me


async def test_a_tick_that_loses_the_lease_stops(r, keys):
    await _busy(r, keys)
    backend = SlowBackend(delay_s=4 * LEASE_S)
    scaler = _autoscaler(r, keys, backend)
    tick = asyncio.create_task(scaler.tick())
    await asyncio.sleep(LEASE_S / 2)
    await r.set(keys.scaler_leader, "another-dispatcher", px=10_000)  # e.g. ours expired during a pause
    await tick
    assert not scaler.leading and backend.scaled == []
    assert not await r.exists(keys.scaling_state("slow")) and not await r.exists(keys.scaling_state("quick"))


async def test_a_hung_backend_call_does_not_stall_the_other_models(r, keys):
    await _busy(r, keys)
    backend = SlowBackend(delay_s=60)
    scaler = _autoscaler(r, keys, backend, call_timeout_s=0.2)
    await asyncio.wait_for(scaler.tick(), 5)
    assert backend.scaled == [("quick", 3)] and scaler.leading
    assert not await r.exists(keys.scaling_state("slow"))
    assert (await r.hget(keys.scaling_state("quick"), "current")) == b"3"
