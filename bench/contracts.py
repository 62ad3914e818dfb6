"""What a response_format costs on the real vLLM (CPU build): the same prompts through the whole
pipeline (ingest, dispatcher, a `vllm`-engine worker, Redis) as a job held to a nested JSON schema
and as the same job unconstrained, in turn, round after round on one warm stack; and what the
worker's validation of one result costs (the `jsonschema` validator, in process).

Runs in the vLLM virtualenv (`make bench-contracts`, or `.venv-vllm/bin/python bench/contracts.py`)
on a tiny randomly initialised Llama built on the spot; `--engine transformers` measures the
transformers engine (xgrammar's logits processor) the same way. Constrained outputs end when the JSON
closes; unconstrained ones run to max_tokens (the random model never stops), so both requests per
second and generated tokens per second are reported. The median round (by the tokens/s ratio) is
printed and written to bench/results/<date>-contracts.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferq.localstack import LocalStack  # noqa: E402
from services.inference.result_validation import ResultValidator  # noqa: E402
from shared.wire.contract import Contract, contract_id, encode  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"enum": ["billing", "outage", "question", "praise"]},
        "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,10}$"}, "maxItems": 3},
        "customer": {
            "type": "object",
            "properties": {"tier": {"enum": ["free", "pro"]}, "seats": {"type": "integer", "minimum": 0}},
            "required": ["tier", "seats"],
            "additionalProperties": False,
        },
    },
    "required": ["label", "urgency", "tags", "customer"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}}


def models_file(model: str, max_inflight: int, engine: str) -> str:
    if engine == "transformers":
        options = "max_batch_size = 64\nbatch_wait_ms = 20\nlocal_files_only = true"
    else:
        options = 'max_model_len = 512\nenforce_eager = true\ndtype = "bfloat16"'
    return f"""
[models.tiny]
engine = "{engine}"
max_inflight = {max_inflight}
[models.tiny.options]
model = "{model}"
{options}
"""


def run_job(client: httpx.Client, stack: LocalStack, body: dict) -> dict:
    started = time.perf_counter()
    job = client.post("/v1/jobs", json=body)
    job.raise_for_status()
    job_id = job.json()["id"]
    while (view := client.get(f"/v1/jobs/{job_id}").json())["status"] != "completed":
        stack.check_alive()
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    lines, after = [], None
    while True:
        resp = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000, **({"after": after} if after else {})})
        page = [json.loads(line) for line in resp.content.split(b"\n") if line]
        if not page:
            break
        lines += page
        after = resp.headers["inferq-next-cursor"]
    return {
        "seconds": seconds,
        "requests": len(lines),
        "succeeded": view["request_counts"]["succeeded"],
        "tokens": view["usage"]["completion_tokens"],
        "texts": [line["output"]["text"] for line in lines if line["output"]],
    }


def valid_count(texts: list[str]) -> int:
    """How many of the outputs the worker's validator passes against SCHEMA."""
    contract = Contract(kind="json_schema", schema=SCHEMA)
    cid, validator = contract_id(encode(contract)), ResultValidator()
    return sum(validator.check(cid, contract, text).valid for text in texts)


def validation_cost(texts: list[str], repeat: int = 20) -> float:
    """Microseconds per result of the worker's check (decode + jsonschema), its validator warm."""
    contract = Contract(kind="json_schema", schema=SCHEMA)
    cid = contract_id(encode(contract))
    validator = ResultValidator()
    validator.check(cid, contract, texts[0])
    started = time.perf_counter()
    for _ in range(repeat):
        for text in texts:
            validator.check(cid, contract, text)
    return (time.perf_counter() - started) / (repeat * len(texts)) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-inflight", type=int, default=256)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    args = parser.parse_args()
    from inferq.tinymodel import build_tiny_llama

    workdir = Path(tempfile.mkdtemp(prefix="inferq-contracts-bench-"))
    rounds = []
    try:
        model = str(build_tiny_llama(workdir / "model", context=512))
        (workdir / "models.toml").write_text(models_file(model, args.max_inflight, args.engine))
        requests = [
            {"model": "tiny", "prompt": f"ticket {i}: the invoice is wrong", "max_tokens": args.max_tokens}
            for i in range(args.prompts)
        ]
        print(
            f"{args.prompts} prompts, max_tokens {args.max_tokens}, sampled; tiny random Llama on the {args.engine}"
            " engine (CPU),"
            f" {os.cpu_count()} cores; {args.rounds} rounds, each: the job held to a nested schema, then unconstrained"
        )
        with (
            LocalStack(workdir / "models.toml", workdir=workdir / "stack") as stack,
            httpx.Client(base_url=stack.base_url, timeout=120) as client,
        ):
            run_job(client, stack, {"requests": requests[:16], "response_format": FORMAT})  # load, compile, warm
            for i in range(args.rounds):
                held = run_job(client, stack, {"requests": requests, "response_format": FORMAT})
                free = run_job(client, stack, {"requests": requests})
                ratio = (held["tokens"] / held["seconds"]) / (free["tokens"] / free["seconds"])
                rounds.append((ratio, held, free))
                print(
                    f"  round {i + 1}: held {held['seconds']:.2f} s, free {free['seconds']:.2f} s,"
                    f" tokens/s ratio {ratio:.2f}"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio, held, free = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    cost_us = validation_cost(held["texts"])
    report = {}
    print(f"\nmedian round{'':<12}{'valid':>8}{'req/s':>10}{'tokens':>10}{'tokens/s':>10}{'tok/req':>9}")
    print(f"{'':<24}{'(of ' + str(held['requests']) + ')':>8}")
    for name, run in (("schema (xgrammar)", held), ("unconstrained", free)):
        figures = {
            "requests": run["requests"],
            "succeeded": run["succeeded"],
            "valid": valid_count(run["texts"]),
            "seconds": round(run["seconds"], 3),
            "requests_per_s": round(run["requests"] / run["seconds"], 1),
            "tokens": run["tokens"],
            "tokens_per_s": round(run["tokens"] / run["seconds"], 1),
        }
        report[name] = figures
        print(
            f"{name:<24}{figures['valid']:>8}{figures['requests_per_s']:>10.1f}{run['tokens']:>10}"
            f"{figures['tokens_per_s']:>10.0f}{run['tokens'] / run['requests']:>9.1f}"
        )
    print(
        f"tokens/s, schema / unconstrained: {ratio:.2f} (rounds: {', '.join(f'{r[0]:.2f}' for r in rounds)};"
        f" mean {statistics.mean(r[0] for r in rounds):.2f})"
    )
    print(f"worker validation: {cost_us:.1f} µs per result (JSON decode + jsonschema, validator warm)")
    report.update(ratio=round(ratio, 3), validation_us_per_result=round(cost_us, 2), args=vars(args))
    suffix = "" if args.engine == "vllm" else f"-{args.engine}"
    out = ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}-contracts{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
