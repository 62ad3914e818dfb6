"""The `local` scaling backend: worker processes (`python -m services.inference --model NAME`) on
the dispatcher's machine. Stopping one is a SIGTERM: it finishes or hands back its in-flight
requests within the grace period and exits 0, so a scale-down loses nothing. A worker that exits
on its own (a crash, a dead engine) is noticed on the next tick and replaced."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("inferq.scaling")
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class _Proc:
    popen: subprocess.Popen
    started: float
    stopping: bool = False


class LocalBackend:
    name = "local"

    def __init__(self, env: dict[str, str] | None = None, log_dir: str | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir) if log_dir else None
        self.procs: dict[str, list[_Proc]] = {}
        self.crashed: dict[str, int] = {}  # model -> workers that exited without being asked

    async def replicas(self, model: str) -> int:
        return self.running(model)

    async def scale(self, model: str, desired: int) -> int:
        return self.set_replicas(model, desired)

    def running(self, model: str) -> int:
        """Workers running and not asked to stop; reaps the ones that exited."""
        alive = []
        for p in self.procs.get(model, []):
            code = p.popen.poll()
            if code is None:
                alive.append(p)
            elif not p.stopping:
                self.crashed[model] = self.crashed.get(model, 0) + 1
                log.warning("worker exited on its own (status %s); it will be replaced", code,
                            extra={"model": model, "pid": p.popen.pid})
        self.procs[model] = alive
        return sum(not p.stopping for p in alive)

    def set_replicas(self, model: str, desired: int) -> int:
        current = self.running(model)
        if desired > current:
            for _ in range(desired - current):
                self.procs[model].append(self._spawn(model))
        elif desired < current:
            # the newest first: the oldest have warmed up (loaded models, caches)
            running = [p for p in self.procs[model] if not p.stopping]
            for p in sorted(running, key=lambda p: p.started, reverse=True)[: current - desired]:
                p.stopping = True
                p.popen.send_signal(signal.SIGTERM)
                log.info("stopping a worker (SIGTERM: drain)", extra={"model": model, "pid": p.popen.pid})
        return desired

    def _spawn(self, model: str) -> _Proc:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"worker-{model.replace('/', '_')}-{time.time_ns()}.log", "ab")
        else:
            out = None
        popen = subprocess.Popen([sys.executable, "-m", "services.inference", "--model", model],
                                 env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None)
        if out is not None:
            out.close()
        log.info("started a worker", extra={"model": model, "pid": popen.pid})
        return _Proc(popen, time.monotonic())

    def stop_all(self, timeout: float = 60.0) -> None:
        """The dispatcher is stopping: drain every worker it started."""
        everyone = [p for ps in self.procs.values() for p in ps if p.popen.poll() is None]
        for p in everyone:
            if not p.stopping:
                p.stopping = True
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in everyone:
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
