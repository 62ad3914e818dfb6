"""What the pipeline costs around the real vLLM, on this machine's CPU: the same prompts through
offline vLLM (`LLM.generate` over the whole list: the best batching vLLM can do) and through inferq
(ingest, dispatcher, a `vllm`-engine worker, Redis) as one job, in generated tokens per second.

Runs in the vLLM virtualenv (`make bench-vllm`, or `.venv-vllm/bin/python bench/vllm_cpu.py`), on a
tiny randomly initialised Llama built on the spot (2 layers, head_dim 64), greedy, fixed prompt and
output lengths. inferq's figure is completion tokens over POST sent → last result recorded, so it
includes ingest, routing, the worker's reads and result collection. Both engines are loaded before
anything is timed, then the two run in turn, round after round (this machine's speed drifts by tens
of percent over minutes, so each round's ratio compares runs seconds apart); the median round is
reported, with the CPU each process used in it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.core.states import JobStatus  # noqa: E402
from shared.redis.keys import JobField  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

ENGINE = {"max_model_len": 256, "enforce_eager": True, "dtype": "bfloat16"}
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "ocean", "lighthouse", "autumn", "leaves"]

# The offline side: a child process that loads LLM(...) once, then runs the prompts on each line
# "run" of its stdin and answers one JSON line (vLLM's engine core is a spawned process, so this
# needs a __main__ guard, and a process of its own keeps its memory apart from the pipeline's).
OFFLINE = """
import json, sys, time
import psutil
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    model, engine, prompts, max_tokens = json.loads(sys.stdin.readline())
    llm = LLM(model=model, **engine)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up, as the pipeline's
    me = psutil.Process()
    def cpu():
        return sum(me.cpu_times()[:2]), sum(sum(c.cpu_times()[:2]) for c in me.children(recursive=True))
    print("READY", flush=True)
    for line in sys.stdin:
        c0, started = cpu(), time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds, c1 = time.perf_counter() - started, cpu()
        print("RESULT " + json.dumps({"seconds": seconds, "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                                      "cpu_s": {"frontend": c1[0] - c0[0], "engine core": c1[1] - c0[1]}}), flush=True)
"""


def make_prompts(n: int, words: int) -> list[str]:
    """Distinct prompts of `words` words each (no shared prefixes beyond chance)."""
    return [
        " ".join(WORDS[(i * 7 + j * 5 + i // len(WORDS)) % len(WORDS)] for j in range(words)) + f" {i}"
        for i in range(n)
    ]


class Offline:
    def __init__(self, model: str, prompts: list[str], max_tokens: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OFFLINE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.proc.stdin.write(json.dumps([model, ENGINE, prompts, max_tokens]) + "\n")
        self.proc.stdin.flush()
        self._expect("READY")

    def _expect(self, prefix: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        raise RuntimeError(f"offline vLLM exited with status {self.proc.wait()}")

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return json.loads(self._expect("RESULT "))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


class Pipeline:
    def __init__(
        self, model: str, prompts: list[str], max_tokens: int, max_inflight: int | None, workdir: Path
    ) -> None:
        import httpx
        import redis

        from inferq.localstack import LocalStack
        from shared.redis.keys import Keys

        models = workdir / "models.toml"
        options = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ENGINE.items())
        inflight = f"max_inflight = {max_inflight}\n" if max_inflight else ""
        models.write_text(
            f'[models.tiny]\nengine = "vllm"\n{inflight}[models.tiny.options]\nmodel = "{model}"\n{options}\n'
        )
        self.n = len(prompts)
        self.body = json.dumps(
            {
                "requests": [
                    {"custom_id": str(i), "model": "tiny", "prompt": p, "max_tokens": max_tokens, "temperature": 0}
                    for i, p in enumerate(prompts)
                ]
            }
        ).encode()
        self.keys = Keys("inferq")
        self.stack = LocalStack(models, workdir=workdir / "stack").start()
        self.client = httpx.Client(base_url=self.stack.base_url, timeout=300)
        self.r = redis.Redis.from_url(self.stack.redis_url)
        warm = {"requests": [{"custom_id": "w", "model": "tiny", "prompt": prompts[0], "max_tokens": 4}]}
        self._job(json.dumps(warm).encode())  # returns once the worker has loaded the model

    def _job(self, content: bytes) -> tuple[str, float]:
        sent_ms = time.time() * 1000
        resp = self.client.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
        resp.raise_for_status()
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 600
        while self.r.hget(self.keys.job(job_id), JobField.STATUS) not in (
            JobStatus.COMPLETED.value.encode(),
            JobStatus.FAILED.value.encode(),
        ):
            self.stack.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the job did not finish in 600 s")
            time.sleep(0.01)
        return job_id, (int(self.r.hget(self.keys.job(job_id), "ended_ms")) - sent_ms) / 1000

    def run(self) -> dict:
        before = self._cpu_seconds()
        job_id, seconds = self._job(self.body)
        used = {name: self._cpu_seconds().get(name, 0.0) - s for name, s in before.items()}
        job = self.client.get(f"/v1/jobs/{job_id}").json()
        if job["request_counts"]["succeeded"] != self.n:
            raise RuntimeError(f"not every request succeeded: {job['request_counts']}")
        return {
            "seconds": seconds,
            "tokens": job["usage"]["completion_tokens"],
            "stages": self._stages(job_id),
            "cpu_s": used,
        }

    def _cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the stack (a worker's vLLM engine core,
        its child, counted apart from the worker's own loop)."""
        import psutil

        procs = {name: p.pid for name, p in self.stack.procs.items()}
        if self.stack.redis is not None and self.stack.redis.proc is not None:
            procs["redis"] = self.stack.redis.proc.pid
        out = {}
        for name, pid in procs.items():
            proc = psutil.Process(pid)
            out[name] = sum(proc.cpu_times()[:2])
            if name.startswith("worker"):
                out[f"{name} engine core"] = sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))
        return out

    def _stages(self, job_id: str) -> dict:
        """Where the job's wall time went, from its result lines' timings (ms from acceptance)."""
        lines, after = [], None
        while True:
            resp = self.client.get(
                f"/v1/jobs/{job_id}/results", params={"limit": 1000, **({"after": after} if after else {})}
            )
            resp.raise_for_status()
            page = [json.loads(line) for line in resp.text.splitlines()]
            if not page:
                break
            lines += page
            after = resp.headers["inferq-next-cursor"]
        starts = sorted(line["timings"]["queued_ms"] for line in lines)
        ends = sorted(line["timings"]["queued_ms"] + line["timings"]["inference_ms"] for line in lines)
        created, ended = (int(v) for v in self.r.hmget(self.keys.job(job_id), "created_ms", "ended_ms"))
        return {
            "first_start_ms": starts[0],
            "last_start_ms": starts[-1],
            "last_generated_ms": ends[-1],
            "recorded_ms": ended - created,
        }

    def close(self) -> None:
        self.client.close()
        self.stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--prompt-words", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--max-inflight", type=int, help="the model's max_inflight in the pipeline (default: the engine's)"
    )
    args = parser.parse_args()

    from inferq.tinymodel import build_tiny_llama

    workdir = Path(tempfile.mkdtemp(prefix="inferq-vllm-bench-"))
    try:
        model = str(build_tiny_llama(workdir / "model", context=ENGINE["max_model_len"]))
        prompts = make_prompts(args.prompts, args.prompt_words)
        print(
            f"{len(prompts)} prompts of {args.prompt_words} words, {args.max_tokens} tokens each, greedy; tiny random "
            f"Llama (2 layers, head_dim 64) on vLLM's CPU build, {os.cpu_count()} cores; {args.rounds} rounds"
        )
        offline = Offline(model, prompts, args.max_tokens)
        pipeline = Pipeline(model, prompts, args.max_tokens, args.max_inflight, workdir)
        try:
            rounds = []
            for i in range(args.rounds):
                off, piped = offline.run(), pipeline.run()
                ratio = (piped["tokens"] / piped["seconds"]) / (off["tokens"] / off["seconds"])
                rounds.append((ratio, off, piped))
                print(
                    f"  round {i + 1}: offline {off['seconds']:.2f} s, inferq {piped['seconds']:.2f} s,"
                    f" ratio {ratio:.2f}"
                )
        finally:
            pipeline.close()
            offline.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio, off, piped = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    off_tps, pipe_tps = off["tokens"] / off["seconds"], piped["tokens"] / piped["seconds"]
    print(f"\nmedian round{'':<4}{'tokens':>10}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'offline vLLM':<16}{off['tokens']:>10}{off['seconds']:>10.2f}{off_tps:>12.0f}")
    print(f"{'inferq':<16}{piped['tokens']:>10}{piped['seconds']:>10.2f}{pipe_tps:>12.0f}")
    print(
        f"ratio inferq / offline: {ratio:.2f} (rounds: {', '.join(f'{r[0]:.2f}' for r in rounds)}; "
        f"mean {statistics.mean(r[0] for r in rounds):.2f})"
    )
    st = piped["stages"]
    print(
        f"inferq, ms after acceptance: first request inside vLLM {st['first_start_ms']:.0f},"
        f" last {st['last_start_ms']:.0f}; "
        f"last generation done {st['last_generated_ms']:.0f}; last result recorded {st['recorded_ms']:.0f}"
    )
    print("CPU seconds, offline vLLM: " + ", ".join(f"{k} {v:.2f}" for k, v in off["cpu_s"].items()))
    print("CPU seconds, inferq: " + ", ".join(f"{k} {v:.2f}" for k, v in piped["cpu_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
