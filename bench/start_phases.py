"""How long a worker takes to start, phase by phase, on this machine: a fresh worker process for a
tiny Llama built on the spot (2 layers, head_dim 64), one request, and the phases the worker then
records (GET /v1/models `start_phases`: imports, weights loaded, engine ready, first token, first result, in
seconds since the process started). Each round is a new stack, so every import is cold-ish (the
OS file cache stays warm, as on a reused host).

    .venv/bin/python bench/start_phases.py --engine transformers
    .venv-vllm/bin/python bench/start_phases.py --engine vllm     (make bench-start)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from inferq.localstack import LocalStack  # noqa: E402
from inferq.tinymodel import build_tiny_llama  # noqa: E402

PHASES = ("imports_s", "weights_loaded_s", "engine_ready_s", "first_token_s", "first_result_s")


def models_file(engine: str, model: Path) -> str:
    options = {
        "transformers": f'model = "{model}"\nlocal_files_only = true',
        "vllm": f'model = "{model}"\nmax_model_len = 256\nenforce_eager = true\ndtype = "bfloat16"',
    }[engine]
    return f'[models.tiny]\nengine = "{engine}"\n[models.tiny.options]\n{options}\n'


def one_round(engine: str, model: Path, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "models.toml"
    path.write_text(models_file(engine, model))
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    with LocalStack(path, workdir=workdir, env=env) as stack, httpx.Client(base_url=stack.base_url, timeout=30) as c:
        job = c.post("/v1/jobs", json={"requests": [{"model": "tiny", "prompt": "hello", "max_tokens": 8}]}).json()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            stack.check_alive()
            [info] = [m for m in c.get("/v1/models").json()["data"] if m["id"] == "tiny"]
            if info.get("start_phases") and c.get(f"/v1/jobs/{job['id']}").json()["status"] == "completed":
                return info["start_phases"]
            time.sleep(0.2)
    raise RuntimeError("the worker never recorded its start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["transformers", "vllm"], required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the rounds as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferq-start-") as tmp:
        model = build_tiny_llama(Path(tmp) / "model")
        rounds = [one_round(args.engine, model, Path(tmp) / f"round{i}") for i in range(args.rounds)]
    for i, r in enumerate(rounds):
        print(f"round {i + 1}: " + ", ".join(f"{p.removesuffix('_s')} {r[p]:.2f} s" for p in PHASES if r.get(p)))
    medians = {p: statistics.median(r[p] for r in rounds) for p in PHASES if all(r.get(p) for r in rounds)}
    print(f"median ({args.engine}): " + ", ".join(f"{p.removesuffix('_s')} {v:.2f} s" for p, v in medians.items()))
    if args.out:
        args.out.write_text(json.dumps({"engine": args.engine, "rounds": rounds, "median": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
