"""One GPU container's life: load the model once, run the worker loop for as long as it is asked
to (one run per call), drain on exit. Modal's class (modal_app.py) delegates here, so this is plain
code that runs, and is tested, without Modal.

The start is split where Modal's memory snapshot falls: `prepare()` is what a snapshot may hold
(the engine's imports; with a GPU snapshot, the loaded engine, asleep), `start()` what each
container does after it (wake or load the engine, connect to Redis: a connection does not survive
a restore). Without a snapshot both run one after the other."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from services.inference.engines import Engine, EngineDead, create_engine
from services.inference.start_clock import StartClock, import_engine, start_engine
from services.inference.worker import InferenceWorker
from shared.catalog.models import ModelConfig, load_models
from shared.core.settings import Settings
from shared.redis.client import check_server_at_start, connect
from shared.redis.keys import Keys

log = logging.getLogger("inferq.container")


class ContainerWorker:
    def __init__(self, model_name: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.model: ModelConfig = load_models(self.settings.models_path).models[model_name]
        self.engine: Engine = create_engine(self.model)
        self.redis: aioredis.Redis | None = None
        self.clock = StartClock()
        self._engine_started = False
        self._stop = asyncio.Event()
        self._runs: set[asyncio.Task] = set()
        modal = self.model.modal
        self.clock.snapshot = (
            "gpu" if modal and modal.gpu_snapshot else "memory" if modal and modal.memory_snapshot else "none"
        )

    async def prepare(self) -> None:
        """Before Modal's snapshot: import the engine; with a GPU snapshot also load it, then put
        it to sleep (weights off the GPU, no KV cache) so the snapshot is small and consistent."""
        import_engine(self.engine, self.clock)
        if self.clock.snapshot == "gpu":
            self.engine.sleep_for_snapshot = True  # type: ignore[attr-defined]  # only the vllm engine has it
            await start_engine(self.engine, self.clock)
            self._engine_started = True
            await self.engine.suspend()  # type: ignore[attr-defined]

    async def start(self) -> None:
        """After the snapshot (or right after prepare): the engine ready, Redis connected. Loading
        takes minutes for a large model: once per container, not per run."""
        if problem := check_server_at_start(self.settings.redis_url):
            raise RuntimeError(problem)
        if "imports" not in self.clock.marks:
            await self.prepare()
        if self._engine_started:
            await self.engine.resume()  # type: ignore[attr-defined]
        else:
            await start_engine(self.engine, self.clock)
            self._engine_started = True
        self.redis = connect(self.settings.redis_url, self.settings)

    async def run(self, idle_exit_s: float = 60.0, max_s: float | None = None) -> dict:
        """Serve the model's streams until nothing has arrived for `idle_exit_s`, `max_s` has passed,
        or the container is told to stop; then return what was done. Raises EngineDead when the
        engine died (the container must then be replaced).

        Cancelled (Modal cancels a run as the autoscaler scales down), it stops reading and
        finishes or hands back what it holds, within the grace period, before the cancel goes on."""
        assert self.redis is not None and self._engine_started, "run() before start()"
        worker = InferenceWorker(
            self.redis,
            Keys(self.settings.key_prefix),
            self.model,
            self.engine,
            grace_s=self.settings.shutdown_grace_s,
            owns_engine=False,
            heartbeat_ttl_s=self.settings.heartbeat_ttl_s,
            start_clock=self.clock,
        )
        stop = asyncio.Event()
        started = time.monotonic()
        serving = asyncio.ensure_future(worker.run(stop))
        self._runs.add(serving)
        watcher = asyncio.create_task(self._watch(worker, stop, idle_exit_s, max_s))
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            if serving.done():
                raise
            log.info("run cancelled: draining", extra={"model": self.model.name, "inflight": len(worker.inflight)})
            stop.set()
            await serving  # a second cancel leaves the drain to go on in the background
            raise
        finally:
            watcher.cancel()
            self._runs.discard(serving)
        if worker.fatal is not None:
            raise worker.fatal
        return {
            "model": self.model.name,
            "served": worker.completed,
            "seconds": round(time.monotonic() - started, 1),
        }

    async def _watch(
        self, worker: InferenceWorker, stop: asyncio.Event, idle_exit_s: float, max_s: float | None
    ) -> None:
        started = last_busy = time.monotonic()
        seen = -1
        while not stop.is_set():
            await asyncio.sleep(min(1.0, idle_exit_s / 4))
            now = time.monotonic()
            if worker.inflight or worker.outbox or worker.completed != seen:
                seen, last_busy = worker.completed, now
            if self._stop.is_set() or now - last_busy >= idle_exit_s or (max_s is not None and now - started >= max_s):
                stop.set()

    async def drain(self) -> None:
        """The container is going away: stop every run (they finish or hand back in-flight work
        within the grace period), then release the model and the connection."""
        self._stop.set()
        if self._runs:
            await asyncio.wait(self._runs, timeout=self.settings.shutdown_grace_s + 5)
        if self._engine_started:
            try:
                await self.engine.stop()
            except EngineDead:
                pass
        if self.redis is not None:
            await self.redis.aclose()
