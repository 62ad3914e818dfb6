"""Pipeline overhead on a real GPU: the same prompts through inferq (a model served by the Modal
deployment) and through offline vLLM on the same GPU type, in tokens per second.

Needs Modal credentials (`modal token new`) and an inferq API whose model runs on Modal
(`make deploy`):

    python bench/gpu_vllm.py --api https://inferq.example.com --model llama-8b --prompts 2000

The offline run uses vLLM's `LLM.generate` over the whole prompt list (the best batching vLLM can
do); inferq's figure is completion tokens over the job's wall time, from its first accept to its
last result, so it includes queueing, routing, container start if none is warm, and result
collection. Both use greedy decoding and the same max_tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import modal  # noqa: E402

from services.inference.modal_app import HF_CACHE, VLLM_VERSION, vllm_image  # noqa: E402
from shared.catalog.models import load_models  # noqa: E402
from shared.core.states import FINAL_JOB_STATES  # noqa: E402

bench_app = modal.App("inferq-bench-offline-vllm")
# the workers' own image (CUDA devel base, the same vLLM pin), with the same hub settings
bench_image = vllm_image().env({"HF_HOME": HF_CACHE, "HF_XET_HIGH_PERFORMANCE": "1"})


@bench_app.cls(
    image=bench_image,
    gpu="L4",
    timeout=3600,
    volumes={HF_CACHE: modal.Volume.from_name("inferq-hf-cache", create_if_missing=True)},
)
class OfflineVllm:
    @modal.method()
    def run(self, model: str, engine_args: dict, prompts: list[str], max_tokens: int) -> dict:
        from vllm import LLM, SamplingParams

        llm = LLM(model=model, **engine_args)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        started = time.perf_counter()
        outputs = llm.generate(prompts, params)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "completion_tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}


def make_prompts(n: int) -> list[str]:
    topics = [
        "the ocean",
        "a lighthouse",
        "autumn leaves",
        "a quiet library",
        "mountain trains",
        "city rain",
        "a chess match",
        "the first snow",
        "an old radio",
        "desert stars",
        "a bakery at dawn",
        "migrating birds",
    ]
    return [f"Write a detailed paragraph about {topics[i % len(topics)]} (variation {i})." for i in range(n)]


def through_inferq(api: str, model: str, prompts: list[str], max_tokens: int, api_key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {
        "requests": [
            {"custom_id": str(i), "model": model, "prompt": p, "max_tokens": max_tokens, "temperature": 0.0}
            for i, p in enumerate(prompts)
        ]
    }
    with httpx.Client(base_url=api, headers=headers, timeout=120) as client:
        resp = client.post("/v1/jobs", content=json.dumps(body), headers={"Content-Type": "application/json"})
        resp.raise_for_status()
        job = resp.json()
        while job["status"] not in FINAL_JOB_STATES:
            time.sleep(1)
            job = client.get(f"/v1/jobs/{job['id']}").json()
            c = job["request_counts"]
            print(f"\r  inferq: {c['succeeded'] + c['failed']}/{c['total']} done", end="", flush=True)
    print()
    seconds = max(1, job["completed_at"] - job["created_at"])
    return {
        "seconds": seconds,
        "completion_tokens": job["usage"]["completion_tokens"],
        "failed": job["request_counts"]["failed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True, help="the inferq API base URL")
    parser.add_argument("--model", required=True, help="a model of the models file served on Modal")
    parser.add_argument("--models-file", default=os.environ.get("INFERQ_MODELS", "models.toml"))
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--api-key", default=os.environ.get("INFERQ_API_KEY"))
    args = parser.parse_args()

    entry = load_models(args.models_file).models[args.model]
    if entry.engine != "vllm":
        parser.error(f"model {args.model!r} uses engine {entry.engine!r}; this benchmark compares vLLM")
    if entry.modal is None:
        parser.error(f"model {args.model!r} has no modal table; this benchmark runs it on Modal")
    options = entry.engine_options()
    engine_args = {
        k: v
        for k, v in {
            "max_model_len": options.max_model_len,
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "dtype": options.dtype,
        }.items()
        if v is not None
    }
    prompts = make_prompts(args.prompts)

    print(f"offline vLLM {VLLM_VERSION} on {entry.modal.gpu}: {len(prompts)} prompts, max_tokens {args.max_tokens}")
    with bench_app.run():
        offline = OfflineVllm.with_options(gpu=entry.modal.gpu)().run.remote(
            options.model, engine_args, prompts, args.max_tokens
        )
    print(f"inferq → Modal ({entry.modal.gpu}): the same prompts as one job")
    piped = through_inferq(args.api, args.model, prompts, args.max_tokens, args.api_key)

    off_tps = offline["completion_tokens"] / offline["seconds"]
    pipe_tps = piped["completion_tokens"] / piped["seconds"]
    print(f"\n{'':<16}{'tokens':>10}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'offline vLLM':<16}{offline['completion_tokens']:>10}{offline['seconds']:>10.1f}{off_tps:>12.0f}")
    print(f"{'inferq':<16}{piped['completion_tokens']:>10}{piped['seconds']:>10.1f}{pipe_tps:>12.0f}")
    print(
        f"ratio inferq / offline: {pipe_tps / off_tps:.2f}"
        + (f"  ({piped['failed']} requests failed)" if piped["failed"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
