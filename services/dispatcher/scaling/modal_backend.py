"""The `modal` scaling backend: spawns and cancels `run` calls of the model's deployed Modal class.

Why spawned runs rather than setting min/max containers at runtime: a run is a unit of work the
dispatcher can count, start in about a second and end on purpose (cancel → the container's worker
loop drains: in-flight requests finish or go back to the stream); containers kept warm by
`min_containers` would do nothing unless their @enter started a loop nobody can stop cleanly, and
runtime autoscaler values are reset by the next deploy. Each run also ends by itself once the
model's streams have been idle for the cooldown, so a dispatcher outage cannot leave GPUs running.
The deployed class's `max_containers` stays the hard cost cap.

Live call ids are kept in Redis (`scaling:modal:<model>`), so a restarted dispatcher still knows
which runs it owns.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from shared.keys import Keys
from shared.models_config import ModelsConfig, modal_class_name

log = logging.getLogger("inferq.scaling")


class ModalBackend:
    name = "modal"

    def __init__(self, r: aioredis.Redis, keys: Keys, models: ModelsConfig, app_name: str = "inferq", modal_module=None) -> None:
        if modal_module is None:
            import modal as modal_module
        self.modal = modal_module
        self.r = r
        self.keys = keys
        self.models = models
        self.app_name = app_name
        self._classes: dict[str, object] = {}

    def _instance(self, model: str):
        if model not in self._classes:
            cls = self.modal.Cls.from_name(self.app_name, modal_class_name(model))
            self._classes[model] = cls()
        return self._classes[model]

    async def _live_calls(self, model: str) -> list[tuple[str, int]]:
        """(call id, spawned ns) of runs still going, oldest first; forgets finished ones."""
        key = self.keys.modal_calls(model)
        calls = sorted(((k.decode(), int(v)) for k, v in (await self.r.hgetall(key)).items()), key=lambda c: c[1])
        live, done = [], []
        for call_id, spawned in calls:
            call = self.modal.FunctionCall.from_id(call_id)
            try:
                await call.get.aio(timeout=0)
                done.append(call_id)  # returned: the run ended (idle, or cancelled)
            except TimeoutError:
                live.append((call_id, spawned))
            except Exception as exc:  # it failed or was cancelled: it is not running either
                log.info("modal run %s ended: %s", call_id, type(exc).__name__, extra={"model": model})
                done.append(call_id)
        if done:
            await self.r.hdel(key, *done)
        return live

    async def replicas(self, model: str) -> int:
        return len(await self._live_calls(model))

    async def scale(self, model: str, desired: int) -> int:
        live = await self._live_calls(model)
        key = self.keys.modal_calls(model)
        if desired > len(live):
            cfg = self.models.get(model)
            instance = self._instance(model)
            for _ in range(desired - len(live)):
                call = await instance.run.spawn.aio(idle_exit_s=cfg.scaling.idle_cooldown_s)
                await self.r.hset(key, call.object_id, time.time_ns())
                log.info("spawned a modal run", extra={"model": model, "call_id": call.object_id})
        elif desired < len(live):
            for call_id, _ in sorted(live, key=lambda c: c[1], reverse=True)[: len(live) - desired]:
                await self.modal.FunctionCall.from_id(call_id).cancel.aio()
                await self.r.hdel(key, call_id)
                log.info("cancelled a modal run (its worker drains)", extra={"model": model, "call_id": call_id})
        return desired
