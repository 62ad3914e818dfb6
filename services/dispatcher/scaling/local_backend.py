"""The `local` scaling backend: worker processes (`python -m services.inference --model NAME`) on
the dispatcher's machine. Stopping one is a SIGTERM: it finishes or hands back its in-flight
requests within the grace period and exits 0, so a scale-down loses nothing. A worker that exits
on its own (a crash, a dead engine, a bad models file) is replaced after a growing delay (1 s
doubling to 60 s, back to 1 s once a worker has stayed up 30 s), so one that cannot start is not
restarted at every tick; its failures show in `GET /v1/models`.

Each started worker is recorded in Redis (host, pid, process start time), so the next leader on
this host (Linux: it reads /proc) adopts the workers still running instead of starting more: it
counts them, and can stop them, though it did not start them. Workers recorded by another host
are left to that host."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from services.dispatcher.scaling.failures import BackendFailures
from services.dispatcher.scaling.procs import is_worker, start_ticks, worker_argv
from shared.redis.keys import Keys

log = logging.getLogger("inferq.scaling")
ROOT = Path(__file__).resolve().parents[3]
STABLE_S = 30.0  # a worker up this long has started fine: the restart delay goes back to its minimum


@dataclass
class _Worker:
    pid: int
    ticks: int | None  # process start time, to tell it from a later process with the same pid
    started: float  # clock seconds
    popen: subprocess.Popen | None = None  # None: adopted from an earlier leader
    stopping: bool = False
    log_path: Path | None = None

    def alive(self, model: str) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return is_worker(self.pid, self.ticks, model)

    def record(self, host: str) -> str:
        return json.dumps(
            {"host": host, "pid": self.pid, "ticks": self.ticks, "started": self.started, "stopping": self.stopping}
        )

    def signal(self, sig: int) -> None:
        if self.popen is not None:
            self.popen.send_signal(sig)  # a no-op once it has been reaped
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


class LocalBackend:
    name = "local"

    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        env: dict[str, str] | None = None,
        log_dir: str | None = None,
        *,
        clock=time.time,
        stable_s: float = STABLE_S,
    ) -> None:
        self.r = r  # replaced when the dispatcher reconnects (the backend outlives its connection)
        self.keys = keys
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir) if log_dir else None
        self.clock = clock
        self.stable_s = stable_s
        self.host = socket.gethostname()
        self.failures = BackendFailures(keys, first_s=1.0, cap_s=60.0, clock=clock)
        self.workers: dict[str, list[_Worker]] = {}
        self.crashed: dict[str, int] = {}  # model -> workers that exited without being asked

    async def replicas(self, model: str) -> int:
        """Workers running and not asked to stop; reaps the ones that exited."""
        if model not in self.workers:
            await self._adopt(model)
        alive = []
        for w in self.workers[model]:
            if w.alive(model):
                alive.append(w)
                continue
            await self.r.hdel(self.keys.local_workers(model), self._field(w))  # type: ignore[misc]
            if not w.stopping:
                await self._crashed(model, w)
        self.workers[model] = alive
        running = [w for w in alive if not w.stopping]
        if any(self.clock() - w.started >= self.stable_s for w in running):
            await self.failures.succeeded(self.r, model, "start")
        return len(running)

    async def scale(self, model: str, desired: int) -> int:
        """Start or stop toward `desired`; returns the count reached. Inside a restart backoff no
        worker is started."""
        current = await self.replicas(model)
        if desired > current:
            if await self.failures.waiting(self.r, model):
                return current
            for _ in range(desired - current):
                if not await self._start(model):
                    return current
                current += 1
        elif desired < current:
            # the newest first: the oldest have warmed up (loaded models, caches)
            running = [w for w in self.workers[model] if not w.stopping]
            for w in sorted(running, key=lambda w: w.started, reverse=True)[: current - desired]:
                w.stopping = True
                w.signal(signal.SIGTERM)
                await self.r.hset(self.keys.local_workers(model), self._field(w), w.record(self.host))  # type: ignore[misc]
                log.info("stopping a worker (SIGTERM: drain)", extra={"model": model, "pid": w.pid})
            current = desired
        return current

    async def _adopt(self, model: str) -> None:
        """Count the workers an earlier leader on this host started that still run; forget the dead."""
        self.workers[model] = []
        key = self.keys.local_workers(model)
        for field, raw in (await self.r.hgetall(key)).items():  # type: ignore[misc]
            rec = json.loads(raw)
            if rec["host"] != self.host:
                continue
            w = _Worker(rec["pid"], rec["ticks"], rec["started"], stopping=rec["stopping"])
            if w.alive(model):
                self.workers[model].append(w)
                log.info("adopted a running worker", extra={"model": model, "pid": w.pid})
            else:
                await self.r.hdel(key, field)  # type: ignore[misc]

    async def _crashed(self, model: str, w: _Worker) -> None:
        status = w.popen.returncode if w.popen is not None else None
        self.crashed[model] = self.crashed.get(model, 0) + 1
        error = _last_line(w.log_path) or (f"exited with status {status}" if status is not None else "exited")
        delay = await self.failures.failed(self.r, model, "start", error, exit_status=status)
        log.info(
            "worker exited on its own (status %s); a new one may start in %.0fs",
            status,
            delay,
            extra={"model": model, "pid": w.pid},
        )

    async def _start(self, model: str) -> bool:
        log_path = out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"worker-{model.replace('/', '_')}-{time.time_ns()}.log"
            out = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                [sys.executable, *worker_argv(model)],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )
        except OSError as exc:
            await self.failures.failed(self.r, model, "start", f"{type(exc).__name__}: {exc}")
            return False
        finally:
            if out is not None:
                out.close()
        w = _Worker(popen.pid, start_ticks(popen.pid), self.clock(), popen=popen, log_path=log_path)
        self.workers[model].append(w)
        await self.r.hset(self.keys.local_workers(model), self._field(w), w.record(self.host))  # type: ignore[misc]
        log.info("started a worker", extra={"model": model, "pid": popen.pid})
        return True

    def _field(self, w: _Worker) -> str:
        return f"{self.host}:{w.pid}"

    def stop_all(self, timeout: float = 60.0) -> None:
        """The dispatcher is stopping: drain every worker it runs, adopted ones included. Their
        Redis records are left: the next leader finds them dead and drops them."""
        everyone = [(model, w) for model, ws in self.workers.items() for w in ws if w.alive(model)]
        for _, w in everyone:
            if not w.stopping:
                w.stopping = True
                w.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for model, w in everyone:
            if w.popen is not None:
                try:
                    w.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.popen.kill()
                continue
            while w.alive(model) and time.monotonic() < deadline:
                time.sleep(0.05)
            if w.alive(model):
                w.signal(signal.SIGKILL)


def _last_line(path: Path | None) -> str | None:
    """Why a worker stopped, in one line: the message of the last line it wrote (its logs are JSON
    lines: their `msg`, without the traceback), when its output goes to a file."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 262_144))  # a last record with a long traceback, whole
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    if not lines:
        return None
    last = lines[-1]
    try:
        doc = json.loads(last)
        if isinstance(doc, dict) and isinstance(doc.get("msg"), str):
            last = doc["msg"]
    except ValueError:
        pass
    return " ".join(last.split())[:500]
