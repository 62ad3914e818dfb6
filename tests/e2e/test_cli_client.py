"""The `inferq` CLI (as a subprocess) and the Python clients against a running stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from inferq.client import AsyncClient, Client, InferqError
from inferq.localstack import LocalStack
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
# examples/prompts.json names these models; here they all run the dummy engine
MODELS = "".join(
    f'[models.{m}]\nengine = "dummy"\nmax_inflight = 32\n[models.{m}.options]\nlatency_ms = 2\n\n'
    for m in ("smol", "echo-small", "echo-medium", "echo-large")
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli")
    models = workdir / "models.toml"
    models.write_text(MODELS)
    with LocalStack(models, workdir=workdir / "stack") as running:
        yield running


def _cli(stack, *args: str, columns: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "INFERQ_URL": stack.base_url, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "inferq.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_submit_wait_out_writes_one_line_per_prompt(stack, tmp_path):
    out = tmp_path / "results.jsonl"
    proc = _cli(stack, "submit", "examples/prompts.json", "--wait", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    expected = sorted(r["custom_id"] for r in json.loads((ROOT / "examples/prompts.json").read_text())["requests"])
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(l["custom_id"] for l in lines) == expected
    assert all(l["status"] == "succeeded" for l in lines)
    assert "completed: 24 succeeded" in proc.stdout
    assert "smol" in proc.stderr and "6/6" in proc.stderr  # a progress bar per model, each ending at 6/6


def test_submit_an_openai_batch_file_and_refuse_an_invalid_one(stack, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"b{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "echo-small", "messages": [{"role": "user", "content": f"hi {i}"}]},
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    out = tmp_path / "out.jsonl"
    proc = _cli(stack, "submit", str(good), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "accepted as job" in proc.stdout and len(out.read_text().splitlines()) == 5

    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().replace('"model": "echo-small"', '"model": "nope"', 1))
    proc = _cli(stack, "submit", str(bad))
    assert proc.returncode == 2 and "line 1: unknown model 'nope'" in proc.stderr


def test_status_models_cancel_and_exit_codes(stack, tmp_path):
    with Client(stack.base_url) as client:
        job = client.submit([{"model": "echo-small", "prompt": "a b"}])
        client.wait(job.id, poll_s=0.05)
    status = _cli(stack, "status", job.id)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed"
    models = _cli(stack, "models")
    assert models.returncode == 0 and "echo-medium" in models.stdout
    finished = _cli(stack, "cancel", job.id)
    assert finished.returncode == 2 and "already completed" in finished.stderr
    missing = _cli(stack, "status", "job_0000000000000000000000000a")
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    assert _cli(stack, "submit", str(bad_json)).returncode == 2
    unreachable = subprocess.run(
        [sys.executable, "-m", "inferq.cli", "models", "--url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1 and "cannot reach inferq" in unreachable.stderr
    for command in ("submit", "status", "results", "jobs", "cancel", "models", "up"):
        assert _cli(stack, command, "--help").returncode == 0


def test_python_clients_submit_wait_iterate_and_cancel(stack):
    seen = []
    with Client(stack.base_url) as client:
        job = client.submit(
            [{"custom_id": f"c{i}", "model": "echo-large", "prompt": f"w{i} x"} for i in range(50)],
            metadata={"via": "client"},
            idempotency_key="client-test",
        )
        again = client.submit(
            [{"custom_id": f"c{i}", "model": "echo-large", "prompt": f"w{i} x"} for i in range(50)],
            metadata={"via": "client"},
            idempotency_key="client-test",
        )
        assert again.id == job.id
        done = client.wait(job.id, poll_s=0.05, on_progress=lambda j: seen.append(j.request_counts.succeeded))
        assert done.status == "completed" and seen[-1] == 50 and seen == sorted(seen)
        lines = list(client.results(job.id))
        assert sorted(l.custom_id for l in lines) == sorted(f"c{i}" for i in range(50))
        assert list(client.results(job.id, wait=True)) == lines  # an ended job: every line, then the end
        page = client.jobs(metadata=("via", "client"), limit=5)
        assert [j.id for j in page.data] == [job.id] and not page.has_more
        with pytest.raises(InferqError) as err:
            client.submit([{"model": "nope", "prompt": "x"}])
        assert err.value.status == 422 and err.value.error.field == "requests[0].model"
        assert {m.id for m in client.models()} == {"smol", "echo-small", "echo-medium", "echo-large"}

    async def run_async():
        async with AsyncClient(stack.base_url) as client:
            job = await client.submit(body={"prompts": [{"id": "p1", "model": "smol", "prompt": "x y"}]})
            done = await client.wait(job.id, poll_s=0.05)
            lines = [l async for l in client.results(job.id)]
            with pytest.raises(InferqError):
                await client.cancel(job.id)
            return done, lines

    done, lines = asyncio.run(run_async())
    assert done.status == "completed" and [l.custom_id for l in lines] == ["p1"]


def test_results_wait_follows_a_running_job_to_its_end(stack, tmp_path):
    with Client(stack.base_url) as client:
        body = [{"custom_id": f"w{i}", "model": "echo-medium", "prompt": f"w{i} x"} for i in range(300)]
        job = client.submit(body)
    out = tmp_path / "followed.jsonl"
    proc = _cli(stack, "results", job.id, "--wait", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(l["custom_id"] for l in lines) == sorted(f"w{i}" for i in range(300))
    assert "wrote 300 results" in proc.stdout


def test_jobs_prints_a_table_of_the_newest_jobs(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    # no workers: a job stays queued until it is cancelled
    with LocalStack(models, workdir=tmp_path / "stack", models=[]) as stack, Client(stack.base_url) as client:
        older = client.submit([{"model": "echo-small", "prompt": "a b"}] * 4)
        newer = client.submit([{"model": "echo-large", "prompt": "c"}] * 2)
        client.cancel(newer.id)
        client.wait(newer.id, poll_s=0.05)
        proc = _cli(stack, "jobs", "--limit", "2")
        assert proc.returncode == 0, proc.stderr
        rows = [row for row in proc.stdout.splitlines() if "job_" in row]
        assert [row.split()[1] for row in rows] == [newer.id, older.id]
        assert "cancelled" in rows[0] and "2/2 100% ██████████" in rows[0] and "echo-large" in rows[0]
        assert "queued" in rows[1] and "0/4   0% ░░░░░░░░░░" in rows[1] and "echo-small" in rows[1]
        assert all(h in proc.stdout for h in ("id", "status", "created", "progress", "models"))
        narrow = _cli(stack, "jobs", "--limit", "2", columns=80)  # a plain terminal: ids stay whole
        assert newer.id in narrow.stdout and older.id in narrow.stdout, narrow.stdout
        only = _cli(stack, "jobs", "--status", "queued")
        assert [row.split()[1] for row in only.stdout.splitlines() if "job_" in row] == [older.id]
        bad = _cli(stack, "jobs", "--status", "finished")
        assert bad.returncode == 2 and "status" in bad.stderr


BROKEN = """
[models.broken]
engine = "transformers"
unavailable_after_s = 3
[models.broken.options]
model = "{tmp}/no-such-weights"
local_files_only = true
[models.broken.scaling]
backend = "local"
max_replicas = 1

