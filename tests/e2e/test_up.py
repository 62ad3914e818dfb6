"""`inferq up` as a user runs it in a terminal: it starts the stack, serves a job, and a Ctrl-C
(SIGINT to the terminal's whole foreground process group) stops every service in order, Redis
last, each exiting 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from inferq.client import Client
from inferq.localstack import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

MODELS = """
[models.echo]
engine = "dummy"
[models.echo.options]
latency_ms = 5
[models.echo.scaling]
backend = "local"
max_replicas = 1
"""


def test_ctrl_c_stops_every_service_in_order_with_exit_0(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    port = free_port()
    env = {**os.environ, "INFERQ_WORKDIR": str(tmp_path / "up"), "COLUMNS": "200"}
    env.pop("INFERQ_REDIS_URL", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "inferq.cli", "up", "--models", str(models), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job is
    )
    try:
        first = up.stdout.readline()
        assert "inferq is up at" in first, first + up.stdout.read()
        with Client(f"http://127.0.0.1:{port}") as client:
            job = client.submit([{"model": "echo", "prompt": "one two"}] * 3)
            assert client.wait(job.id, poll_s=0.1, timeout=60).request_counts.succeeded == 3
        assert up.poll() is None
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group gets it
        printed, _ = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    assert up.returncode == 0, printed
    stopped = next(line for line in printed.splitlines() if line.startswith("stopped: "))
    codes = dict(part.rsplit(" exit ", 1) for part in stopped.removeprefix("stopped: ").split(", "))
    assert set(codes) == {"ingest", "dispatcher-0"} and set(codes.values()) == {"0"}, stopped
    logs = tmp_path / "up"
    dispatcher = (logs / "dispatcher-0.log").read_text()
    assert "Redis unavailable" not in dispatcher, dispatcher[-2000:]  # Redis outlived it
    assert any('"worker stopped"' in p.read_text() for p in logs.glob("worker-echo-*.log"))  # it drained
