"""`make bench-soak`: does Redis memory come back after a long run? A real stack (ingest, one
dispatcher, one dummy worker per model) takes `--requests` requests in jobs of `--per-job`, with
webhooks to a local receiver (every job's `job.completed`, and one job's every `request.completed`),
dead letters (a share of poison requests that use up their attempts) and uploaded files (every
`--batch-every`-th job runs as an OpenAI batch from an uploaded file). The job, file and dead-letter
TTLs are shortened to `--ttl-s`, the webhook delivery TTL to `--delivery-ttl-s`. Redis `used_memory`
is read at the baseline (after a warm-up whose keys have expired, so bounded structures such as the
capped events stream are already full), at the peak, and after the TTLs have passed and the
dispatcher's upkeep has run; the run fails unless the last is within 10% of the baseline and every
webhook arrived. Figures go to bench/results/soak-<date>.json.

    .venv/bin/python bench/soak.py [--requests 1000000] [--per-job 10000] [--in-flight 4] [--ttl-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.server
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.localstack import LocalStack, free_port  # noqa: E402
from shared.core.states import JobStatus  # noqa: E402
from shared.redis.keys import Keys  # noqa: E402

MODELS = ("soak-a", "soak-b")
TOLERANCE = 0.10
_DONE = {s.value.encode() for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)}
_ID_PART = re.compile(r"^(job|file|batch|wh|whd|msg)[-_]|^[0-9a-f]{16,}$|\d{6,}|^\d+$")


class Receiver:
    """A local webhook receiver on loopback that answers 200 and counts deliveries by event type."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                kind = json.loads(body).get("type", "?")
                with receiver.lock:
                    receiver.counts[kind] = receiver.counts.get(kind, 0) + 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def total(self) -> int:
        with self.lock:
            return sum(self.counts.values())


def _prompt(i: int, poison_every: int) -> str:
    return f"soak prompt {i} POISON" if poison_every and i % poison_every == 0 else f"soak prompt {i}"


def job_body(n: int, offset: int, poison_every: int, webhook: str | None = None) -> bytes:
    body: dict = {
        "requests": [
            {"custom_id": str(offset + i), "model": MODELS[i % 2], "prompt": _prompt(offset + i, poison_every)}
            for i in range(n)
        ]
    }
    if webhook:
        body["webhook"] = {"url": webhook, "events": ["request.completed", "job.completed"]}
    return json.dumps(body).encode()


