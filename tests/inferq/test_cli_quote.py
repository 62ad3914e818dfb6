"""`inferq quote`, `submit --deadline` and the ETA of `status`, as a user runs them (subprocesses)
against a running stack whose model has measured its speed on a warm-up job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
import typer

from inferq.cli import parse_deadline
from inferq.client import Client
from inferq.localstack import LocalStack
from tests.conftest import ROOT

# ~5 ms of busy time a request: 20,000 take minutes on the one replica, 2,000 about ten seconds
MODELS = '[models.echo-small]\nengine = "dummy"\nmax_inflight = 4\n[models.echo-small.options]\nlatency_ms = 20\n'
CLOCK = re.compile(r"\d\d:\d\d:\d\d")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quote")
    models = workdir / "models.toml"
    models.write_text(MODELS)
    with LocalStack(models, workdir=workdir / "stack") as running, Client(running.base_url) as client:
        warm_up = client.submit([{"model": "echo-small", "prompt": f"warm up {i}"} for i in range(40)])
        client.wait(warm_up.id, poll_s=0.1, timeout=60)
        deadline = time.monotonic() + 30  # a quote has times once the model's plan has measured it
        while client.quote([{"model": "echo-small", "prompt": "x"}]).current is None:
            assert time.monotonic() < deadline, "the model's speed was never measured"
            time.sleep(0.2)
        yield running


def _cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INFERQ_URL": stack.base_url, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "inferq.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def _job_file(tmp_path, n: int):
    path = tmp_path / f"job-{n}.json"
    path.write_text(json.dumps({"requests": [{"model": "echo-small", "prompt": f"hello {i}"} for i in range(n)]}))
    return path


def test_parse_deadline_takes_unix_seconds_rfc3339_and_times_from_now():
    assert parse_deadline("1796643600") == 1796643600
    assert parse_deadline("2026-12-07T10:00:00Z") == 1796637600
    assert parse_deadline("2026-12-07T11:00:00+01:00") == 1796637600
    assert parse_deadline("+30m", now=1000.0) == 2800
    assert parse_deadline("+1h30m", now=0.0) == 5400 and parse_deadline("+1d", now=0.0) == 86400
    for bad in ("+", "soon", "2026-12-07T10:00:00", "+5w"):
        with pytest.raises(typer.BadParameter):
            parse_deadline(bad)


@pytest.mark.e2e
def test_quote_shows_each_model_its_requests_and_finish(stack, tmp_path):
    job = _job_file(tmp_path, 40)
    proc = _cli(stack, "quote", str(job))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "echo-small" in line)
    assert row.split("│")[2].strip() == "40", proc.stdout  # the model's requests column
    finish = next(line for line in proc.stdout.splitlines() if "finish on the replicas now" in line)
    assert CLOCK.search(finish) and "p90" in finish, proc.stdout
    assert "total: 40 requests" in proc.stdout

    as_json = _cli(stack, "quote", str(job), "--json", "--deadline", "+1h")
    assert as_json.returncode == 0, as_json.stderr
    quote = json.loads(as_json.stdout)
    assert quote["requests"] == 40 and quote["models"][0]["requests"] == 40
    assert quote["current"]["finish_at"] > time.time() - 60 and quote["feasible"] is True
    assert quote["deadline"] == pytest.approx(time.time() + 3600, abs=120)

    batch = tmp_path / "batch.jsonl"  # an OpenAI batch input file: uploaded, quoted, deleted
    line = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": "echo-small", "messages": [{"role": "user", "content": "hi"}]}
    batch.write_text("".join(json.dumps({**line, "custom_id": f"b{i}", "body": body}) + "\n" for i in range(7)))
    from_file = _cli(stack, "quote", str(batch), "--json")
    assert from_file.returncode == 0, from_file.stderr
    assert json.loads(from_file.stdout)["requests"] == 7
    assert httpx.get(f"{stack.base_url}/v1/files").json()["data"] == []

    bad = _cli(stack, "quote", str(job), "--deadline", "tomorrow")
    assert bad.returncode == 2 and "--deadline" in bad.stderr


@pytest.mark.e2e
def test_an_impossible_deadline_is_not_feasible_and_refused(stack, tmp_path):
    job = _job_file(tmp_path, 20_000)
    proc = _cli(stack, "quote", str(job), "--deadline", "+2s")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "feasible: no" in proc.stdout and "suggestions:" in proc.stdout and "replicas" in proc.stdout

    with Client(stack.base_url) as client:
        before = len(client.jobs(limit=100).data)
        refused = _cli(stack, "submit", str(job), "--deadline", "+2s", "--on-deadline-risk", "refuse")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "deadline not feasible, nothing was submitted" in refused.stderr
        assert "p90 on its max replicas" in refused.stderr and "suggestion: " in refused.stderr
        assert CLOCK.search(refused.stderr) and "Traceback" not in refused.stderr
        assert len(client.jobs(limit=100).data) == before


@pytest.mark.e2e
def test_status_of_a_running_job_shows_its_eta_and_deadline_at_risk(stack, tmp_path):
    submitted = _cli(stack, "submit", str(_job_file(tmp_path, 2000)), "--deadline", "+4s")
    assert submitted.returncode == 0, submitted.stderr
    assert "2000 requests queued" in submitted.stdout and "deadline " in submitted.stdout
    job_id = submitted.stdout.split()[1].rstrip(":")
    with Client(stack.base_url) as client:
        try:
            deadline = time.monotonic() + 10
            while client.get(job_id).estimated_completion_at is None:  # the plan's first estimate
                assert time.monotonic() < deadline
                time.sleep(0.1)
            proc = _cli(stack, "status", job_id)
        finally:
            client.cancel(job_id)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deadline"] == pytest.approx(time.time() + 4, abs=30)
    eta = next(line for line in proc.stderr.splitlines() if line.startswith("ETA "))
    assert re.search(r"ETA \d\d:\d\d:\d\d \(", eta) and "deadline " in eta, proc.stderr
    assert "AT RISK" in eta, proc.stderr  # ~10 s of work due in 4
