"""One GPU container's life: load the model once, run the worker loop for as long as it is asked
to (one run per call), drain on exit. Modal's class (modal_app.py) delegates here, so this is plain
code that runs, and is tested, without Modal."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from services.inference.engines import Engine, EngineDead, create_engine
from services.inference.worker import InferenceWorker
from shared.keys import Keys
from shared.models_config import ModelConfig, load_models
from shared.redis_client import check_server_at_start, connect
from shared.settings import Settings

log = logging.getLogger("inferq.container")


class ContainerWorker:
    def __init__(self, model_name: str, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.model: ModelConfig = load_models(self.settings.models_path).models[model_name]
        self.engine: Engine | None = None
        self.redis: aioredis.Redis | None = None
        self._stop = asyncio.Event()
        self._runs: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Load the model (minutes for a large one: once per container, not per run)."""
        if problem := check_server_at_start(self.settings.redis_url):
            raise RuntimeError(problem)
        self.redis = connect(self.settings.redis_url, self.settings)
        self.engine = create_engine(self.model)
        await self.engine.start()

    async def run(self, idle_exit_s: float = 60.0, max_s: float | None = None) -> dict:
        """Serve the model's streams until nothing has arrived for `idle_exit_s`, `max_s` has passed,
        or the container is told to stop; then return what was done. Raises EngineDead when the
        engine died (the container must then be replaced)."""
        assert self.redis is not None and self.engine is not None, "run() before start()"
        worker = InferenceWorker(
            self.redis,
            Keys(self.settings.key_prefix),
            self.model,
            self.engine,
            grace_s=self.settings.shutdown_grace_s,
            owns_engine=False,
            heartbeat_ttl_s=self.settings.heartbeat_ttl_s,
        )
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.current_task()
        assert task is not None  # run() is awaited inside a task
        self._runs.add(task)
        watcher = asyncio.create_task(self._watch(worker, stop, idle_exit_s, max_s))
        try:
            await worker.run(stop)
        finally:
            watcher.cancel()
            self._runs.discard(task)
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
        if self.engine is not None:
            try:
                await self.engine.stop()
            except EngineDead:
                pass
        if self.redis is not None:
            await self.redis.aclose()
