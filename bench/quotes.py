"""`make bench-quotes`: how right the quotes are, on real processes.

For each engine (the dummy engine with a fixed 50 ms latency on two workers, and the transformers
engine on a tiny random model built here, one worker), a stack of its own: after a calibration
job of the same shape (a model's speed is learned from its results), every round quotes a job of
`--requests` requests (POST /v1/jobs/quote), submits the same body and waits for it. Recorded per
round: the quoted p50 and p90 finish against the actual one (the job's `ended_ms`), the quoted
cost against the job's `usage.cost`, the quoted prompt tokens against the counted ones, and the
live ETA (`estimated_completion_at`) read when half the job was done against the actual end.
Rounds go to bench/results/<UTC date>-quotes.json; the table prints the medians.

    .venv/bin/python bench/quotes.py [--requests 20000] [--rounds 3] [--engines dummy,transformers]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.localstack import LocalStack  # noqa: E402
from inferq.tinymodel import build_tiny_model  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402

KEYS = Keys("inferq")
MODELS = {
    "dummy": """
[models.m]
engine = "dummy"
max_inflight = 32
price_per_hour = 3.6
[models.m.options]
latency_ms = 50
[models.m.scaling]
max_replicas = 2
""",
    "transformers": """
[models.m]
engine = "transformers"
max_inflight = 64
price_per_hour = 3.6
[models.m.options]
model = "{model}"
device = "cpu"
max_batch_size = 32
local_files_only = true
""",
}
WORKERS = {"dummy": 2, "transformers": 1}


def _body(n: int, tag: str) -> dict:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    reqs = [
        {"custom_id": f"{tag}-{i}", "model": "m", "prompt": " ".join(words[: 1 + i % 6]) + f" {i}", "max_tokens": 8}
        for i in range(n)
    ]
    return {"requests": reqs}


def _wait(client: httpx.Client, job_id: str, half: int | None = None) -> tuple[dict, int | None]:
    eta = None
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if half is not None and eta is None and job["request_counts"]["succeeded"] >= half:
            eta = job["estimated_completion_at"]
        if job["status"] == "completed":
            return job, eta
        time.sleep(0.1)


def _calibrated(client: httpx.Client) -> bool:
    q = client.post("/v1/jobs/quote", json=_body(1, "probe")).json()
    return q["current"] is not None


def run_engine(engine: str, n: int, rounds: int, tmp: Path) -> list[dict]:
    model_path = build_tiny_model(tmp / "model", context=256) if engine == "transformers" else None
    path = tmp / f"{engine}.toml"
    path.write_text(MODELS[engine].format(model=model_path))
    out = []
    with (
        LocalStack(path, workdir=tmp / f"stack-{engine}", workers_per_model=WORKERS[engine]) as stack,
        httpx.Client(base_url=stack.base_url, timeout=120) as client,
    ):
        rdb = redis.Redis.from_url(stack.redis_url)
        first, _ = _wait(client, client.post("/v1/jobs", json=_body(n, "calibrate")).json()["id"])
        deadline = time.monotonic() + 30
        while not _calibrated(client):
            assert time.monotonic() < deadline, "the model's speed was never measured"
            time.sleep(0.5)
        time.sleep(2)  # the last results' figures written and read by the planner
        for k in range(rounds):
            body = _body(n, f"r{k}")
            quote = client.post("/v1/jobs/quote", json=body).json()
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            job, eta = _wait(client, job_id, half=n // 2)
            h = rdb.hgetall(KEYS.job(job_id))
            created, ended = int(h[b"created_ms"]) / 1000, int(h[b"ended_ms"]) / 1000
            actual = ended - created
            part = quote["models"][0]
            row = {
                "engine": engine,
                "round": k,
                "requests": n,
                "quoted_s": round(quote["current"]["finish_at"] - quote["quoted_at"], 3),
                "quoted_p90_s": round(quote["current"]["finish_p90_at"] - quote["quoted_at"], 3),
                "actual_s": round(actual, 3),
                "finish_error": round((quote["current"]["finish_at"] - quote["quoted_at"]) / actual - 1, 4),
                "quoted_cost": quote["cost"],
                "actual_cost": job["usage"]["cost"],
                "cost_error": round(quote["cost"] / job["usage"]["cost"] - 1, 4) if job["usage"]["cost"] else None,
                "prompt_tokens_from": part["prompt_tokens_from"],
                "quoted_prompt_tokens": part["prompt_tokens"],
                "actual_prompt_tokens": job["usage"]["prompt_tokens"],
                "quoted_completion_tokens": part["completion_tokens"],
                "actual_completion_tokens": job["usage"]["completion_tokens"],
                "eta_at_half_error_s": round(eta - ended, 3) if eta is not None else None,
                "replicas": quote["current"]["replicas"],
            }
            print(json.dumps(row), flush=True)
            out.append(row)
        stack.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default="dummy,transformers")
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="inferq-quotes-") as tmp:
        for engine in args.engines.split(","):
            rows += run_engine(engine, args.requests, args.rounds, Path(tmp))
    print(f"\n{'engine':<14}{'quoted s':>10}{'actual s':>10}{'finish err':>12}{'cost err':>10}{'tokens':>10}")
    for engine in args.engines.split(","):
        mine = [r for r in rows if r["engine"] == engine]

        def med(key: str, rows=mine) -> float:
            return statistics.median(r[key] for r in rows)

        print(
            f"{engine:<14}{med('quoted_s'):>10.2f}{med('actual_s'):>10.2f}{med('finish_error'):>+12.1%}"
            f"{med('cost_error'):>+10.1%}{mine[0]['prompt_tokens_from']:>10}"
        )
    out = ROOT / "bench" / "results" / f"{dt.datetime.now(dt.UTC):%Y-%m-%d}-quotes.json"
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    out.write_text(json.dumps({"meta": meta, "args": vars(args), "rounds": rows}, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