def batch_file(n: int, offset: int, poison_every: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": str(offset + i),
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": MODELS[i % 2], "prompt": _prompt(offset + i, poison_every), "max_tokens": 8},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


class Soak:
    def __init__(self, stack: LocalStack, receiver: Receiver, args) -> None:
        self.stack, self.receiver, self.args = stack, receiver, args
        self.keys = Keys()
        self.r = aioredis.Redis.from_url(stack.redis_url)
        self.api = httpx.AsyncClient(base_url=stack.base_url, timeout=120)
        self.submitted = 0
        self.jobs_done = 0
        self.expected_hooks = 0
        self.peak = 0
        self.files = 0

    def settle_s(self) -> float:
        """Past every TTL (a delivery list expires two delivery TTLs after its newest entry) and two
        runs of the dispatcher's upkeep (every 10 s)."""
        return max(self.args.ttl_s, 2 * self.args.delivery_ttl_s) + 25

    async def used(self) -> int:
        return int((await self.r.info("memory"))["used_memory"])

    async def sample_peak(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, await self.used())
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass

    async def one_job(self, k: int, n: int) -> None:
        """Submit job `k` of `n` requests (a batch from an uploaded file every `batch_every`-th) and
        wait until it has ended."""
        a = self.args
        offset = self.submitted
        self.submitted += n
        if a.batch_every and k % a.batch_every == a.batch_every - 1:
            upload = await self.api.post(
                "/v1/files",
                files={"file": ("soak.jsonl", batch_file(n, offset, a.poison_every))},
                data={"purpose": "batch"},
            )
            upload.raise_for_status()
            self.files += 1
            batch = await self.api.post(
                "/v1/batches",
                json={"input_file_id": upload.json()["id"], "endpoint": "/v1/completions", "completion_window": "24h"},
            )
            batch.raise_for_status()
            job_id = batch.json()["id"].replace("batch_", "job_", 1)
        else:
            resp = await self.api.post(
                "/v1/jobs", content=job_body(n, offset, a.poison_every), headers={"content-type": "application/json"}
            )
            resp.raise_for_status()
            job_id = resp.json()["id"]
        self.expected_hooks += 1  # the tenant endpoint's job.completed
        while await self.r.hget(self.keys.job(job_id), "status") not in _DONE:
            await asyncio.sleep(0.05)
        self.jobs_done += 1

    async def request_hook_job(self, n: int) -> None:
        """One job whose own webhook wants every request event."""
        offset = self.submitted
        self.submitted += n
        resp = await self.api.post(
            "/v1/jobs",
            content=job_body(n, offset, 0, webhook=self.receiver.url),
            headers={"content-type": "application/json"},
        )
        resp.raise_for_status()
        job_id = resp.json()["id"]
        self.expected_hooks += (
            n + 2
        )  # its requests and job.completed to its own endpoint, job.completed to the tenant's
        while await self.r.hget(self.keys.job(job_id), "status") not in _DONE:
            await asyncio.sleep(0.05)

    async def run_load(self, total: int) -> float:
        """`total` requests, `in_flight` jobs at a time; seconds taken."""
        a = self.args
        sizes = [a.per_job] * (total // a.per_job) + ([total % a.per_job] if total % a.per_job else [])
        queue = list(enumerate(sizes))
        t0 = time.monotonic()

        async def lane() -> None:
            while queue:
                k, n = queue.pop(0)
                await self.one_job(k, n)
                print(f"  {self.jobs_done} jobs, {self.submitted:,} requests submitted", end="\r", flush=True)

        await asyncio.gather(self.request_hook_job(a.request_hook_requests), *(lane() for _ in range(a.in_flight)))
        print()
        return time.monotonic() - t0

    async def wait_hooks(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.receiver.total() < self.expected_hooks and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if self.receiver.total() < self.expected_hooks:
            print(f"  webhooks: {self.receiver.counts} of {self.expected_hooks} expected", flush=True)

    async def settle(self, baseline: int | None, timeout: float) -> int:
        """Wait past every TTL and for the dispatcher's upkeep (every 10 s), then until memory is
        back within the tolerance of `baseline` (or the timeout); the last reading."""
        await asyncio.sleep(self.settle_s())
        deadline = time.monotonic() + timeout
        while True:
            used = await self.used()
            if baseline is None or used <= baseline * (1 + TOLERANCE) or time.monotonic() > deadline:
                return used
            await asyncio.sleep(2)

    async def census(self) -> dict:
        """What Redis holds: keys and their bytes by family (ids replaced by <id>), and the parts of
        used_memory that are not keys (connections, scripts, AOF buffers)."""
        families: dict[str, list[int]] = {}
        async for key in self.r.scan_iter(count=1000):
            parts = ["<id>" if _ID_PART.search(p) else p for p in key.decode().split(":")]
            family = families.setdefault(":".join(parts), [0, 0])
            family[0] += 1
            family[1] += int(await self.r.memory_usage(key, samples=0) or 0)
        info = await self.r.info("memory")
        clients = await self.r.info("clients")
        return {
            "keys": {k: {"count": n, "bytes": b} for k, (n, b) in sorted(families.items())},
            "used_memory_dataset": info["used_memory_dataset"],
            "used_memory_overhead": info["used_memory_overhead"],
            "mem_clients_normal": info["mem_clients_normal"],
            "connected_clients": clients["connected_clients"],
            "used_memory_scripts": info["used_memory_scripts"],
            "mem_aof_buffer": info["mem_aof_buffer"],
        }

    async def close(self) -> None:
        await self.api.aclose()
        await self.r.aclose()


async def soak(stack: LocalStack, receiver: Receiver, args) -> dict:
    s = Soak(stack, receiver, args)
    try:
        hook = await s.api.post("/v1/webhooks", json={"url": receiver.url, "events": ["job.completed"]})
        hook.raise_for_status()
        warmup = args.warmup or args.in_flight * args.per_job
        print(f"warm-up: {warmup:,} requests ...", flush=True)
        await s.run_load(warmup)
        await s.wait_hooks(120)
        baseline = await s.settle(None, 0)
        census_before = await s.census()
        print(f"baseline: {baseline / 2**20:.1f} MiB", flush=True)

        s.submitted = s.jobs_done = s.files = 0
        dead_before = int(await s.r.get(s.keys.dead_letters_dropped) or 0) + await s.r.xlen(s.keys.dead_letter_stream)
        s.expected_hooks, receiver.counts = 0, {}
        s.peak = baseline
        stop = asyncio.Event()
        sampler = asyncio.create_task(s.sample_peak(stop))
        print(f"soak: {args.requests:,} requests ...", flush=True)
        seconds = await s.run_load(args.requests)
        await s.wait_hooks(300)
        stop.set()
        await sampler
        dead = (
            int(await s.r.get(s.keys.dead_letters_dropped) or 0)
            + await s.r.xlen(s.keys.dead_letter_stream)
            - dead_before
        )
        print(f"  {seconds:.0f} s ({args.requests / seconds:,.0f} req/s); peak {s.peak / 2**20:.1f} MiB", flush=True)
        print(f"settling ({s.settle_s():.0f} s, past the TTLs) ...", flush=True)
        after = await s.settle(baseline, timeout=180)
        census_after = await s.census()
        return {
            "requests": args.requests,
            "jobs": s.jobs_done + 1,
            "per_job": args.per_job,
            "uploaded_files": s.files,
            "poison_every": args.poison_every,
            "dead_letters_total": dead,
            "webhooks_expected": s.expected_hooks,
            "webhooks_received": dict(receiver.counts),
            "ttl_s": args.ttl_s,
            "delivery_ttl_s": args.delivery_ttl_s,
            "run_s": round(seconds, 1),
            "rps": round(args.requests / seconds),
            "used_memory_baseline_mib": round(baseline / 2**20, 2),
            "used_memory_peak_mib": round(s.peak / 2**20, 2),
            "used_memory_after_mib": round(after / 2**20, 2),
            "after_vs_baseline": round(after / baseline - 1, 4),
            "within_tolerance": after <= baseline * (1 + TOLERANCE),
            "all_webhooks_received": receiver.total() >= s.expected_hooks,
            "redis_before": census_before,
            "redis_after": census_after,
        }
    finally:
        await s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--per-job", type=int, default=10_000)
    ap.add_argument("--in-flight", type=int, default=4, help="jobs submitted and unfinished at a time")
    ap.add_argument("--warmup", type=int, default=0, help="warm-up requests (0: one job per lane)")
    ap.add_argument("--ttl-s", type=int, default=20, help="job, file and dead-letter TTL")
    ap.add_argument(
        "--delivery-ttl-s",
        type=int,
        default=60,
        help="webhook delivery TTL: longer than the webhook backlog, or pending deliveries expire unsent",
    )
    ap.add_argument("--poison-every", type=int, default=200, help="every n-th request is dead-lettered (0: none)")
    ap.add_argument("--batch-every", type=int, default=10, help="every n-th job runs as a batch of an uploaded file")
    ap.add_argument("--request-hook-requests", type=int, default=200, help="requests of the request-events job")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    args = ap.parse_args()
    ttl = str(args.ttl_s)
    env = {
        "INFERQ_LOG_LEVEL": "WARNING",
        "INFERQ_JOB_TTL_S": ttl,
        "INFERQ_DEAD_LETTER_MAX_AGE_S": ttl,
        "INFERQ_WEBHOOK_DELIVERY_TTL_S": str(args.delivery_ttl_s),
        "INFERQ_EVENTS_MAXLEN": "1000",
        "INFERQ_WEBHOOK_ALLOW_PRIVATE": "1",
        "INFERQ_WEBHOOK_ALLOW_HTTP": "1",
    }
    receiver = Receiver()
    work = Path(tempfile.mkdtemp(prefix="inferq-soak-"))
    started = time.monotonic()
    with LocalStack(ROOT / "bench/models.soak.toml", workdir=work, models=list(MODELS), env=env) as stack:
        res = asyncio.run(soak(stack, receiver, args))
    res["total_s"] = round(time.monotonic() - started, 1)
    res["date"] = datetime.datetime.now().isoformat(timespec="seconds")
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{datetime.date.today().isoformat()}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"Redis used_memory: baseline {res['used_memory_baseline_mib']} MiB, peak {res['used_memory_peak_mib']} MiB, "
        f"after {res['used_memory_after_mib']} MiB ({res['after_vs_baseline']:+.1%}); "
        f"{res['requests']:,} requests in {res['run_s']} s, {res['dead_letters_total']:,} dead letters, "
        f"{sum(res['webhooks_received'].values()):,}/{res['webhooks_expected']:,} webhooks, "
        f"{res['uploaded_files']} uploaded files; wrote {path}"
    )
    if not res["within_tolerance"]:
        print(f"FAILED: memory after the run is more than {TOLERANCE:.0%} above the baseline", file=sys.stderr)
    if not res["all_webhooks_received"]:
        print("FAILED: webhooks were lost", file=sys.stderr)
    if not (res["within_tolerance"] and res["all_webhooks_received"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
