"""docs/modal.md, "Run on Modal GPUs", followed as written: its models table, unchanged, deploys a Modal
class and makes a real dispatcher spawn runs of it by queue depth. Real ingest, dispatcher and
redis-server processes; the dispatcher's Modal client is the fake in tests/support/fakes (the only part
that would need a Modal account). The deploy check uses the real `modal` package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from inferq.localstack import LocalStack
from shared.catalog.models import modal_class_name
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
FAKES = ROOT / "tests" / "support" / "fakes"
PAGE = ROOT / "docs" / "modal.md"


def page_models_table() -> str:
    """The ```toml block of docs/modal.md's "Run on Modal GPUs", as a user would copy it."""
    page = PAGE.read_text(encoding="utf-8")
    assert page.startswith("# Run on Modal GPUs\n"), f"{PAGE} no longer starts with '# Run on Modal GPUs'"
    section = page.split("\n## ", 1)[0]  # up to the page's first section, if it has one
    [block] = re.findall(r"```toml\n(.*?)\n\s*```", section, flags=re.S)
    return block + "\n"


def _spawns(log) -> list[dict]:
    if not log.exists():
        return []
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["op"] == "spawn"]


def test_the_pages_table_is_driven_by_modal_as_is(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(page_models_table())
    [name] = re.findall(r"^\s*\[models\.([\w-]+)\]$", models.read_text(), flags=re.M)
    log = tmp_path / "modal-calls.jsonl"
    env = {"PYTHONPATH": str(FAKES), "INFERQ_FAKE_MODAL_LOG": str(log)}
    with (
        LocalStack(models, workdir=tmp_path / "stack", models=[], env=env) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        assert stack.procs.keys() == {"ingest", "dispatcher-0"}  # no worker here: they run on Modal
        info = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == name)
        assert info["scaling"]["backend"] == "modal" and info["scaling"]["max_replicas"] == 4
        assert _spawns(log) == []  # nothing runs until there is work

        # 600 waiting requests at 256 per run (the default target): 3 runs
        reqs = [{"custom_id": f"r{i}", "model": name, "prompt": f"hello {i}"} for i in range(600)]
        resp = client.post("/v1/jobs", json={"requests": reqs})
        assert resp.status_code == 202, resp.text
        deadline = time.monotonic() + 20
        while len(_spawns(log)) < 3:
            stack.check_alive()
            assert time.monotonic() < deadline, f"no Modal runs spawned: {stack.log_tail('dispatcher-0')}"
            time.sleep(0.1)
        time.sleep(2.0)  # the fake's runs keep running: the dispatcher must not spawn more
        spawns = _spawns(log)
        assert [(s["app"], s["cls"], s["kwargs"], s["error"]) for s in spawns] == [
            ("inferq", modal_class_name(name), {"idle_exit_s": 60.0}, None)
        ] * 3
        assert modal_class_name(name) == "Worker_llama_8b"
        scaling = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == name)["scaling"]
        assert (scaling["current"], scaling["desired"]) == (3, 3), scaling
        assert set(stack.stop().values()) == {0}


def test_the_deploy_check_of_the_pages_table_prints_that_plan(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(page_models_table())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "INFERQ_MODAL_"))}
    env.pop("PYTHONPATH", None)  # the real modal package, not the fake
    check = subprocess.run(
        [sys.executable, "-m", "inferq.cli", "deploy", "--check", "--models", str(models)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0] == f'Modal app "inferq" from {models}'
    at = lines.index("llama-8b -> class Worker_llama_8b")
    assert lines[at + 1 : at + 10] == [
        "  gpu               L40S",
        "  containers        min 0, max 4",
        "  scaledown window  300 s",
        "  timeout           86400 s per container, 1200 s to load the model",
        "  secrets           inferq-redis (holds INFERQ_REDIS_URL)",
        "  volumes           /root/.cache/huggingface <- inferq-hf-cache, /root/.cache/vllm <- inferq-vllm-cache",
        "  driven by         modal: the dispatcher spawns runs by queue depth (one per 256 waiting requests), "
        "up to 4 at a time; none after 60 s without work",
        "  snapshots         memory: new containers restore the engine's imports, then load the weights",
        "  idle billing      up to 360 s after its last work (scaling.idle_cooldown_s, then "
        "modal.scaledown_window_s), ~$0.195 at list price per scale-down",
    ]
    assert lines[at + 10].startswith("  container files   ") and lines[at + 10].endswith("of them Lua scripts")
    assert " 0 of them" not in lines[at + 10]
    # the page's model is gated and the shell names no HF secret: the check says so before a deploy
    assert lines[at + 11].startswith("  warning           meta-llama/Llama-3.1-8B-Instruct is gated")
