"""What the pipeline costs around the real vLLM, on this machine's CPU: the same prompts through
offline vLLM (`LLM.generate` over the whole list: the best batching vLLM can do) and through inferq
(ingest, dispatcher, a `vllm`-engine worker, Redis) as one job, in generated tokens per second.

Runs in the vLLM virtualenv (`make bench-vllm`, or `.venv-vllm/bin/python bench/vllm_cpu.py`), on a
tiny randomly initialised Llama built on the spot (2 layers, head_dim 64), greedy, fixed prompt and
output lengths, each side run three times (the median run is reported). inferq's figure is completion tokens over POST sent → last result recorded, so it
includes ingest, routing, the worker's reads and result collection. The engine loads before the
timed job (a one-request warm-up job), as the offline figure excludes loading too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

RUNS = 3  # each side runs the prompts this many times; the median run is reported
ENGINE = {"max_model_len": 256, "enforce_eager": True, "dtype": "bfloat16"}
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "ocean", "lighthouse", "autumn", "leaves"]


def make_prompts(n: int, words: int) -> list[str]:
    """Distinct prompts of `words` words each (no shared prefixes beyond chance)."""
    return [" ".join(WORDS[(i * 7 + j * 5 + i // len(WORDS)) % len(WORDS)] for j in range(words)) + f" {i}" for i in range(n)]


def offline(model: str, prompts: list[str], max_tokens: int) -> dict:
    """In a child process: vLLM's engine core is a spawned process, and this keeps its memory
    out of the pipeline run that follows."""
    code = f"""
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    prompts = json.load(sys.stdin)
    llm = LLM(model={model!r}, **{ENGINE!r})
    params = SamplingParams(max_tokens={max_tokens}, temperature=0.0)
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up, as the pipeline's
    import psutil
    me = psutil.Process()
    def cpu():
        return (sum(me.cpu_times()[:2]), sum(sum(c.cpu_times()[:2]) for c in me.children(recursive=True)))
    runs = []
    for _ in range({RUNS}):
        c0 = cpu()
        started = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
        c1 = cpu()
        runs.append({{"seconds": seconds, "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                     "frontend_cpu_s": c1[0] - c0[0], "core_cpu_s": c1[1] - c0[1]}})
    print("RESULT " + json.dumps(sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]))
"""
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(prompts), capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"offline vLLM failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def pipeline(model: str, prompts: list[str], max_tokens: int, max_inflight: int | None, workdir: Path) -> dict:
    import httpx
    import redis

    from inferq.localstack import LocalStack
    from shared.keys import Keys

    models = workdir / "models.toml"
    options = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ENGINE.items())
    inflight = f"max_inflight = {max_inflight}\n" if max_inflight else ""
    models.write_text(f'[models.tiny]\nengine = "vllm"\n{inflight}'
                      f'[models.tiny.options]\nmodel = "{model}"\n{options}\n')
    body = json.dumps({"requests": [{"custom_id": str(i), "model": "tiny", "prompt": p, "max_tokens": max_tokens,
                                     "temperature": 0} for i, p in enumerate(prompts)]}).encode()
    keys = Keys("inferq")
    with LocalStack(models, workdir=workdir / "stack") as stack, httpx.Client(base_url=stack.base_url, timeout=300) as client:
        r = redis.Redis.from_url(stack.redis_url)

        def run(content: bytes) -> tuple[str, float]:
            sent_ms = time.time() * 1000
            resp = client.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
            resp.raise_for_status()
            job_id = resp.json()["id"]
            deadline = time.monotonic() + 600
            while r.hget(keys.job(job_id), "status") not in (b"completed", b"failed"):
                stack.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("the job did not finish in 600 s")
                time.sleep(0.01)
            return job_id, (int(r.hget(keys.job(job_id), "ended_ms")) - sent_ms) / 1000

        warm = json.dumps({"requests": [{"custom_id": "w", "model": "tiny", "prompt": prompts[0], "max_tokens": 4}]})
        run(warm.encode())  # the worker has loaded the model
        runs = []
        for _ in range(RUNS):
            before = cpu_seconds(stack)
            job_id, seconds = run(body)
            used = {name: cpu_seconds(stack).get(name, 0.0) - s for name, s in before.items()}
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["request_counts"]["succeeded"] != len(prompts):
                raise RuntimeError(f"not every request succeeded: {job['request_counts']}")
            runs.append({"seconds": seconds, "tokens": job["usage"]["completion_tokens"],
                         "stages": stages(client, r, keys, job_id), "cpu_s": used})
        return sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]


def cpu_seconds(stack) -> dict[str, float]:
    """CPU seconds used so far by each process of the stack (a worker's vLLM engine-core children
    counted apart from the worker's own loop)."""
    import psutil

    out = {}
    procs = {name: p.pid for name, p in stack.procs.items()}
    if stack.redis is not None and stack.redis.proc is not None:
        procs["redis"] = stack.redis.proc.pid
    for name, pid in procs.items():
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        out[name] = t.user + t.system
        if name.startswith("worker"):
            out[f"{name} (vLLM engine core)"] = sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))
    return out


def stages(client, r, keys, job_id: str) -> dict:
    """Where the job's wall time went, from its result lines' timings (ms from acceptance)."""
    lines, after = [], None
    while True:
        resp = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000, **({"after": after} if after else {})})
        resp.raise_for_status()
        page = [json.loads(line) for line in resp.text.splitlines()]
        if not page:
            break
        lines += page
        after = resp.headers["inferq-next-cursor"]
    starts = sorted(line["timings"]["queued_ms"] for line in lines)
    ends = sorted(line["timings"]["queued_ms"] + line["timings"]["inference_ms"] for line in lines)
    created, ended = (int(v) for v in r.hmget(keys.job(job_id), "created_ms", "ended_ms"))
    return {"first_start_ms": starts[0], "last_start_ms": starts[-1], "last_generated_ms": ends[-1],
            "recorded_ms": ended - created}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--prompt-words", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-inflight", type=int, help="the model's max_inflight in the pipeline (default: the engine's)")
    args = parser.parse_args()

    from inferq.tinymodel import build_tiny_llama

    workdir = Path(tempfile.mkdtemp(prefix="inferq-vllm-bench-"))
    model = str(build_tiny_llama(workdir / "model", context=ENGINE["max_model_len"]))
    prompts = make_prompts(args.prompts, args.prompt_words)
    print(f"{len(prompts)} prompts of {args.prompt_words} words, {args.max_tokens} tokens each, greedy; "
          f"tiny random Llama (2 layers, head_dim 64) on vLLM's CPU build, {os.cpu_count()} cores")
    off = offline(model, prompts, args.max_tokens)
    piped = pipeline(model, prompts, args.max_tokens, args.max_inflight, workdir)
    off_tps, pipe_tps = off["tokens"] / off["seconds"], piped["tokens"] / piped["seconds"]
    print(f"\n{'':<16}{'tokens':>10}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'offline vLLM':<16}{off['tokens']:>10}{off['seconds']:>10.2f}{off_tps:>12.0f}")
    print(f"{'inferq':<16}{piped['tokens']:>10}{piped['seconds']:>10.2f}{pipe_tps:>12.0f}")
    print(f"ratio inferq / offline: {pipe_tps / off_tps:.2f}")
    st = piped["stages"]
    print(f"inferq, ms after acceptance: first request inside vLLM {st['first_start_ms']:.0f}, last {st['last_start_ms']:.0f}; "
          f"last generation done {st['last_generated_ms']:.0f}; last result recorded {st['recorded_ms']:.0f}")
    print(f"offline vLLM, CPU seconds during the run: its own process {off['frontend_cpu_s']:.2f}, "
          f"engine core {off['core_cpu_s']:.2f}")
    print("inferq, CPU seconds during the job: " + ", ".join(f"{k} {v:.2f}" for k, v in piped["cpu_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
