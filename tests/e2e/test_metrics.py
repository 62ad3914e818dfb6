"""/metrics on every service, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inferq.localstack import LocalStack, free_port

MODELS = """
[models.fast]
engine = "dummy"
max_inflight = 8
[models.fast.options]
latency_ms = 1

[models.idle]
engine = "dummy"
"""


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, **labels) -> list:
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_every_service_serves_prometheus_metrics(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    dispatcher_port, worker_port = free_port(), free_port()
    stack = LocalStack(
        path,
        workdir=tmp_path / "stack",
        models=["fast"],
        workers_per_model=0,
        env={"INFERQ_METRICS_PORT": str(dispatcher_port)},
    )
    with stack:
        # the worker is started by hand to give it its own metrics port
        stack.extra_env["INFERQ_METRICS_PORT"] = str(worker_port)
        stack.spawn("worker-fast-0", "services.inference", "--model", "fast")
        with httpx.Client(base_url=stack.base_url, timeout=10) as api:
            api.post("/v1/jobs", json={"requests": [{"model": "idle", "prompt": "wait"} for _ in range(7)]})
            job = api.post(
                "/v1/jobs",
                json={"requests": [{"model": "fast", "prompt": "one two SECRET-PROMPT-7431"} for _ in range(20)]},
            ).json()
            deadline = time.monotonic() + 20
            while api.get(f"/v1/jobs/{job['id']}").json()["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            ingest = families(api.get("/metrics").text)
            models = {m["id"]: m for m in api.get("/v1/models").json()["data"]}

        # the worker's start, phase by phase, once it has served a request; none for the idle model
        started = models["fast"]["start_phases"]
        assert 0 < started["imports_s"] <= started["engine_ready_s"] <= started["first_result_s"] < 30, started
        assert started["snapshot"] == "none" and started["weights_loaded_s"] is None  # the dummy loads nothing
        assert abs(started["at_ms"] / 1000 - time.time()) < 120
        assert models["idle"]["start_phases"] is None

        # backlog per model and lane: the 7 requests of the model without workers wait, staged or routed
        backlog = ingest["inferq_backlog"]
        idle = sum(s.value for s in samples(backlog, model="idle"))
        assert idle == 7
        assert {s.labels["lane"] for s in samples(backlog, model="fast")} == {"interactive", "batch"}
        assert sum(s.value for s in samples(backlog, model="fast")) == 0
        assert samples(ingest["inferq_unfinished"], model="idle")[0].value == 7
        assert samples(ingest["inferq_replicas"], model="fast")[0].value == 1
        posted = samples(ingest["inferq_http_requests"], method="POST", route="/v1/jobs", status="202")
        assert posted and posted[0].value == 2
        assert ingest["inferq_requests_accepted"].samples[0].value == 27

        deadline = time.monotonic() + 10
        while True:  # the dispatcher refreshes its gauges every few seconds
            dispatcher = families(httpx.get(f"http://127.0.0.1:{dispatcher_port}/metrics").text)
            idle_gauge = samples(dispatcher["inferq_unfinished"], model="idle")
            if (idle_gauge and idle_gauge[0].value == 7) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert dispatcher["inferq_results_applied"].samples[0].value == 20
        # the 20 that ran reached their lane streams straight from the job's creation or via the router
        routed = dispatcher["inferq_routed"].samples[0].value + ingest["inferq_routed_at_creation"].samples[0].value
        assert routed >= 20
        assert samples(dispatcher["inferq_unfinished"], model="idle")[0].value == 7

        worker = families(httpx.get(f"http://127.0.0.1:{worker_port}/metrics").text)
        assert samples(worker["inferq_results"], model="fast", status="succeeded")[0].value == 20
        assert samples(worker["inferq_tokens"], model="fast", kind="completion")[0].value == 60
        count = [s for s in worker["inferq_request_inference_seconds"].samples if s.name.endswith("_count")]
        assert count[0].value == 20
        wait = [s for s in worker["inferq_request_queue_wait_seconds"].samples if s.name.endswith("_count")]
        assert wait[0].value == 20
        phases = {s.labels["phase"]: s.value for s in samples(worker["inferq_worker_start_seconds"], model="fast")}
        assert phases == {p: started[f"{p}_s"] for p in ("imports", "engine_ready", "first_result")}

    # logs: one JSON object per line, never the prompt text at info level
    for log in (tmp_path / "stack").glob("*.log"):
        text = log.read_text()
        assert "SECRET-PROMPT-7431" not in text, log.name
        if log.name.startswith(("ingest", "dispatcher", "worker")):
            lines = [line for line in text.splitlines() if line.startswith("{")]
            assert lines and all(json.loads(line)["service"] for line in lines), log.name
