"""A worker's start, phase by phase (shared/models/start_phases.py): marked as the worker reaches each
phase, recorded in Redis and on /metrics once it has served its first request."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from shared.models import start_phases
from shared.models.start_phases import process_age_s
from shared.ops import metrics
from shared.redis.keys import Keys
from shared.wire.api import Snapshot, StartPhases

log = logging.getLogger("inferq.start")


class StartClock:
    def __init__(self) -> None:
        self._origin = time.monotonic() - process_age_s()
        self.at_ms = int((time.time() - process_age_s()) * 1000)
        self.marks: dict[str, float] = {}
        self.snapshot: Snapshot = "none"
        self.recorded = False

    def mark(self, phase: str, at: float | None = None) -> None:
        """`phase` reached now (or at monotonic time `at`); the first mark of a phase stands."""
        self.marks.setdefault(phase, round(max(0.0, (at if at is not None else time.monotonic()) - self._origin), 3))

    def first_result(self, inference_s: float, first_token_after_s: float | None = None) -> None:
        """The first request served: engine ready plus that request's own run (and, where the
        engine saw it, its first token), so a worker that waited idle for its first request does
        not count the wait as start time."""
        ready = self.marks.get("engine_ready", 0.0)
        if first_token_after_s is not None:
            self.marks.setdefault("first_token", round(ready + first_token_after_s, 3))
        self.marks.setdefault("first_result", round(ready + inference_s, 3))

    def phases(self) -> StartPhases:
        m = self.marks
        return StartPhases(
            at_ms=self.at_ms,
            imports_s=m.get("imports", 0.0),
            weights_loaded_s=m.get("weights_loaded"),
            engine_ready_s=m.get("engine_ready", 0.0),
            first_token_s=m.get("first_token"),
            first_result_s=m.get("first_result", 0.0),
            snapshot=self.snapshot,
        )

    async def record(self, r: aioredis.Redis, keys: Keys, model: str) -> None:
        """Once per start, after the first result."""
        if self.recorded:
            return
        self.recorded = True
        phases = self.phases()
        for phase in ("imports", "weights_loaded", "engine_ready", "first_token", "first_result"):
            value = getattr(phases, f"{phase}_s")
            if value is not None:
                metrics.START_PHASE.labels(model, phase).set(value)
        try:
            await start_phases.record(r, keys, model, phases)
        except Exception as exc:  # a figure for operators: never worth failing a worker for
            log.warning("could not record the start phases: %s", exc)
        log.info("start phases", extra={"model": model, **{k: v for k, v in self.marks.items()}})


def import_engine(engine, clock: StartClock) -> None:
    """The engine's imports (its `preload`, where it has one): what a memory snapshot can hold."""
    preload = getattr(engine, "preload", None)
    if preload is not None:
        preload()
    clock.mark("imports")


async def start_engine(engine, clock: StartClock) -> None:
    """Import, load and start the engine, marking each phase the engine lets us see."""
    if "imports" not in clock.marks:
        import_engine(engine, clock)
    await engine.start()
    loaded_at = getattr(engine, "weights_loaded_at", None)
    if loaded_at is not None:
        clock.mark("weights_loaded", loaded_at)
    clock.mark("engine_ready")
