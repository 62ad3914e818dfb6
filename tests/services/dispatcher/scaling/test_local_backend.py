"""The `local` scaling backend with real worker processes and the real Redis: a worker that cannot
start is restarted after growing delays and its failures show in the models API; a new backend on
the same host adopts the workers an earlier one started, and stops them. The backoff runs on a fake
clock; the processes are real."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from services.dispatcher.scaling.local_backend import LocalBackend
from services.dispatcher.scaling.procs import start_ticks
from shared.catalog.models import parse_models
from shared.models.flow import model_scaling
from tests.support.fakes.clock import Clock

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="adoption reads /proc")

MODELS = """
[models.m]
engine = "dummy"
scaling = {backend = "local", max_replicas = 4}
"""


@pytest.fixture
def models_path(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return path


@pytest.fixture
def made():
    """Every backend a test makes; their workers are stopped even when the test fails."""
    backends: list[LocalBackend] = []
    yield backends
    for backend in backends:
        backend.stop_all(timeout=10)


@pytest.fixture
def make(r, keys, redis_server, tmp_path, made):
    def make(models_path, **kw) -> LocalBackend:
        env = {"INFERQ_REDIS_URL": redis_server.url, "INFERQ_MODELS": str(models_path), "INFERQ_SHUTDOWN_GRACE_S": "5"}
        made.append(LocalBackend(r, keys, env=env, log_dir=str(tmp_path / "logs"), **kw))
        return made[-1]

    return make


def _started(tmp_path) -> int:
    return len(list((tmp_path / "logs").glob("worker-m-*.log")))


def _wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _up(tmp_path) -> int:
    """Workers that got as far as serving (their SIGTERM handler is set by then)."""
    return sum('"worker started"' in p.read_text() for p in (tmp_path / "logs").glob("worker-m-*.log"))


async def test_a_worker_that_exits_at_start_is_restarted_after_growing_delays(r, keys, make, tmp_path, models_path):
    clock = Clock()
    backend = make(tmp_path / "missing.toml", clock=clock)
    model = parse_models(MODELS).get("m")
    start = clock.now
    delays = []
    for attempt in range(1, 4):
        assert await backend.scale("m", 1) == 1 and _started(tmp_path) == attempt
        backend.workers["m"][0].popen.wait(20)
        assert await backend.replicas("m") == 0
        failures = (await model_scaling(r, keys, model)).failures
        assert failures.count == attempt and failures.last_exit_status == 2
        assert failures.last_error.startswith("inferq worker:") and "missing.toml" in failures.last_error
        delays.append(failures.next_attempt_at - failures.last_at)
        while clock.now < failures.next_attempt_at:  # the ticks inside the delay start nothing
            assert await backend.scale("m", 1) == 0
            clock.now += 0.5
    assert delays == [1.0, 2.0, 4.0] and _started(tmp_path) == 3 and clock.now - start == 7.0

    backend.env["INFERQ_MODELS"] = str(models_path)  # the models file is fixed
    assert await backend.scale("m", 1) == 1
    _wait_until(lambda: _up(tmp_path) == 1)
    clock.now += 29
    assert await backend.replicas("m") == 1 and (await model_scaling(r, keys, model)).failures.count == 3
    clock.now += 1  # up 30 s: the next failure would wait 1 s again
    assert await backend.replicas("m") == 1 and (await model_scaling(r, keys, model)).failures is None
    backend.stop_all(timeout=20)
    assert backend.workers["m"][0].popen.returncode == 0


async def test_a_new_backend_adopts_running_workers_and_stops_them(r, keys, make, tmp_path, models_path):
    first = make(models_path)
    assert await first.scale("m", 2) == 2
    _wait_until(lambda: _up(tmp_path) == 2)  # SIGTERM before its handler is set would just kill it
    theirs = [w.popen for w in first.workers["m"]]
    key = keys.local_workers("m")
    exited = subprocess.Popen(["true"])
    exited.wait()
    pid = theirs[0].pid
    records = {  # a worker that has exited; an earlier process whose pid a worker now has; another host's worker
        "dead": {"host": first.host, "pid": exited.pid, "ticks": start_ticks(pid), "started": 0.0, "stopping": False},
        "reused": {"host": first.host, "pid": pid, "ticks": start_ticks(pid) - 1, "started": 0.0, "stopping": False},
        "other-host:1": {
            "host": "other-host",
            "pid": pid,
            "ticks": start_ticks(pid),
            "started": 0.0,
            "stopping": False,
        },
    }
    for field, rec in records.items():
        await r.hset(key, field, json.dumps(rec))

    leader = make(models_path)  # another dispatcher on this host leads now
    assert await leader.replicas("m") == 2
    assert sorted(w.pid for w in leader.workers["m"]) == sorted(p.pid for p in theirs)
    assert sorted(k.decode() for k in await r.hkeys(key)) == sorted(
        [f"{first.host}:{p.pid}" for p in theirs] + ["other-host:1"]
    )

    assert await leader.scale("m", 3) == 3 and _started(tmp_path) == 3  # only the difference is started
    _wait_until(lambda: _up(tmp_path) == 3)
    leader.stop_all(timeout=20)
    assert [p.wait(20) for p in theirs] == [0, 0]  # SIGTERM from a backend that did not start them: drained, exit 0
    assert all('"worker stopped"' in p.read_text() for p in (tmp_path / "logs").glob("worker-m-*.log"))

    again = make(models_path)
    assert await again.replicas("m") == 0
    assert [k.decode() for k in await r.hkeys(key)] == ["other-host:1"]


async def test_a_worker_whose_model_cannot_load_says_why_in_one_line(r, keys, make, tmp_path):
    path = tmp_path / "unloadable.toml"
    path.write_text(
        '[models.m]\nengine = "transformers"\nscaling = {backend = "local", max_replicas = 1}\n'
        f'[models.m.options]\nmodel = "{tmp_path / "no-such-model"}"\nlocal_files_only = true\n'
    )
    backend = make(path, clock=Clock())
    assert await backend.scale("m", 1) == 1
    backend.workers["m"][0].popen.wait(120)
    assert await backend.replicas("m") == 0
    failures = (await model_scaling(r, keys, parse_models(path.read_text()).get("m"))).failures
    assert failures.count == 1 and failures.last_exit_status == 3
    error = failures.last_error
    assert error.startswith("the worker failed: ") and str(tmp_path / "no-such-model") in error, error
    assert "\n" not in error and "\\n" not in error and "Traceback" not in error, error
    log = next((tmp_path / "logs").glob("worker-m-*.log")).read_text()
    assert "Traceback" in log  # the detail stays in the worker's own log
