"""The Modal path, rehearsed: what Modal would run, run here from the deployed file sets alone.

Ingest and the dispatcher run from the Dockerfile's file set (the image docker-compose.modal.yml
builds), the dispatcher's Modal client being the fake in tests/support/fakes (the cloud boundary). The GPU
container runs from exactly the files `modal deploy` would give it (listed with the modal client's
own image and mount definitions), through the modal client's own container lifecycle code
(tests/support/modal_container.py), with the real vLLM CPU engine and a tiny local model, on a real
redis-server. A run is cancelled mid-work as Modal delivers `FunctionCall.cancel()` (SIGUSR1 in
a `max_inputs=1` container): every request it held is finished or handed back, and the job ends
with exactly one result per request.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from inferq.localstack import LocalStack
from tests.conftest import ROOT
from tests.support.deployed_files import dockerfile_files, materialise, modal_container_files
from tests.vllm_cpu.conftest import vllm_models_file

pytestmark = pytest.mark.e2e
LOAD_S = 240  # vLLM's boot and the tiny model's load on 2 cores
N = 48


class Container:
    """One rehearsed Modal container: inputs in, events out (JSON lines)."""

    def __init__(self, root: Path, cls: str, env: dict[str, str], log: Path, snapshot: bool) -> None:
        args = [sys.executable, str(ROOT / "tests" / "support" / "modal_container.py"), str(root), "modal_app", cls]
        self.proc = subprocess.Popen(
            args + (["--snapshot"] if snapshot else []),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab"),
            text=True,
        )
        self.log = log
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def send(self, kwargs: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(kwargs) + "\n")
        self.proc.stdin.flush()

    def next_event(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.events.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    break
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no event from the container (exit {self.proc.poll()}):\n{tail}")


def _spawns(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["op"] == "spawn"]


def _counts(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()["request_counts"]


@pytest.mark.parametrize("snapshot", [False, True], ids=["plain", "memory-snapshot"])
def test_the_deployed_file_sets_serve_and_a_cancel_loses_nothing(tiny_llama, tmp_path, snapshot):
    modal_table = '[models.tiny.modal]\ngpu = "L4"\n' + ("memory_snapshot = true\n" if snapshot else "")
    models = tmp_path / "models.toml"
    models.write_text(vllm_models_file(tiny_llama, max_inflight=8) + modal_table)

    container_root = modal_container_files(models, tmp_path / "modal")
    assert list((container_root / "root" / "shared").rglob("*.lua")), "the container would carry no Lua script"
    image_root = materialise(dockerfile_files(), tmp_path / "image") / "app"

    fake_modal_log = tmp_path / "modal-calls.jsonl"
    stack_env = {"PYTHONPATH": str(ROOT / "tests" / "support" / "fakes"), "INFERQ_FAKE_MODAL_LOG": str(fake_modal_log)}
    launcher = [sys.executable, str(ROOT / "tests" / "support" / "deployed_python.py"), str(image_root)]
    with (
        LocalStack(
            models,
            workdir=tmp_path / "stack",
            models=[],
            env=stack_env,
            launcher=launcher,
            cwd=image_root,
        ) as stack,
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
    ):
        container_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "INFERQ_")) and k != "PYTHONPATH"
        }
        # the image's environment: the models file baked in at its container path (under root/)
        container_env.update(
            INFERQ_MODELS=str(container_root / "root" / "inferq-models.toml"),
            INFERQ_REDIS_URL=stack.redis_url or "",  # what the inferq-redis secret holds
            INFERQ_SHUTDOWN_GRACE_S="2",
        )
        container = Container(container_root, "Worker_tiny", container_env, tmp_path / "container.log", snapshot)
        imported = container.next_event(LOAD_S)
        assert imported["event"] == "imported" and imported["outside"] == [], imported  # nothing from the checkout
        if snapshot:  # the model's imports before the point Modal snapshots, its load after
            assert container.next_event(LOAD_S)["event"] == "snapshot"
        assert container.next_event(LOAD_S)["event"] == "entered"

        long = {"model": "tiny", "temperature": 0, "max_tokens": 192}
        reqs = [{"custom_id": f"r{i}", "prompt": f"desert stars {i}", **long} for i in range(N)]
        job = client.post("/v1/jobs", json={"requests": reqs})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        deadline = time.monotonic() + 30
        while not _spawns(fake_modal_log):  # the dispatcher asks Modal for a run
            stack.check_alive()
            assert time.monotonic() < deadline, stack.log_tail("dispatcher-0")
            time.sleep(0.1)
        [spawn] = _spawns(fake_modal_log)[:1]
        assert spawn["cls"] == "Worker_tiny"
        container.send(spawn["kwargs"])  # Modal runs that input in the container

        deadline = time.monotonic() + LOAD_S
        while (c := _counts(client, job_id))["succeeded"] < 4 or c["running"] < 4:
            assert container.proc.poll() is None, container.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the run never got going: {c}"
            time.sleep(0.05)
        container.proc.send_signal(signal.SIGUSR1)  # FunctionCall.cancel(), as it reaches the container
        assert container.next_event(60) == {"event": "cancelled"}
        after_cancel = _counts(client, job_id)
        assert after_cancel["running"] == 0, after_cancel  # none left held by the cancelled run
        assert 0 < after_cancel["succeeded"] < N, after_cancel

        container.send({"idle_exit_s": 3.0})  # the same container takes the next input
        output = container.next_event(LOAD_S)
        assert output["event"] == "output", output
        assert output["value"]["served"] == N - after_cancel["succeeded"], (output, after_cancel)
        container.proc.stdin.close()  # the container shuts down: @exit runs
        assert container.next_event(60) == {"event": "exited"}
        assert container.proc.wait(60) == 0

        done = client.get(f"/v1/jobs/{job_id}").json()
        assert done["status"] == "completed" and done["request_counts"]["succeeded"] == N, done
        lines = [
            json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000}).text.splitlines()
        ]
        assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(N))  # once each
        assert all(line["status"] == "succeeded" and line["output"]["text"] for line in lines)
        [tiny] = [m for m in client.get("/v1/models").json()["data"] if m["id"] == "tiny"]
        phases = tiny["start_phases"]  # what the container recorded of its start
        assert phases["snapshot"] == ("memory" if snapshot else "none"), phases
        assert 0 < phases["imports_s"] < phases["engine_ready_s"] < phases["first_token_s"], phases
        assert phases["first_token_s"] < phases["first_result_s"], phases  # 192 tokens after the first
        assert set(stack.stop().values()) == {0}