[models.echo-small]
engine = "dummy"
[models.echo-small.options]
latency_ms = 2
"""


@pytest.fixture(scope="module")
def broken_stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("broken")
    models = workdir / "models.toml"
    models.write_text(BROKEN.format(tmp=workdir))
    with LocalStack(models, workdir=workdir / "stack") as running, Client(running.base_url) as client:
        client.submit([{"model": "broken", "prompt": "starts its first worker"}])
        deadline = time.monotonic() + 120
        while "the worker failed: " not in (health := _health(client, "broken")).reason:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health.state == "unavailable", health  # as the commands below find it
        yield running


def _health(client: Client, model: str):
    return next(m.health for m in client.models() if m.id == model)


def _mixed_job(tmp_path, tag: str):
    path = tmp_path / f"{tag}.json"
    requests = [{"custom_id": f"{tag}-ok-{i}", "model": "echo-small", "prompt": "fine"} for i in range(3)]
    requests += [{"custom_id": f"{tag}-stuck", "model": "broken", "prompt": "never runs"}]
    path.write_text(json.dumps({"requests": requests}))
    return path


def test_submit_wait_gives_up_on_a_model_that_cannot_load_and_says_why(broken_stack, tmp_path):
    out = tmp_path / "results.jsonl"
    proc = _cli(broken_stack, "submit", str(_mixed_job(tmp_path, "s")), "--wait", "--grace", "2", "--out", str(out))
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "broken unavailable since" in proc.stderr and "the worker failed: " in proc.stderr, proc.stderr
    assert "no-such-weights" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(json.loads(l)["custom_id"] for l in out.read_text().splitlines()) == [f"s-ok-{i}" for i in range(3)]


def test_results_wait_gives_up_on_a_model_that_cannot_load(broken_stack, tmp_path):
    submitted = _cli(broken_stack, "submit", str(_mixed_job(tmp_path, "r")))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1].rstrip(":")
    out = tmp_path / "results.jsonl"
    proc = _cli(broken_stack, "results", job_id, "--wait", "--grace", "2", "--out", str(out))
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "broken unavailable since" in proc.stderr and "the worker failed: " in proc.stderr, proc.stderr
    assert sorted(json.loads(l)["custom_id"] for l in out.read_text().splitlines()) == [f"r-ok-{i}" for i in range(3)]


def test_ctrl_c_during_submit_wait_keeps_what_finished(broken_stack, tmp_path):
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "INFERQ_URL": broken_stack.base_url, "COLUMNS": "120"}
    job_file = _mixed_job(tmp_path, "c")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferq.cli", "submit", str(job_file), "--wait", "--grace", "600", "--out", str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:  # it names the model it waits for: the rest has finished or will
            if "waiting: broken unavailable since" in line:
                break
        with Client(broken_stack.base_url) as client:
            job_id = proc.stdout.readline().split()[1].rstrip(":")
            deadline = time.monotonic() + 60
            while client.get(job_id).models["echo-small"].succeeded < 3:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        printed, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, printed
    assert f"inferq results {job_id}" in printed
    assert sorted(json.loads(l)["custom_id"] for l in out.read_text().splitlines()) == [f"c-ok-{i}" for i in range(3)]
