"""Run the whole stack on this machine: a private redis-server and every service as a subprocess.

Used by the demo, the end-to-end tests and benchmarks. Processes are stopped with SIGTERM (a
graceful drain) and killed only if they outlive the grace period.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# How inferq's Redis keeps what it acknowledged: every write in the append-only file, fsynced each
# second, and never an evicted key. The AOF is rewritten (compacted, in a forked child that
# serializes the whole dataset) only once it is past 1 GB and has doubled since the last rewrite:
# Redis's default, 64 MB, is ~22,000 requests at ~3 KB of AOF each, so under load a 2-core host
# spent a rewrite's CPU every few seconds. The price is a longer replay after a restart (at most
# ~1 GB more of AOF). docker-compose.yml passes the same settings (tests/test_compose.py).
REDIS_PERSISTENCE = (
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--maxmemory-policy",
    "noeviction",
    "--auto-aof-rewrite-min-size",
    "1gb",
)


class StackError(RuntimeError):
    pass


def free_port() -> int:
    """A loopback port nothing listens on, below the kernel's ephemeral range. A port the kernel
    picks itself (bind to port 0) lies in that range, where an outgoing connection of any process
    can take it between this call and the bind of the service meant to listen there (which then
    fails to start: address already in use)."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the low range is full: whatever the kernel picks
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """The first port of the range the kernel gives outgoing connections (Linux; 32768 elsewhere,
    which is below the ranges of macOS and Windows too)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class RedisServer:
    """A throwaway redis-server on a free loopback port, with AOF on as in production."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(
                "redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server; "
                "macOS: brew install redis) or point INFERQ_REDIS_URL at a running Redis."
            )
        self.binary = binary
        self.port = port or free_port()
        self.dir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                *REDIS_PERSISTENCE,
                "--save",
                "",
            ],
            stdout=open(self.dir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped last, after the services that use it
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise StackError(f"redis-server did not start on port {self.port}; see {self.dir / 'redis.log'}")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def restart(self) -> RedisServer:
        """Stop and start again on the same port and data directory (it reloads its AOF)."""
        self.stop()
        return self.start()


class LocalStack:
    def __init__(
        self,
        models_path: str | Path,
        *,
        redis_url: str | None = None,
        workdir: str | Path | None = None,
        dispatchers: int = 1,
        workers_per_model: int = 1,
        models: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        launcher: list[str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.models_path = str(Path(models_path).resolve())
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="inferq-"))
        self.redis: RedisServer | None = None
        self.redis_url = redis_url
        self.dispatchers = dispatchers
        self.workers_per_model = workers_per_model
        self.model_names = models
        self.extra_env = env or {}
        self.port = port or free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        # how a service is started: `launcher + [module, *args]`, in `cwd` (a deployed file set, say)
        self.launcher = launcher or [sys.executable, "-m"]
        self.cwd = Path(cwd) if cwd is not None else ROOT

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env.setdefault("INFERQ_LOCAL_WORKER_LOG_DIR", str(self.workdir))
        env.setdefault("INFERQ_AUTH", "off")  # a local stack on loopback: pass INFERQ_AUTH=on to try keys
        env.update(
            INFERQ_REDIS_URL=self.redis_url or "",
            INFERQ_MODELS=self.models_path,
            INFERQ_PORT=str(self.port),
            INFERQ_HOST="127.0.0.1",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        return env

    def start(self) -> LocalStack:
        if self.redis_url is None:
            self.redis = RedisServer(self.workdir / "redis").start()
            self.redis_url = self.redis.url
        names = self.model_names
        if names is None:
            from shared.catalog.models import load_models

            config = load_models(self.models_path)
            # models scaled by the `local` or `modal` backend get their workers from the dispatcher
            names = [n for n in config.names() if config.models[n].scaling.backend not in ("local", "modal")]
        self.spawn("ingest", "services.ingest")
        for i in range(self.dispatchers):
            self.spawn(f"dispatcher-{i}", "services.dispatcher")
        for name in names:
            for i in range(self.workers_per_model):
                self.spawn(f"worker-{name}-{i}", "services.inference", "--model", name)
        self.wait_ready()
        return self

    def spawn(self, name: str, module: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name.replace('/', '_')}.log", "ab")
        proc = subprocess.Popen(
            [*self.launcher, module, *args],
            env=self.env(),
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the caller only, which stops them in order
        )
        self.procs[name] = proc
        return proc

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(f"ingest not ready after {timeout}s; logs in {self.workdir}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(
                    f"{name} exited with code {proc.returncode}; log: {self.log_path(name)}\n{self.log_tail(name)}"
                )

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name.replace('/', '_')}.log"

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop_processes(self, names: list[str], timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM them all at once, then wait; kill whatever outlives `timeout`."""
        procs = {name: self.procs.pop(name) for name in names}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {name: proc.returncode for name, proc in procs.items()}

    def stop(self) -> dict[str, int]:
        """Stop workers first (they drain), then dispatchers (they finish collecting), then ingest."""
        codes: dict[str, int] = {}
        for role in ("worker", "dispatcher", "ingest"):
            codes.update(self.stop_processes([n for n in self.procs if n.startswith(role)]))
        if self.redis:
            self.redis.stop()
        return codes

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
