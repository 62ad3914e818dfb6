"""End-to-end throughput of one job: first byte of the POST to the moment GET /v1/jobs/{id} reports
`completed`, on the dummy engine at zero latency, with real processes and a private redis-server.

    .venv/bin/python bench/e2e_job.py --requests 10000 [--dispatchers 1] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.localstack import LocalStack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--dispatchers", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="workers per model")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    models = ["bench-a", "bench-b", "bench-c"]
    body = {"requests": [{"custom_id": str(i), "model": models[i % 3], "prompt": f"benchmark prompt number {i}", "max_tokens": 8}
                         for i in range(args.requests)]}
    with LocalStack(ROOT / "bench/models.bench.toml", workdir=tempfile.mkdtemp(prefix="inferq-bench-"),
                    dispatchers=args.dispatchers, workers_per_model=args.workers) as stack:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            for run in range(args.runs):
                t0 = time.perf_counter()
                resp = client.post("/v1/jobs", json=body)
                accepted = time.perf_counter() - t0
                job_id = resp.json()["id"]
                while client.get(f"/v1/jobs/{job_id}").json()["status"] != "completed":
                    time.sleep(0.01)
                total = time.perf_counter() - t0
                print(f"run {run + 1}: {args.requests} requests accepted in {accepted * 1000:.0f} ms "
                      f"({args.requests / accepted:,.0f} req/s); completed in {total:.2f} s = {args.requests / total:,.0f} req/s end to end")
        stack.stop()


if __name__ == "__main__":
    main()
